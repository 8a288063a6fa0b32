"""Full-pipeline throughput of a CIFAR-LT config on synthetic CIFAR-format data.

Writes CIFAR-10/100 pickles of random pixels in torchvision's layout (the real label counts, so
the LDAM subset and every loader line run), points the loader's checksum table at them, and runs
the config's own ``fit`` (data loading, device augmentation, training step) for ``--steps``
optimiser steps. Prints the run's measured train images/s and the peak GPU memory. The numbers
are about speed only: the images are noise.

    python benchmarks/synthetic_cifar.py --config configs/tde_cifar100_lt_r100.yaml --steps 300 --precision bf16-mixed
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from typing import Optional

import torch

from ltbench.runner import run
from ltbench.data import cifar
from ltbench.data.synthetic import write_fake_cifar


def main(argv: Optional[list[str]] = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--precision", default="bf16-mixed")
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the result row here")
    args, extra = p.parse_known_args(argv)
    with tempfile.TemporaryDirectory() as root:
        cifar.MD5S.update(write_fake_cifar(root))
        overrides = ["--data.init_args.root", root, "--trainer.max_steps", str(args.steps), "--trainer.precision", args.precision,
                     "--trainer.accelerator", args.accelerator, "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
                     "--trainer.enable_progress_bar", "false", "--test_after_fit", "false", "--run_dir", f"{root}/runs"]
        if args.batch_size:
            overrides += ["--data.init_args.batch_size", str(args.batch_size)]
        if args.num_workers is not None:
            overrides += ["--data.init_args.num_workers", str(args.num_workers)]
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        cli = run(["fit", "--config", args.config, *overrides, *extra])
        wall = time.perf_counter() - start
    model, trainer = cli.model, cli.trainer
    row = {
        "config": args.config,
        "steps": trainer.global_step,
        "batch_size": cli.datamodule.batch_size,
        "precision": args.precision,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "train_images_per_s": model.throughput.get("train_images_per_s"),
        "epochs_timed": model.throughput.get("epochs_timed"),
        "peak_gpu_mem_MiB": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
        "wall_s": wall,
    }
    print("| " + " | ".join(row) + " |\n|" + "---|" * len(row) + "\n| " + " | ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(row, f, indent=2)
    return row


if __name__ == "__main__":
    main()
