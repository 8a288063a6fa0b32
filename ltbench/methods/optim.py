"""Optimiser and learning-rate schedule as typed config, built on torch.optim.

The schedule is one pure function of training progress, wrapped in ``LambdaLR`` and stepped every
optimiser step, so a resumed run continues exactly and a multi-stage method can restart it per
stage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Literal, Optional

import torch
from torch import nn

from ltbench.errors import LTBenchError


@dataclass
class OptimizerConfig:
    """``no_decay_norm_bias`` puts biases and norm weights (1-D parameters) in a group without weight decay.

    ``fused`` (None: on for Adam/AdamW on CPU and CUDA) runs the update as one kernel over all
    parameters instead of a Python loop over tensors: same algorithm, different rounding. On CPU,
    AdamW's per-tensor path takes 2.5-8x as long (``benchmarks/optimizer_step.py``). SGD keeps
    PyTorch's default (foreach on CUDA).
    """

    name: Literal["sgd", "adamw", "adam"] = "sgd"
    lr: float = 0.1
    weight_decay: float = 5e-4
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    no_decay_norm_bias: bool = False
    fused: Optional[bool] = None


@dataclass
class SchedulerConfig:
    """Warm-up, then constant / multistep / cosine; or one-cycle.

    Times are in epochs; ``warmup_steps`` (optimiser steps) replaces ``warmup_epochs`` when set,
    as mmcv-style recipes give it. ``interval='step'`` moves the lr every optimiser step. ``interval='epoch'``
    holds it for an epoch and follows the BBN/TDE convention of a scheduler stepped at the start of
    each epoch: epoch e (0-based) uses progress e + 1, so with 5 warm-up epochs from 1/3 the first
    epochs use 0.467, 0.6, ... of the base lr and milestone 120 applies from the 120th epoch on.
    """

    name: Literal["constant", "multistep", "cosine", "onecycle"] = "cosine"
    warmup_epochs: float = 0.0
    warmup_steps: int = 0
    warmup_start_factor: float = 1.0 / 3.0
    milestones: list[float] = field(default_factory=list)
    gamma: float = 0.1
    min_factor: float = 0.0
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    interval: Literal["step", "epoch"] = "step"

    def __post_init__(self) -> None:
        if self.warmup_steps and self.interval == "epoch":
            raise ValueError("warmup_steps counts optimiser steps, so it needs interval: step; with interval: epoch give warmup_epochs")


def lr_factor(cfg: SchedulerConfig, t: float, total: float) -> float:
    """Multiplier of the base lr at progress ``t`` (epochs) of a schedule ``total`` epochs long."""
    if cfg.name == "onecycle":
        up = cfg.pct_start * total
        start, end = 1.0 / cfg.div_factor, 1.0 / (cfg.div_factor * cfg.final_div_factor)
        if t <= up:
            return _cos_interp(start, 1.0, t / max(up, 1e-12))
        return _cos_interp(1.0, end, (t - up) / max(total - up, 1e-12))
    if cfg.warmup_epochs > 0 and t < cfg.warmup_epochs:
        a = t / cfg.warmup_epochs
        return cfg.warmup_start_factor * (1 - a) + a
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "multistep":
        return cfg.gamma ** sum(1 for m in cfg.milestones if t >= m)
    if cfg.name == "cosine":
        span = max(total - cfg.warmup_epochs, 1e-12)
        p = min(max((t - cfg.warmup_epochs) / span, 0.0), 1.0)
        return cfg.min_factor + (1 - cfg.min_factor) * 0.5 * (1 + math.cos(math.pi * p))
    raise ValueError(f"unknown scheduler {cfg.name!r}")


def _cos_interp(a: float, b: float, p: float) -> float:
    p = min(max(p, 0.0), 1.0)
    return b + (a - b) * 0.5 * (1 + math.cos(math.pi * p))


def step_progress(cfg: SchedulerConfig, step: int, steps_per_epoch: int) -> float:
    """Progress in epochs at optimiser step ``step`` (0-based) under ``cfg.interval``."""
    if cfg.interval == "epoch":
        return float(step // steps_per_epoch + 1)
    return step / steps_per_epoch


def param_groups(named: Iterable[tuple[str, nn.Parameter]], cfg: OptimizerConfig) -> list[dict]:
    """All parameters, frozen ones included: a later stage may unfreeze them."""
    params = list(named)
    if not cfg.no_decay_norm_bias:
        return [{"params": [p for _, p in params], "weight_decay": cfg.weight_decay}]
    decay = [p for n, p in params if p.ndim > 1]
    no_decay = [p for n, p in params if p.ndim <= 1]
    return [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


FUSED_DEVICES = ("cpu", "cuda")


def use_fused(params: list[nn.Parameter], cfg: OptimizerConfig, allowed: bool = True) -> bool:
    """``allowed=False`` where the trainer cannot step a fused optimiser (fp16 loss scaling with
    gradient clipping: Lightning refuses the combination)."""
    if cfg.fused and not allowed:
        raise LTBenchError(
            "optimizer.fused true: Lightning cannot clip the gradients of a fused optimiser under 16-bit mixed "
            "precision (loss scaling); set model.init_args.optimizer.fused false, or drop trainer.gradient_clip_val"
        )
    if cfg.fused is not None:
        return cfg.fused
    return allowed and cfg.name in ("adam", "adamw") and all(
        p.device.type in FUSED_DEVICES and p.is_floating_point() for p in params
    )


def build_optimizer(
    named: Iterable[tuple[str, nn.Parameter]], cfg: OptimizerConfig, fused_allowed: bool = True
) -> torch.optim.Optimizer:
    groups = param_groups(named, cfg)
    fused = {"fused": True} if use_fused([p for g in groups for p in g["params"]], cfg, fused_allowed) else {}
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, **fused)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, **fused)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, **fused)
    raise ValueError(f"unknown optimizer {cfg.name!r}")
