"""Per-step cost of each SeDA stage and of inference, on synthetic batches of a config's input shape.

The model is built as ``ltbench fit`` builds it (``ltbench.cli.build``), the class text features are
computed once, and for every stage ``--warmup`` + ``--steps`` training steps (the stage's own loss,
backward, optimiser step, with the stage's trainable set and eval modes) are timed one by one; the
table gives the median. ``inference`` times ``inference_logits`` on the same batch (the DDIM chains
included). A stage's cost does not depend on what the earlier stages learnt, so nothing is trained first.

    python benchmarks/seda_stage_cost.py --config configs/seda_digits_lt.yaml --batch-size 64
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Optional

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(config: str, batch_size: int = 64, steps: int = 20, warmup: int = 3, device: str = "cpu", overrides: Optional[list[str]] = None) -> list[dict[str, Any]]:
    from ltbench.runner import build
    from ltbench.methods.optim import build_optimizer
    from ltbench.methods.stages import StagePlan

    dev = torch.device(device)
    model, dm = build(["--config", config, *(overrides or [])])
    model.prepare_text()
    model.to(dev)
    model.log = model.log_dict = lambda *a, **k: None  # no trainer to log to
    optimizer = build_optimizer(model.named_parameters(), model.optimizer_cfg)
    g = torch.Generator().manual_seed(0)
    s, c = int(dm.image_size), int(dm.in_chans)
    x = torch.randint(0, 256, (batch_size, c, s, s), dtype=torch.uint8, generator=g).to(dev)
    y = (torch.randint(0, model.num_classes, (batch_size,), generator=g) if model.task == "multiclass"
         else torch.randint(0, 2, (batch_size, model.num_classes), generator=g).float()).to(dev)  # fmt: skip
    batch = dm.on_after_batch_transfer((x, y, torch.arange(batch_size, device=dev)), 0)
    fixed = sum(st.epochs or 0 for st in model.stages())
    plan = StagePlan(model.stages(), fixed + 1 if any(st.epochs is None for st in model.stages()) else None)
    rows = []

    def timed(fn) -> list[float]:
        for _ in range(warmup):
            fn()
        out = []
        for _ in range(steps):
            _sync(dev)
            t0 = time.perf_counter()
            fn()
            _sync(dev)
            out.append(time.perf_counter() - t0)
        return out

    for i, stage in enumerate(plan.stages):
        model.train()
        model._apply_stage_modes(stage)
        model.entered_stage = i
        model._stage_name = lambda name=stage.name: name

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            model.training_step(batch, 0).backward()
            optimizer.step()

        t = timed(step)
        rows.append({"stage": stage.name, "trains": ", ".join(stage.train or ("all",)), "ms_per_step": 1e3 * statistics.median(t)})
    model.eval()
    with torch.no_grad():
        t = timed(lambda: model.inference_logits(batch[0]))
    rows.append({"stage": "inference", "trains": "-", "ms_per_step": 1e3 * statistics.median(t)})
    return rows


def main(argv: Optional[list[str]] = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cpu")
    args, overrides = p.parse_known_args(argv)
    rows = measure(args.config, args.batch_size, args.steps, args.warmup, args.device, overrides)
    print(f"| stage | trains | ms/step (median of {args.steps}, batch {args.batch_size}, {args.device}, {torch.get_num_threads()} threads) |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r['stage']} | {r['trains']} | {r['ms_per_step']:.1f} |")
    return rows


if __name__ == "__main__":
    from ltbench.errors import exit_on_user_error

    exit_on_user_error(main, "seda_stage_cost")
