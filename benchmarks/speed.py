"""Train-step speed of ltbench configs on synthetic batches: the model, not the disk.

For each ``--config`` the model is built as ``ltbench fit`` would build it (``ltbench.runner.build``,
data facts linked), one random batch of the config's input shape is made once and kept on the
device, and ``--warmup`` + ``--steps`` train steps are run on it: on-device normalisation
(``dm.on_after_batch_transfer``), forward, loss, backward and optimiser step. Each step is timed
on its own (the device is synchronised before the clock is read); the table reports the median.

Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA; on CPU it is the growth of the
process's peak RSS (``resource.getrusage``) over batch creation and the steps, model weights
excluded. RSS is a process high-water mark, so with several configs in one call a later row can
read low; run configs separately when comparing CPU memory.

Without the dataset files (CIFAR, ImageNet-LT...) the facts cannot be read: ``--synthetic-facts``
(or ``--num-classes`` when building fails with ``DataError``) builds the model from the parsed
config with made-up facts instead: ``--num-classes`` classes with an exponential long-tailed
profile, ``--in-chans`` and ``--image-size`` (defaults from the data module class). Such rows say
``synthetic`` in the ``facts`` column.

    python benchmarks/speed.py --config configs/ce_digits_lt.yaml --batch-size 64 --device cpu
    python benchmarks/speed.py --config configs/ce_digits_lt.yaml --synthetic-facts \\
        --num-classes 100 --in-chans 3 --image-size 32 --model.init_args.backbone resnet32_bbn

Arguments it does not know (``--model.init_args.backbone X``), ``--set key=value`` and everything
after ``--override`` are passed to the config parser, for every config.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import resource
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import torch

PRECISIONS = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}
COLUMNS = [
    ("config", "config"),
    ("method", "method"),
    ("backbone", "backbone"),
    ("facts", "facts"),
    ("input", "input"),
    ("num_classes", "classes"),
    ("params_m", "params (M)"),
    ("device", "device"),
    ("precision", "precision"),
    ("batch_size", "batch"),
    ("ms_per_step", "ms/step (median)"),
    ("images_per_s", "images/s"),
    ("peak_mem_mib", "peak mem (MiB)"),
    ("mem_kind", "memory measured as"),
    ("threads", "threads"),
    ("torch", "torch"),
]


def parse_args(argv: Optional[list[str]]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(
        description="Median train-step time and throughput of ltbench configs on synthetic batches.",
        epilog="Unknown arguments (e.g. --model.init_args.backbone resnet32_bbn) go to the config parser.",
    )
    p.add_argument("--config", action="append", required=True, help="config file; repeat for one row each")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=30, help="timed train steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed train steps first")
    p.add_argument("--precision", choices=list(PRECISIONS), default="32", help="bf16/16: torch.autocast")
    p.add_argument("--image-size", type=int, default=None, help="input side S (default: the data module's)")
    p.add_argument("--in-chans", type=int, default=None, help="input channels (synthetic facts only)")
    p.add_argument("--num-classes", type=int, default=None, help="classes (synthetic facts; also allows the DataError fallback)")
    p.add_argument("--synthetic-facts", action="store_true", help="do not read the dataset: build the model with made-up facts")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, e.g. model.init_args.backbone=resnet32_bbn")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the rows as JSON")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own, unchanged)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic batch")
    p.add_argument("--override", nargs=argparse.REMAINDER, default=[], help="everything after it goes to the config parser")
    args, extra = p.parse_known_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        p.error("--steps and --batch-size must be >= 1 and --warmup >= 0")
    if args.synthetic_facts and args.num_classes is None:
        p.error("--synthetic-facts needs --num-classes")
    overrides = [f"--{kv.lstrip('-')}" for kv in args.set] + extra + list(args.override)
    return args, overrides


# ---- building -------------------------------------------------------------------------------------
def _import(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _parse_only(cli_args: list[str]) -> Any:
    """The config as ``ltbench`` parses it (overrides applied), nothing instantiated."""
    from ltbench.runner import CLI_KWARGS, LTBenchCLI

    class _ParseOnly(LTBenchCLI):
        def instantiate_classes(self) -> None:
            pass

    with warnings.catch_warnings():  # the script passes its own arguments, not sys.argv (as build() does)
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        cli = _ParseOnly(**CLI_KWARGS, args=cli_args, run=False)
    return cli.config


def build_synthetic(cli_args: list[str], num_classes: int, in_chans: Optional[int], image_size: Optional[int]):
    """Model and a data module (for normalisation only) with made-up facts; no dataset file is read."""
    from ltbench.data.base import LTDataModule
    from ltbench.data.longtail import exp_profile

    cfg = _parse_only(cli_args)
    data_cls = _import(cfg.data.class_path)
    try:  # data modules read their files lazily, so construction normally works without them
        dm = data_cls(**cfg.data.init_args.clone(with_meta=False).as_dict())
    except Exception:
        dm = LTDataModule()
    dm.in_chans = in_chans or data_cls.in_chans
    dm.image_size = image_size or data_cls.image_size
    c = dm.in_chans
    if len(dm.mean) < c or len(dm.std) < c:  # e.g. a 1-channel data module benchmarked at 3 channels
        dm.mean, dm.std = (float(dm.mean[0]),) * c, (float(dm.std[0]),) * c
    counts = exp_profile(500, num_classes, 100)
    facts = {
        "task": data_cls.task,
        "num_classes": num_classes,
        "class_names": [f"class{i}" for i in range(num_classes)],
        "train_class_counts": counts,
        "class_groups": {k: [bool(b) for b in v] for k, v in dm.shot_rule.groups(counts).items()},
        "in_chans": c,
    }
    init = cfg.model.init_args.clone(with_meta=False).as_dict() | facts
    model = _import(cfg.model.class_path)(**init)
    deterministic = (cfg.get("trainer") or {}).get("deterministic")
    if deterministic:  # what the Trainer that build() makes would switch on
        torch.use_deterministic_algorithms(True, warn_only=deterministic == "warn")
    return model, dm


def build_model(config: str, args: argparse.Namespace, overrides: list[str]):
    from ltbench.runner import build
    from ltbench.errors import DataError

    cli_args = ["--config", config, *overrides]
    if not args.synthetic_facts:
        try:
            model, dm = build(cli_args)
            if args.image_size:
                dm.image_size = args.image_size
            return model, dm, "data"
        except DataError as e:
            if args.num_classes is None:
                raise DataError(f"{e} (to benchmark without the files, pass --synthetic-facts --num-classes C)") from None
            print(f"speed: {config}: {e}; using synthetic facts", file=sys.stderr)
    model, dm = build_synthetic(cli_args, args.num_classes, args.in_chans, args.image_size)
    return model, dm, "synthetic"


# ---- measuring ------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_rss_mib() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (1024 * 1024) if platform.system() == "Darwin" else rss / 1024


def bench_one(config: str, args: argparse.Namespace, overrides: list[str]) -> dict[str, Any]:
    """One row; the config's Trainer may switch deterministic algorithms on, so the flag is restored after."""
    deterministic = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        return _bench_one(config, args, overrides)
    finally:
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])


