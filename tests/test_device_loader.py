"""Device-resident data: the batched crop/flip against torchvision, its statistics, the same epoch
draw as the DataLoader path, DDP strides, and a deterministic fit through it (all on CPU)."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from ltbench.data.device_loader import DeviceBatches, crop_flip, random_crop_flip
from ltbench.data.digits import DigitsLT
from ltbench.data.lists import ImageListLT
from ltbench.data.samplers import LTSampler
from ltbench.errors import LTBenchError
from ltbench.methods import TDE


def test_crop_flip_matches_torchvision_per_sample():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=g)
    oy, ox = torch.randint(0, 9, (16,), generator=g), torch.randint(0, 9, (16,), generator=g)
    flip = torch.rand(16, generator=g) < 0.5
    out = crop_flip(x, oy, ox, flip, padding=4)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    for b in range(16):
        ref = TF.crop(TF.pad(x[b], [4]), int(oy[b]), int(ox[b]), 32, 32)
        if flip[b]:
            ref = TF.horizontal_flip(ref)
        assert torch.equal(out[b], ref), b


def test_random_crop_flip_statistics():
    """Offsets cover 0..2p uniformly, flips happen with p = 0.5: read back from a coordinate image."""
    n, s, p = 6000, 32, 4
    rows = torch.arange(1, s + 1, dtype=torch.float32).view(1, 1, s, 1).expand(n, 1, s, s)
    cols = torch.arange(1, s + 1, dtype=torch.float32).view(1, 1, 1, s).expand(n, 1, s, s)
    out = random_crop_flip(torch.cat([rows, cols], 1).contiguous(), torch.Generator().manual_seed(1), padding=p)
    oy = out[:, 0, 16, 16] - 1 - 16 + p
    flipped = out[:, 1, 16, 17] < out[:, 1, 16, 16]
    ox = torch.where(flipped, out[:, 1, 16, 16] - 1 - (s - 1 - 16) + p, out[:, 1, 16, 16] - 1 - 16 + p)
    for off in (oy, ox):
        counts = torch.bincount(off.long(), minlength=2 * p + 1)
        assert len(counts) == 2 * p + 1 and off.min() >= 0 and off.max() <= 2 * p
        assert torch.allclose(counts.float() / n, torch.full((2 * p + 1,), 1 / (2 * p + 1)), atol=0.02)
    assert abs(flipped.float().mean().item() - 0.5) < 0.03
    # zero padding shows where the offset reaches past the border
    top = out[oy == 0][:, 0]
    assert (top[:, :p] == 0).all() and (top[:, p, p : s - p] == 1).all()


def _sampler(targets, epoch, rank=0, world=1, mode="instance"):
    s = LTSampler(targets, int(targets.max()) + 1, schedule=[(0, mode)], num_replicas=world, rank=rank, seed=3)
    s.set_epoch(epoch)
    return s


@pytest.mark.parametrize("mode", ["instance", "class_balanced"])
def test_one_epoch_has_the_loader_paths_indices_and_labels(cifar_dm, mode):
    dm = cifar_dm(batch_size=32)
    images, targets = dm.device_split("train")
    ds = dm.dataset("train")
    loader_order = list(iter(_sampler(dm.train_targets, 2, mode=mode)))
    batches = DeviceBatches(images, targets, 32, torch.device("cpu"), sampler=_sampler(dm.train_targets, 2, mode=mode),
                            augment=dm.device_augment)
    got_idx, got_y = [], []
    for x, y, idx in batches:
        assert x.dtype == torch.uint8 and x.shape[1:] == (3, 32, 32)
        got_idx.append(idx)
        got_y.append(y)
    assert len(got_idx) == len(batches) == -(-len(loader_order) // 32)
    assert torch.cat(got_idx).tolist() == loader_order
    assert sorted(torch.cat(got_y).tolist()) == sorted(int(ds.targets[i]) for i in loader_order)
    assert torch.equal(torch.cat(got_y), torch.as_tensor(ds.targets)[torch.cat(got_idx)])


def test_ddp_ranks_take_their_stride_and_eval_pads_like_distributed_sampler():
    targets = np.repeat(np.arange(4), [20, 7, 3, 1])
    images = torch.arange(len(targets), dtype=torch.float32).view(-1, 1, 1, 1)
    per_rank = []
    for rank in range(3):
        b = DeviceBatches(images, torch.from_numpy(targets), 4, torch.device("cpu"), sampler=_sampler(targets, 0, rank, 3), drop_last=True)
        per_rank.append(torch.cat([idx for _, _, idx in b]).tolist())
        assert len(b) == len(_sampler(targets, 0, rank, 3)) // 4
    full = list(iter(_sampler(targets, 0)))
    assert per_rank[1] == full[1::3][: len(per_rank[1])]
    evals = [torch.cat([idx for _, _, idx in DeviceBatches(images, torch.from_numpy(targets), 5, torch.device("cpu"), rank=r, num_replicas=3)])
             for r in range(3)]
    assert sorted(set(torch.cat(evals).tolist())) == list(range(len(targets)))
    assert sum(len(e) for e in evals) == 33  # 31 padded to a multiple of 3


def test_unsupported_module_refuses_device_cache(tmp_path):
    dm = ImageListLT(root=str(tmp_path), device_cache=True)
    dm.trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
    with pytest.raises(LTBenchError, match="device_cache"):
        dm.uses_device_cache()
    dm.device_cache = None
    assert dm.uses_device_cache() is False  # auto: only on CUDA, only where supported


def _fit_digits(device_cache, seed=0):
    L.seed_everything(seed, workers=True)
    dm = DigitsLT(batch_size=32, device_cache=device_cache)
    model = TDE(backbone="tiny_cnn", num_classes=10, in_chans=1, train_class_counts=dm.train_class_counts,
                backbone_kwargs={"width": 8})
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, deterministic=True, num_sanity_val_steps=0)
    trainer.fit(model, dm)
    return trainer, model


def test_fit_through_the_device_cache_runs_and_is_deterministic():
    t1, m1 = _fit_digits(True)
    assert isinstance(t1.train_dataloader, DeviceBatches)
    t2, m2 = _fit_digits(True)
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    assert t1.global_step == 2 * len(t1.train_dataloader)
    assert isinstance(t1.val_dataloaders, DeviceBatches)
    assert 0.0 <= float(t1.callback_metrics["val/acc"]) <= 1.0
    _, m3 = _fit_digits(True, seed=1)
    assert not torch.equal(next(m1.parameters()), next(m3.parameters()))


def test_cifar_fit_through_the_device_cache(cifar_dm):
    L.seed_everything(0)
    dm = cifar_dm(batch_size=64, device_cache=True, drop_last=True)
    model = TDE(backbone="tiny_cnn", backbone_kwargs={"width": 4}, num_classes=100, train_class_counts=dm.train_class_counts)
    trainer = L.Trainer(accelerator="cpu", max_steps=3, max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=2, num_sanity_val_steps=0)
    trainer.fit(model, dm)
    assert trainer.global_step == 3
    assert model.embed_mean.abs().sum() > 0


@pytest.mark.slow
def test_two_process_ddp_through_the_device_cache_reports_what_the_loader_path_reports(tmp_path):
    """2 gloo processes, each drawing its stride on its own copy of the split; evaluation pads like
    DistributedSampler and the metric drops the duplicates, so the record equals a 1-process test of
    the same checkpoint through the ordinary DataLoader."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from ltbench.runner import run
    from tests.helpers import CE_DIGITS, REPO

    common = ["--config", CE_DIGITS, "--trainer.max_epochs", "2", "--run_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
              "--data.init_args.eval_batch_size", "37"]
    proc = subprocess.run(
        [sys.executable, "-m", "ltbench.cli", "fit", *common, "--config", str(REPO / "configs" / "strategy" / "ddp_cpu.yaml"),
         "--data.init_args.device_cache", "true", "--version", "two"],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    two_dir = tmp_path / "CrossEntropy-DigitsLT" / "two"
    two = json.loads((two_dir / "record.json").read_text())
    assert two["throughput"]["devices"] == 2
    one_cli = run(["test", *common, "--ckpt_path", str(two_dir / "checkpoints" / "last.ckpt"), "--version", "one",
                   "--data.init_args.device_cache", "false"])
    one = json.loads(Path(one_cli.model.record_path).read_text())
    assert two["num_test_samples"] == one["num_test_samples"] == 500
    assert two["metrics"] == pytest.approx(one["metrics"], abs=1e-7)


def test_device_batches_state_the_split_size_for_partial_test_records():
    """The record's partial-test check reads the split size; a device-held split states it like len(dataset)."""
    from ltbench.data.device_loader import DeviceBatches

    batches = DeviceBatches(torch.zeros(10, 1, 8, 8, dtype=torch.uint8), torch.arange(10), batch_size=4, device="cpu")
    assert batches.num_items == 10 and len(batches) == 3
