"""Leaderboards from run records: one table per dataset, mean ± std over seeds, protocol columns."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ltbench.errors import LTBenchError
from ltbench.suite import Suite, run_suite

METRIC_COLUMNS = {
    "multiclass": [("acc", "overall"), ("acc_many", "many"), ("acc_medium", "medium"), ("acc_few", "few")],
    "multilabel": [("mAP", "mAP"), ("mAP_many", "head"), ("mAP_medium", "medium"), ("mAP_few", "tail")],
}
PROTOCOL_COLUMNS = [("backbone", "backbone"), ("pretrained", "pretraining"), ("input_size", "input"), ("epochs", "epochs"), ("group_rule", "groups")]


def load_records(paths: list[Path]) -> list[dict[str, Any]]:
    """Records that parse and carry metrics; a corrupt or half-written one is skipped with a warning."""
    out = []
    for path in paths:
        try:
            record = json.loads(path.read_text())
            if not isinstance(record.get("metrics"), dict) or "protocol" not in record:
                raise ValueError("no metrics/protocol")
        except (OSError, ValueError) as e:
            warnings.warn(f"skipping run record {path}: {e}", stacklevel=2)
            continue
        record["_path"] = str(path)
        out.append(record)
    return out


def mean_std(values: list[Optional[float]]) -> tuple[float, float, int]:
    vals = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(vals) == 0:
        return float("nan"), float("nan"), 0
    return float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else float("nan"), len(vals)


def fmt(mean: float, std: float, scale: float = 100.0) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean * scale:.1f} ± {std * scale:.1f}" if math.isfinite(std) else f"{mean * scale:.1f}"


def build_tables(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{dataset: {"task", "rows": [...]}}; a row aggregates one (run label, dataset) over seeds."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["dataset"], r.get("label") or r["method"])].append(r)
    tables: dict[str, dict[str, Any]] = {}
    for (dataset, label), runs in sorted(groups.items()):
        task = runs[0]["task"]
        table = tables.setdefault(dataset, {"task": task, "rows": []})
        proto = runs[0]["protocol"]
        row: dict[str, Any] = {"method": label, "class": runs[0]["method"], "seeds": len({r["seed"] for r in runs})}
        for key, name in METRIC_COLUMNS[task]:
            row[name] = mean_std([r["metrics"].get(key) for r in runs])
        for key, name in PROTOCOL_COLUMNS:
            row[name] = proto.get(key)
        speeds = [r.get("throughput", {}).get("train_images_per_s") for r in runs]
        row["train img/s"] = mean_std(speeds)[0]
        table["rows"].append(row)
    for table in tables.values():
        first = METRIC_COLUMNS[table["task"]][0][1]
        table["rows"].sort(key=lambda row: -np.nan_to_num(row[first][0], nan=-1))
    return tables


def _cells(row: dict[str, Any], task: str) -> list[str]:
    cells = [row["method"], str(row["seeds"])]
    cells += [fmt(*row[name][:2]) for _, name in METRIC_COLUMNS[task]]
    cells += [str(row[name]) for _, name in PROTOCOL_COLUMNS]
    speed = row["train img/s"]
    cells.append(f"{speed:.0f}" if math.isfinite(speed) else "n/a")
    return cells


def headers(task: str) -> list[str]:
    return ["method", "seeds", *[n for _, n in METRIC_COLUMNS[task]], *[n for _, n in PROTOCOL_COLUMNS], "train img/s"]


def render_markdown(tables: dict[str, dict[str, Any]], title: str) -> str:
    lines = [f"# {title}", "", "Mean ± sample std over seeds, in %. Groups from training counts (rule in the groups column); n/a = empty group.", ""]
    for dataset, table in tables.items():
        task = table["task"]
        lines += [f"## {dataset} ({task})", "", "| " + " | ".join(headers(task)) + " |", "|" + "---|" * len(headers(task))]
        lines += ["| " + " | ".join(_cells(row, task)) + " |" for row in table["rows"]]
        lines.append("")
    return "\n".join(lines)


def render_csv(tables: dict[str, dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["dataset", "task", "method", "seeds", "metric", "mean", "std", *[n for _, n in PROTOCOL_COLUMNS], "train_img_per_s"])
    for dataset, table in tables.items():
        task = table["task"]
        for row in table["rows"]:
            for _, name in METRIC_COLUMNS[task]:
                mean, std, _ = row[name]
                writer.writerow([dataset, task, row["method"], row["seeds"], name, mean, std, *[row[n] for _, n in PROTOCOL_COLUMNS], row["train img/s"]])
    return buf.getvalue()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def render_suite(suite: Suite) -> dict[str, Path]:
    paths = [suite.record_path(c, s) for c, s in suite.runs()]
    records = load_records([p for p in paths if p.exists()])
    for r in records:
        r["label"] = Path(r["_path"]).parent.parent.name  # the config stem: one row per config
    tables = build_tables(records)
    md = render_markdown(tables, f"ltbench leaderboard: {suite.name}")
    out = {"md": suite.output / "leaderboard.md", "csv": suite.output / "leaderboard.csv"}
    _write(out["md"], md)
    _write(out["csv"], render_csv(tables))
    return out


def main(argv: Optional[list[str]] = None) -> int:
    """``ltbench leaderboard SUITE.yaml [--render-only]``: run what is missing, then render the board."""
    import argparse

    parser = argparse.ArgumentParser(prog="ltbench leaderboard", description=main.__doc__)
    parser.add_argument("suite", help="suite file, e.g. benchmarks/default.yaml")
    parser.add_argument("--render-only", action="store_true", help="do not run anything; render what is recorded")
    args = parser.parse_args(argv)
    try:
        suite = Suite.load(args.suite)
        failures = [] if args.render_only else [r for r in run_suite(suite) if r[2]]
        out = render_suite(suite)
    except LTBenchError as e:
        print(f"ltbench: error: {e}", file=sys.stderr)
        return 2
    print(out["md"].read_text())
    print(f"written: {out['md']}, {out['csv']}")
    if failures:
        print(f"{len(failures)} run(s) failed: " + "; ".join(f"{c.stem} seed {s}: {m}" for c, s, m in failures), file=sys.stderr)
        return 1
    return 0
