"""No host-device sync inside a training step (forward, TDE direction update, loss, logging,
backward, optimiser step) nor in drawing a device-cached batch.

On CPU every tensor-to-host read (``item``, ``bool``, ``int``, ``float``, ``tolist``, ``cpu``,
``numpy``) is made to raise while a step runs; on CUDA the same fit runs under
``torch.cuda.set_sync_debug_mode("error")``.
"""

from __future__ import annotations

import contextlib

import lightning as L
import pytest
import torch

from ltbench.data.device_loader import DeviceBatches
from ltbench.data.digits import DigitsLT
from ltbench.data.samplers import LTSampler
from ltbench.methods import TDE, CrossEntropy

READS = ("item", "__bool__", "__int__", "__float__", "__index__", "tolist", "cpu", "numpy")


@contextlib.contextmanager
def host_reads_raise():
    saved = {name: getattr(torch.Tensor, name) for name in READS}

    def make(name):
        def refuse(self, *args, **kwargs):
            raise AssertionError(f"host sync: Tensor.{name} called inside a training step")

        return refuse

    try:
        for name in READS:
            setattr(torch.Tensor, name, make(name))
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)


class GuardSteps(L.Callback):
    """Everything between batch start and batch end (the module's own batch-end hook runs after this
    callback's: its non-finite check reads the flag at logging steps only, outside the window)."""

    def __init__(self, guard) -> None:
        self.guard, self.ctx, self.steps = guard, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.ctx = self.guard()
        self.ctx.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.ctx.__exit__(None, None, None)
        self.ctx = None
        self.steps += 1

    def on_exception(self, trainer, pl_module, exception) -> None:
        if self.ctx is not None:
            self.ctx.__exit__(None, None, None)


def _fit(method_cls, guard, accelerator="cpu", device_cache=None):
    L.seed_everything(0)
    dm = DigitsLT(batch_size=32, device_cache=device_cache)
    model = method_cls(backbone="tiny_cnn", num_classes=10, in_chans=1, train_class_counts=dm.train_class_counts,
                       backbone_kwargs={"width": 4})
    cb = GuardSteps(guard)
    trainer = L.Trainer(accelerator=accelerator, devices=1, max_epochs=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, log_every_n_steps=1000, callbacks=[cb])
    trainer.fit(model, dm)
    return cb.steps, trainer


@pytest.mark.parametrize("method_cls", [TDE, CrossEntropy], ids=["TDE", "CE"])
def test_training_steps_read_nothing_back_to_the_host(method_cls):
    steps, trainer = _fit(method_cls, host_reads_raise, device_cache=True)
    assert steps == trainer.global_step > 0


def test_the_guard_catches_a_sync():
    class Syncing(CrossEntropy):
        def training_loss(self, logits, target):
            loss = super().training_loss(logits, target)
            if loss > 100:  # bool(tensor): a host read
                raise RuntimeError
            return loss

    with pytest.raises(AssertionError, match="host sync: Tensor.__bool__"):
        _fit(Syncing, host_reads_raise)


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
    @contextlib.contextmanager
    def cuda_sync_is_error():
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode("default")

    steps, trainer = _fit(TDE, cuda_sync_is_error, accelerator="gpu")
    assert steps == trainer.global_step > 0
