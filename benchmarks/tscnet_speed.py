"""TSCNet train-step speed per stage, with and without each intervention, on synthetic batches.

``benchmarks/speed.py`` times ``model(x)`` + the loss with every parameter trainable; a TSCNet step is
something else: the stage's frozen set (only the last blocks, the token maps, CCIM and the head
train), and in stage 2 a Fourier view of every image and a forward of 2B images. This script builds
the config once per variant (``speed.build_model``), fills the dictionary with random rows (its
build is a one-off before training, not part of a step), applies each stage's trainable set and
times ``TSCNet.stage_loss`` + backward + optimiser step on one fixed batch (median over ``--steps``).
images/s counts the B real images of a step.

    python benchmarks/tscnet_speed.py --config configs/tscnet_cifar100_lt_r100.yaml --synthetic-facts \\
        --num-classes 100 --image-size 224 --batch-size 64 --precision bf16 --device cuda --set model.init_args.pretrained=false
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import torch

VARIANTS = {
    "both interventions": [],
    "no patch-level tokens": ["--model.init_args.patch_intervention", "false"],
    "no CCIM": ["--model.init_args.feature_intervention", "false"],
    "neither": ["--model.init_args.patch_intervention", "false", "--model.init_args.feature_intervention", "false"],
}


def _speed_module() -> Any:
    spec = importlib.util.spec_from_file_location("ltbench_speed_benchmark", Path(__file__).with_name("speed.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench(config: str, args: Any, overrides: list[str], speed: Any) -> list[dict[str, Any]]:
    from ltbench.methods import TSCNet
    from ltbench.methods.optim import build_optimizer

    device = torch.device(args.device)
    rows = []
    for variant, switch in VARIANTS.items():
        model, dm, facts = speed.build_model(config, args, [*overrides, *switch])
        if not isinstance(model, TSCNet):
            raise SystemExit(f"tscnet_speed: {config} is not a TSCNet config")
        model._trainer = SimpleNamespace(datamodule=dm)  # what the Fourier view reads: the data module's mean/std
        model.to(device)
        g = torch.Generator().manual_seed(args.seed)
        model.dict_z.copy_(torch.randn(model.dict_z.shape, generator=g))
        model.dict_prior.fill_(1.0 / len(model.dict_prior))
        b, c, s = args.batch_size, int(dm.in_chans), int(dm.image_size)
        x = torch.randint(0, 256, (b, c, s, s), dtype=torch.uint8, generator=g).to(device)
        y = torch.randint(0, int(model.num_classes), (b,), generator=g).to(device)
        batch = (x, y, torch.arange(b, device=device))
        dtype = speed.PRECISIONS[args.precision]
        autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype is not None else contextlib.nullcontext
        for stage in model.stages():
            model.train()
            model._apply_stage_modes(stage)
            optimizer = build_optimizer(model.named_parameters(), model.optimizer_cfg)
            clbc = stage.name == "clbc"

            def step() -> None:
                optimizer.zero_grad(set_to_none=True)
                xb, yb, _ = dm.on_after_batch_transfer(batch, 0)
                with autocast():
                    loss, _ = model.stage_loss(xb, yb, clbc)
                loss.backward()
                optimizer.step()

            for _ in range(args.warmup):
                step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            times = []
            for _ in range(args.steps):
                speed._sync(device)
                t0 = time.perf_counter()
                step()
                speed._sync(device)
                times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            rows.append(
                {
                    "config": config,
                    "variant": variant,
                    "stage": stage.name,
                    "facts": facts,
                    "device": str(device) if device.type == "cpu" else f"{device} ({torch.cuda.get_device_name(device)})",
                    "precision": args.precision,
                    "batch_size": b,
                    "input": f"{c}x{s}x{s}",
                    "trainable_m": round(sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, 3),
                    "ms_per_step": round(med * 1e3, 2),
                    "images_per_s": round(b / med, 1),
                    "peak_mem_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None,
                }
            )
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    keys = ["variant", "stage", "device", "precision", "batch_size", "input", "trainable_m", "ms_per_step", "images_per_s", "peak_mem_mib"]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> list[dict[str, Any]]:
    speed = _speed_module()
    args, overrides = speed.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    rows = [r for config in args.config for r in speed_rows(config, args, overrides, speed)]
    print(markdown(rows))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def speed_rows(config: str, args: Any, overrides: list[str], speed: Any) -> list[dict[str, Any]]:
    """Rows of one config; the config's Trainer may switch deterministic algorithms on, so the flag is restored."""
    flags = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        return bench(config, args, overrides, speed)
    finally:
        torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from ltbench.cli import exit_on_user_error

    exit_on_user_error(main, "tscnet_speed")