def _bench_one(config: str, args: argparse.Namespace, overrides: list[str]) -> dict[str, Any]:
    device = torch.device(args.device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    model, dm, facts = build_model(config, args, overrides)
    num_classes, task = int(model.num_classes), model.task
    s, c, b = int(dm.image_size), int(dm.in_chans), args.batch_size

    rss0 = _peak_rss_mib()
    model.to(device).train()
    from ltbench.methods.optim import build_optimizer

    optimizer = build_optimizer(model.named_parameters(), model.optimizer_cfg)
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randint(0, 256, (b, c, s, s), dtype=torch.uint8, generator=g).to(device)
    if task == "multiclass":
        y = torch.randint(0, num_classes, (b,), generator=g).to(device)
    else:
        y = torch.randint(0, 2, (b, num_classes), generator=g).float().to(device)
    idx = torch.arange(b, device=device)

    dtype = PRECISIONS[args.precision]
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype is not None else contextlib.nullcontext
    scaler = torch.amp.GradScaler(device.type) if dtype is torch.float16 else None
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        xb, yb, _ = dm.on_after_batch_transfer((x, y, idx), 0)
        with autocast():
            loss = model.training_loss(model(xb), yb)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)

    if device.type == "cuda":
        peak, mem_kind = torch.cuda.max_memory_allocated(device) / 2**20, "cuda max_memory_allocated"
    else:
        peak, mem_kind = _peak_rss_mib() - rss0, "cpu peak-RSS growth (getrusage)"
    med = statistics.median(times)
    return {
        "config": config,
        "method": type(model).__name__,
        "backbone": model.hparams.backbone,
        "facts": facts,
        "task": task,
        "input": f"{c}x{s}x{s}",
        "num_classes": num_classes,
        "params": sum(p.numel() for p in model.parameters()),
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "device": str(device) if device.type == "cpu" else f"{device} ({torch.cuda.get_device_name(device)})",
        "precision": args.precision,
        "batch_size": b,
        "steps": args.steps,
        "warmup": args.warmup,
        "ms_per_step": round(med * 1e3, 2),
        "ms_per_step_min": round(min(times) * 1e3, 2),
        "ms_per_step_max": round(max(times) * 1e3, 2),
        "images_per_s": round(b / med, 1),
        "peak_mem_mib": round(peak, 1),
        "mem_kind": mem_kind,
        "threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "torch": torch.__version__,
        "loadavg_1m": load,
        "overrides": overrides,
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(str(r[k]) for k, _ in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> list[dict[str, Any]]:
    args, overrides = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rows = [bench_one(config, args, overrides) for config in args.config]
    print(markdown(rows))
    notes = [f"overrides: {' '.join(overrides)}"] if overrides else []
    if any(r["loadavg_1m"] is not None for r in rows):
        notes.append("1-min load average at start: " + ", ".join(f"{r['loadavg_1m']:.2f}" for r in rows))
    if notes:
        print("\n" + "\n".join(notes))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    from ltbench.errors import exit_on_user_error

    exit_on_user_error(main, "speed")
