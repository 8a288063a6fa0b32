"""No host-device sync inside a training step (forward, TDE direction update, loss, logging,
backward, optimiser step) nor in drawing a device-cached batch.

On CPU every tensor-to-host read (``item``, ``bool``, ``int``, ``float``, ``tolist``, ``cpu``,
``numpy``) is made to raise while a step runs; on CUDA the same fit runs under
``torch.cuda.set_sync_debug_mode("error")``.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch

from ltbench.data.device_loader import DeviceBatches
from ltbench.data.digits import DigitsLT
from ltbench.data.samplers import LTSampler
from ltbench.methods import TDE, CrossEntropy
from ltbench.sync_check import HostSyncError, NoSyncInSteps, host_reads_raise


def _fit(method_cls, accelerator="cpu", device_cache=None):
    L.seed_everything(0)
    dm = DigitsLT(batch_size=32, device_cache=device_cache)
    model = method_cls(backbone="tiny_cnn", num_classes=10, in_chans=1, train_class_counts=dm.train_class_counts,
                       backbone_kwargs={"width": 4})
    cb = NoSyncInSteps()
    trainer = L.Trainer(accelerator=accelerator, devices=1, max_epochs=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, log_every_n_steps=1000, callbacks=[cb])
    trainer.fit(model, dm)
    return cb.steps, trainer


@pytest.mark.parametrize("method_cls", [TDE, CrossEntropy], ids=["TDE", "CE"])
def test_training_steps_read_nothing_back_to_the_host(method_cls):
    steps, trainer = _fit(method_cls, device_cache=True)
    assert steps == trainer.global_step > 0


def test_the_guard_catches_a_sync():
    class Syncing(CrossEntropy):
        def training_loss(self, logits, target):
            loss = super().training_loss(logits, target)
            if loss > 100:  # bool(tensor): a host read
                raise RuntimeError
            return loss

    with pytest.raises(HostSyncError, match="host sync: Tensor.__bool__"):
        _fit(Syncing)


def test_drawing_device_cached_batches_reads_nothing_back():
    dm = DigitsLT(batch_size=16)
    images, targets = dm.device_split("train")
    sampler = LTSampler(dm.train_targets, 10, schedule=[(0, "class_balanced")])
    batches = DeviceBatches(images, targets, 16, torch.device("cpu"), sampler=sampler,
                            augment=lambda x, g: torch.flip(x, dims=[-1]) * torch.rand(1, generator=g))
    it = iter(batches)
    next(it)  # the epoch's index tensor crosses once, at the first batch
    with host_reads_raise():
        n = sum(1 for _ in it)
    assert n == len(batches) - 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: torch.cuda.set_sync_debug_mode checks device syncs")
def test_cuda_training_steps_do_not_synchronise():
    steps, trainer = _fit(TDE, accelerator="gpu")
    assert steps == trainer.global_step > 0
