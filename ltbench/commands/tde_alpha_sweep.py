"""``ltbench tde-alpha-sweep``: TDE's alpha curve on one trained checkpoint, one ``ltbench test`` per alpha.

alpha only enters inference, so every point of the curve is the same weights and head direction
tested with a different subtraction strength. Each point writes an ordinary run record
(``<run_dir>/<name>/alpha<a>/record.json``); the table collects their metrics.

    ltbench tde-alpha-sweep --config configs/tde_digits_lt.yaml \\
        --ckpt_path runs/.../checkpoints/last.ckpt --alphas 0 0.5 1 1.5 2

Extra arguments (``--data.init_args.eval_batch_size 512``) go to the config parser. The test split
is the data module's; tune alpha on a validation split where the dataset has one.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Optional

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def sweep(
    config_args: list[str], ckpt_path: str, alphas: list[float], run_dir: str = "runs", name: Optional[str] = None
) -> list[dict[str, Any]]:
    """One row per alpha: alpha, the record's metrics, mean cos(x, d) on the test set and the record path."""
    from ltbench.runner import run

    name = name or f"{_stem(config_args)}-alpha-sweep"
    rows = []
    for alpha in alphas:
        cli = run(
            [
                "test", *config_args, "--ckpt_path", str(ckpt_path),
                "--model.init_args.alpha", str(alpha), "--model.init_args.tde", "true",
                "--run_dir", str(run_dir), "--name", name, "--version", f"alpha{alpha:g}", *QUIET,
            ]
        )
        record = json.loads(Path(cli.model.record_path).read_text())
        rows.append(
            {
                "alpha": float(alpha),
                **record["metrics"],
                "mean_cos": record["protocol"].get("tde_test_mean_cos"),
                "record": str(cli.model.record_path),
            }
        )
    return rows


def _stem(config_args: list[str]) -> str:
    configs = [config_args[i + 1] for i, a in enumerate(config_args[:-1]) if a == "--config"]
    return Path(configs[-1]).stem if configs else "tde"


def markdown(rows: list[dict[str, Any]]) -> str:
    metrics = [k for k in rows[0] if k not in ("alpha", "mean_cos", "record")] if rows else []
    lines = ["| alpha | " + " | ".join(metrics) + " | alpha * mean cos |", "|---" * (len(metrics) + 2) + "|"]
    for r in rows:
        cells = [f"{100 * r[k]:.1f}" if isinstance(r[k], float) and not math.isnan(r[k]) else "n/a" for k in metrics]
        heuristic = f"{r['alpha'] * r['mean_cos']:.2f}" if r["mean_cos"] is not None else "n/a"
        lines.append(f"| {r['alpha']:g} | " + " | ".join(cells) + f" | {heuristic} |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(prog="ltbench tde-alpha-sweep", description=__doc__.split("\n\n")[0], epilog="Unknown arguments go to the config parser.")
    p.add_argument("--config", action="append", required=True, help="the TDE config the checkpoint was trained with")
    p.add_argument("--ckpt_path", required=True)
    p.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
    p.add_argument("--run_dir", default="runs")
    p.add_argument("--name", default=None, help="run name (default: <config stem>-alpha-sweep)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args, extra = p.parse_known_args(argv)
    config_args = [a for c in args.config for a in ("--config", c)] + extra
    rows = sweep(config_args, args.ckpt_path, args.alphas, args.run_dir, args.name)
    print(markdown(rows))
    print("\nmetrics in %, on the data module's test split; the README heuristic picks alpha * mean cos ~ 1")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return rows
