"""The yardstick: a plain PyTorch training loop of the TDE CIFAR-100-LT model, as a research repo writes it.

torchvision's ``CIFAR100`` dataset on CIFAR-format files, the LDAM long-tailed subset, PIL
transforms (RandomCrop(32, 4), RandomHorizontalFlip, ToTensor, Normalize) in DataLoader workers,
pinned memory, ``F.cross_entropy`` on the model's logits, SGD, eager mode, fp32 or bf16 autocast.
The model is the config's own (``ltbench.cli.build``: BBN ResNet-32, causal-norm head, the head
direction accumulated in training), so only the pipeline around it differs from ``ltbench fit``.

Without ``--root`` it writes synthetic CIFAR-format pickles (``ltbench.data.synthetic``, random
pixels in the real layout and counts) to a temporary folder: nothing is downloaded. The images are
noise; the numbers are about speed only.

    python benchmarks/reference_pipeline.py --steps 300 --precision bf16 --workers 12
    python benchmarks/reference_pipeline.py --device cpu --steps 4 --warmup 1 --batch-size 32 --workers 0
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

CONFIG = "configs/tde_cifar100_lt_r100.yaml"
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


class SyntheticCIFAR100(datasets.CIFAR100):
    """torchvision's CIFAR100 reading files whose MD5s are not the published ones (synthetic data)."""

    def _check_integrity(self) -> bool:
        return True

    def _load_meta(self) -> None:
        import pickle

        with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
            self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


def synthetic_root(root: str) -> str:
    """Write synthetic CIFAR-100 pickles under ``root`` and let ltbench's checksum table accept them."""
    from ltbench.data import cifar
    from ltbench.data.synthetic import write_fake_cifar

    cifar.MD5S.update(write_fake_cifar(root, datasets=("cifar100",)))
    return root


def longtail_subset(targets: np.ndarray, imb_ratio: float = 100.0, seed: int = 0) -> np.ndarray:
    """LDAM-DRW's long-tailed subset (exponential profile), as every CIFAR-LT repo builds it."""
    from ltbench.data.longtail import imbalance_profile, ldam_subsample

    num_classes = int(targets.max()) + 1
    counts = imbalance_profile("exp", len(targets) // num_classes, num_classes, imb_ratio)
    return ldam_subsample(targets, counts, seed)


def make_loader(root: str, batch_size: int, workers: int, imb_ratio: float, pin: bool) -> DataLoader:
    tf = transforms.Compose(
        [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor(), transforms.Normalize(MEAN, STD)]
    )
    ds = SyntheticCIFAR100(root, train=True, transform=tf, download=False)
    subset = Subset(ds, longtail_subset(np.asarray(ds.targets), imb_ratio).tolist())
    return DataLoader(subset, batch_size=batch_size, shuffle=True, num_workers=workers, pin_memory=pin, drop_last=True,
                      persistent_workers=workers > 0)


def build_model(config: str, root: str) -> torch.nn.Module:
    """The config's network (backbone + head + head-direction buffer) as a plain ``nn.Module``."""
    from ltbench.runner import build

    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    model, _ = build(["--config", config, "--data.init_args.root", root, "--trainer.logger", "false"])
    return model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(
    root: str,
    config: str = CONFIG,
    steps: int = 300,
    warmup: int = 20,
    batch_size: int = 256,
    workers: int = 12,
    precision: str = "fp32",
    device: str = "cuda" if torch.cuda.is_available() else "cpu",
    imb_ratio: float = 100.0,
    lr: float = 0.2,
) -> dict[str, Any]:
    """``warmup`` untimed then ``steps`` timed optimiser steps; data wait is the host time spent in ``next(loader)``."""
    dev = torch.device(device)
    loader = make_loader(root, batch_size, workers, imb_ratio, pin=dev.type == "cuda")
    model = build_model(config, root).to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    dtype = PRECISIONS[precision]
    autocast = (lambda: torch.autocast(dev.type, dtype=dtype)) if dtype is not None else contextlib.nullcontext
    it = iter(loader)

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal it
        try:
            return next(it)
        except StopIteration:
            it = iter(loader)
            return next(it)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        with autocast():
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step(*next_batch())
    _sync(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    wait = 0.0
    start = time.perf_counter()
    for _ in range(steps):
        t0 = time.perf_counter()
        batch = next_batch()
        wait += time.perf_counter() - t0
        step(*batch)
    _sync(dev)
    total = time.perf_counter() - start
    return {
        "pipeline": f"reference (torchvision CIFAR100, PIL, {workers} workers, {precision})",
        "precision": precision,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "batch_size": batch_size,
        "steps": steps,
        "images_per_s": steps * batch_size / total,
        "ms_per_step": 1e3 * total / steps,
        "data_wait_ms_per_step": 1e3 * wait / steps,
        "compute_ms_per_step": 1e3 * (total - wait) / steps,
        "peak_mem_mib": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
        "workers": workers,
        "train_images": len(loader.dataset),
    }


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=None, help="folder holding cifar-100-python/ (default: synthetic, in a temp dir)")
    p.add_argument("--config", default=CONFIG)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=min(12, os.cpu_count() or 1))
    p.add_argument("--precision", choices=list(PRECISIONS), default="fp32")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    with contextlib.ExitStack() as stack:
        root = args.root
        if root is None:
            root = synthetic_root(stack.enter_context(tempfile.TemporaryDirectory()))
        row = run(root, args.config, args.steps, args.warmup, args.batch_size, args.workers, args.precision, args.device)
    print(json.dumps(row, indent=2))
    if args.json:
        args.json.write_text(json.dumps(row, indent=2) + "\n")
    return row


if __name__ == "__main__":
    main()
