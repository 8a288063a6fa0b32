"""Where the time of ltbench's TDE train step goes, against the same model's bare step, in one process.

Variants run interleaved (round-robin, ``--rounds`` times ``--steps`` steps each) on one resident
batch, each on its own copy of the same initial model, so a loaded, shared machine slows them all
alike; the table gives each variant's median and fastest step time and its speed relative to the
model alone (the minimum is the least disturbed by other load).

- ``model alone``: a normalised float batch, ``head(backbone(x))``, ``F.cross_entropy``, backward,
  ``torch.optim.SGD(model.parameters())``: what a research repo's step does.
- ``ltbench step``: what ``ltbench fit`` runs per step: uint8 batch normalised by the data module
  (``on_after_batch_transfer``), the method's ``forward`` (TDE: the head-direction update too),
  ``training_loss``, backward, the optimiser from ``build_optimizer``.
- the ablations swap one piece of the ltbench step back to the bare one.

    python benchmarks/step_breakdown.py --batch-size 128 --rounds 7 --steps 2 --device cpu
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from ltbench.data.cifar import CIFAR100LT
from ltbench.data.longtail import exp_profile
from ltbench.methods import TDE
from ltbench.methods.optim import OptimizerConfig, SchedulerConfig, build_optimizer


def make_model(backbone: str, num_classes: int, precision: str) -> TDE:
    opt = OptimizerConfig(name="sgd", lr=0.2, weight_decay=5e-4, momentum=0.9)
    return TDE(backbone=backbone, num_classes=num_classes, train_class_counts=exp_profile(500, num_classes, 100),
               optimizer=opt, scheduler=SchedulerConfig(), alpha=1.5)


def variants(base: TDE, device: torch.device, batch: int, size: int, dtype: Optional[torch.dtype]) -> dict[str, Callable[[], None]]:
    dm = CIFAR100LT(root="unused")
    g = torch.Generator().manual_seed(0)
    x8 = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g).to(device)
    y = torch.randint(0, base.num_classes, (batch,), generator=g).to(device)
    idx = torch.arange(batch, device=device)
    xf = dm.on_after_batch_transfer((x8, y, idx), 0)[0].clone()

    def autocast():
        return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

    def step_fn(normalise: bool, method_forward: bool, ltbench_opt: bool) -> Callable[[], None]:
        model = copy.deepcopy(base).to(device).train()
        opt = (build_optimizer(model.named_parameters(), model.optimizer_cfg) if ltbench_opt else
               torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9, weight_decay=5e-4))

        def step() -> None:
            x = dm.on_after_batch_transfer((x8, y, idx), 0)[0] if normalise else xf
            with autocast():
                if method_forward:
                    loss = model.training_loss(model(x), y)
                else:
                    loss = F.cross_entropy(model.head(model.backbone(x)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    return {
        "model alone": step_fn(False, False, False),
        "ltbench step": step_fn(True, True, True),
        "ltbench, pre-normalised batch": step_fn(False, True, True),
        "ltbench, bare forward+CE (no direction update)": step_fn(True, False, True),
        "ltbench, torch SGD on model.parameters()": step_fn(True, True, False),
    }


def measure(steps: dict[str, Callable[[], None]], rounds: int, per_round: int, warmup: int, device: torch.device) -> dict[str, list[float]]:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for fn in steps.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for r in range(rounds):
        order = list(steps) if r % 2 == 0 else list(reversed(steps))
        for name in order:
            for _ in range(per_round):
                sync()
                t0 = time.perf_counter()
                steps[name]()
                sync()
                times[name].append(time.perf_counter() - t0)
    return times


def op_profile(steps: dict[str, Callable[[], None]], names: tuple[str, str], n: int = 3, top: int = 12) -> list[dict[str, Any]]:
    """Self CPU time per operator over ``n`` steps of two variants (torch.profiler): the operators whose
    time differs most, and each variant's total. Operator time is robust to other load on the machine
    in a way wall time is not."""
    from torch.profiler import ProfilerActivity, profile

    totals = {}
    for name in names:
        steps[name]()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(n):
                steps[name]()
        totals[name] = {e.key: e.self_cpu_time_total / n / 1e3 for e in prof.key_averages()}
    a, b = (totals[k] for k in names)
    keys = sorted(set(a) | set(b), key=lambda k: -abs(b.get(k, 0.0) - a.get(k, 0.0)))
    rows = [{"op": k, f"{names[0]} ms": a.get(k, 0.0), f"{names[1]} ms": b.get(k, 0.0)} for k in keys[:top]]
    rows.append({"op": "TOTAL", f"{names[0]} ms": sum(a.values()), f"{names[1]} ms": sum(b.values())})
    return rows


def main(argv: Optional[list[str]] = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="resnet32_bbn")
    p.add_argument("--num-classes", type=int, default=100)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=["32", "bf16"], default="32")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=2, help="steps per variant per round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--profile", action="store_true", help="also an operator-level comparison (torch.profiler) of the two main variants")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    base = make_model(args.backbone, args.num_classes, args.precision)
    dtype = torch.bfloat16 if args.precision == "bf16" else None
    steps = variants(base, device, args.batch_size, args.image_size, dtype)
    times = measure(steps, args.rounds, args.steps, args.warmup, device)
    ref, ref_min = statistics.median(times["model alone"]), min(times["model alone"])
    rows = [
        {"variant": k, "ms_per_step_median": 1e3 * statistics.median(v), "speed_vs_model_alone": ref / statistics.median(v),
         "ms_per_step_min": 1e3 * min(v), "speed_vs_model_alone_min": ref_min / min(v), "samples": len(v)}
        for k, v in times.items()
    ]
    print(f"| variant (batch {args.batch_size}, {args.device}, {torch.get_num_threads()} threads) | ms/step (median) | "
          "speed vs model alone (median) | ms/step (min) | speed vs model alone (min) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['ms_per_step_median']:.1f} | {r['speed_vs_model_alone']:.3f} | {r['ms_per_step_min']:.1f} | "
              f"{r['speed_vs_model_alone_min']:.3f} |")
    if args.profile:
        names = ("model alone", "ltbench step")
        prof = op_profile(steps, names)
        print(f"\n| operator (self CPU, ms/step) | {names[0]} | {names[1]} |\n|---|---|---|")
        for r in prof:
            print(f"| {r['op']} | {r[names[0] + ' ms']:.2f} | {r[names[1] + ' ms']:.2f} |")
        rows = rows + [{"profile": prof}]
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
