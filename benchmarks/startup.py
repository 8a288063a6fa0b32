"""Start-up and end-to-end time of the ``ltbench`` command: what a user waits for before anything trains.

Each measurement is a fresh interpreter (``python -m ltbench.cli ...``) timed from outside; the table
gives the median wall time over ``--repeat`` runs and the CPU time (user + system) of the median run,
which on a busy machine is the better estimate of the idle wall time (the runs are single-threaded
with ``OMP_NUM_THREADS=1``). The import breakdown comes from ``python -X importtime``.

    python benchmarks/startup.py                      # help, imports, one Digits fit
    python benchmarks/startup.py --suite benchmarks/default.yaml   # + the whole suite, from scratch

The suite is run from a copy of its file whose ``run_dir``/``output`` point into a temporary folder,
so nothing recorded before is reused. Nothing here asserts a time: it reports.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import yaml

REPO = Path(__file__).resolve().parents[1]
# the top-level imports worth naming in the breakdown (cumulative microseconds as importtime reports)
WATCH = ("torch", "lightning", "torchmetrics", "torchvision", "timm", "wandb", "open_clip", "sklearn", "scipy", "jsonargparse", "ltbench.methods", "ltbench.data", "ltbench.runner")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("WANDB_MODE", "disabled")
    return env


def timed(cmd: list[str], cwd: Path = REPO) -> dict[str, Any]:
    """Wall and CPU seconds of one child process (CPU from the children's rusage delta)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return {"wall_s": wall, "cpu_s": cpu, "stdout": proc.stdout, "stderr": proc.stderr}


def repeated(cmd: list[str], repeat: int) -> dict[str, Any]:
    runs = [timed(cmd) for _ in range(repeat)]
    median = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]
    return {"wall_s": statistics.median(r["wall_s"] for r in runs), "cpu_s": median["cpu_s"], "runs": len(runs)}


def import_breakdown(module: str) -> dict[str, float]:
    """Cumulative import seconds of ``module`` and of the watched packages it pulls in (first import each)."""
    out = timed([sys.executable, "-X", "importtime", "-c", f"import {module}"])
    seen: dict[str, float] = {}
    for line in out["stderr"].splitlines():
        m = re.match(r"import time:\s+\d+\s+\|\s+(\d+)\s+\|\s+(\S.*)$", line)
        if m and m.group(2).strip() in (*WATCH, module):
            seen[m.group(2).strip()] = int(m.group(1)) / 1e6
    return seen


def suite_time(suite: Path) -> dict[str, Any]:
    spec = yaml.safe_load(suite.read_text())
    with tempfile.TemporaryDirectory(prefix="ltbench-startup-") as tmp:
        spec["run_dir"], spec["output"] = str(Path(tmp) / "runs"), str(Path(tmp) / "board")
        spec["configs"] = [str((REPO / c).resolve()) if not Path(c).is_absolute() else c for c in spec["configs"]]
        copy = Path(tmp) / suite.name
        copy.write_text(yaml.safe_dump(spec, sort_keys=False))
        result = timed([sys.executable, "-m", "ltbench.cli", "leaderboard", str(copy)])
        runs = len(list((Path(tmp) / "runs").rglob("record.json")))
    return {"wall_s": result["wall_s"], "cpu_s": result["cpu_s"], "runs": runs}


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=3, help="runs per help/import measurement (median reported)")
    p.add_argument("--config", default="configs/ce_digits_lt.yaml", help="the config of the end-to-end fit")
    p.add_argument("--suite", type=Path, default=None, help="also time this suite from scratch (minutes)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers as JSON")
    args = p.parse_args(argv)
    py = [sys.executable]
    results: dict[str, Any] = {}
    results["ltbench --help"] = repeated([*py, "-m", "ltbench.cli", "--help"], args.repeat)
    results["ltbench leaderboard --help"] = repeated([*py, "-m", "ltbench.cli", "leaderboard", "--help"], args.repeat)
    results["import ltbench.cli"] = repeated([*py, "-c", "import ltbench.cli"], args.repeat)
    results["import ltbench.runner"] = repeated([*py, "-c", "import ltbench.runner"], args.repeat)
    with tempfile.TemporaryDirectory(prefix="ltbench-startup-") as tmp:
        fit = [*py, "-m", "ltbench.cli", "fit", "--config", args.config, "--run_dir", tmp, "--trainer.enable_progress_bar", "false"]
        results[f"ltbench fit --config {args.config}"] = repeated(fit, 1)
    if args.suite is not None:
        results[f"ltbench leaderboard {args.suite} (from scratch)"] = suite_time(args.suite)
    breakdown = import_breakdown("ltbench.runner")

    print(f"| command | wall s (median) | CPU s | runs |\n|---|---|---|---|")
    for name, r in results.items():
        print(f"| `{name}` | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['runs']} |")
    print("\n| import (cumulative, first import, `python -X importtime -c 'import ltbench.runner'`) | s |\n|---|---|")
    for name, seconds in sorted(breakdown.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {seconds:.2f} |")
    print(f"\nload average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    out = {"results": results, "imports_s": breakdown, "loadavg": os.getloadavg(), "cpus": os.cpu_count()}
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
