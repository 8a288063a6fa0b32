"""Optimiser step time on a config's parameters: PyTorch's per-tensor, foreach and fused updates.

The model is built as ``ltbench fit`` builds it (``ltbench.runner.build``), every trainable
parameter gets a random gradient, and ``--steps`` steps of the config's optimiser (its groups, lr
and betas) are timed for each implementation: the median of per-step times, the device
synchronised before the clock is read. ``ltbench`` uses fused for Adam/AdamW (``OptimizerConfig.fused``).

    python benchmarks/optimizer_step.py --config configs/cprfl_digits_lt.yaml
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Optional

import torch

IMPLEMENTATIONS = {"per-tensor": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def make(model: torch.nn.Module, cfg, flags: dict) -> torch.optim.Optimizer:
    from ltbench.methods.optim import param_groups

    groups = param_groups(model.named_parameters(), cfg)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, **flags)
    cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
    return cls(groups, lr=cfg.lr, betas=cfg.betas, **flags)


def step_ms(opt: torch.optim.Optimizer, steps: int, device: torch.device) -> float:
    times = []
    for _ in range(steps + 3):
        t = time.perf_counter()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times[3:])


def main(args: Optional[list[str]] = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ns = ap.parse_args(args)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ltbench.runner import build

    model, _ = build(["--config", ns.config])
    device = torch.device(ns.device)
    model.to(device)
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.randn_like(p)
    cfg = model.optimizer_cfg
    result = {label: step_ms(make(model, cfg, flags), ns.steps, device) for label, flags in IMPLEMENTATIONS.items()}
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"{ns.config}: {cfg.name}, {n / 1e6:.2f} M trainable parameters, {device}, torch {torch.__version__}")
    print("| implementation | ms/step (median) |\n|---|---|")
    for label, ms in result.items():
        print(f"| {label} | {ms:.2f} |")
    return result


if __name__ == "__main__":
    main()
