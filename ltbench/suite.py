"""Suites: the runs (configs x seeds) that make one comparable table, and running what is missing.

A run is skipped when its directory already holds a record whose resolved config equals the one the
suite would run now, so an interrupted suite resumes where it stopped and a changed config reruns.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from ltbench.errors import LTBenchError

RUNTIME_KEYS = ("run_dir", "name", "version", "test_after_fit", "checkpoint", "ckpt_path", "config", "optimizer", "lr_scheduler")


@dataclass
class Suite:
    name: str
    configs: list[Path]
    seeds: list[int]
    run_dir: Path
    output: Path
    overrides: list[str] = field(default_factory=list)
    source: Optional[Path] = None

    @classmethod
    def load(cls, path: str | Path) -> "Suite":
        """Read a suite file; every config it names must exist before anything runs."""
        path = Path(path)
        if not path.is_file():
            raise LTBenchError(f"suite file {path} does not exist")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise LTBenchError(f"{path}: not valid YAML ({e})") from None
        missing_keys = [k for k in ("configs", "seeds") if k not in raw]
        if missing_keys:
            raise LTBenchError(f"{path}: missing key(s) {', '.join(missing_keys)}; expected configs: [...], seeds: [...]")
        unknown = set(raw) - {"name", "description", "configs", "seeds", "run_dir", "output", "overrides"}
        if unknown:
            raise LTBenchError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
        root = path.resolve().parent.parent  # suite files live in <repo>/benchmarks/
        configs = [(root / c) if not Path(c).is_absolute() else Path(c) for c in raw["configs"]]
        absent = [str(c) for c in configs if not c.is_file()]
        if absent:
            raise LTBenchError(f"{path}: config(s) not found: {', '.join(absent)}")
        name = raw.get("name", path.stem)
        return cls(
            name=name,
            configs=configs,
            seeds=[int(s) for s in raw["seeds"]],
            run_dir=Path(raw.get("run_dir", f"runs/{name}")),
            output=Path(raw.get("output", f"leaderboard/{name}")),
            overrides=[str(o) for o in raw.get("overrides", [])],
            source=path,
        )

    def runs(self) -> list[tuple[Path, int]]:
        return [(c, s) for c in self.configs for s in self.seeds]

    def run_args(self, config: Path, seed: int) -> list[str]:
        return [
            "--config", str(config), *self.overrides,
            "--seed_everything", str(seed),
            "--run_dir", str(self.run_dir), "--name", config.stem, "--version", f"seed{seed}",
        ]

    def record_path(self, config: Path, seed: int) -> Path:
        return self.run_dir / config.stem / f"seed{seed}" / "record.json"


def fingerprint(config: dict[str, Any]) -> dict[str, Any]:
    """The parts of a resolved config that change results (not where a run is written)."""
    out = {k: v for k, v in config.items() if k not in RUNTIME_KEYS}
    trainer = dict(out.get("trainer") or {})
    for k in ("logger", "enable_progress_bar", "enable_model_summary", "default_root_dir"):
        trainer.pop(k, None)
    out["trainer"] = trainer
    return json.loads(json.dumps(out, default=str))


def _subset(small: Any, big: Any) -> bool:
    """Is every key of ``small`` in ``big`` with an equal value (``big`` may hold linked extras)?"""
    if isinstance(small, dict):
        return isinstance(big, dict) and all(k in big and _subset(v, big[k]) for k, v in small.items())
    return small == big


def resolved_config(args: list[str]) -> dict[str, Any]:
    """The config ``ltbench fit`` would run with, parsed but not instantiated."""
    from ltbench.cli import run

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            run(["fit", *args, "--print_config"])
        except SystemExit as e:
            if e.code not in (0, None):
                raise LTBenchError(f"config {args[1]} does not parse; run `ltbench fit {' '.join(args)} --print_config`") from None
    return yaml.safe_load(out.getvalue())


def is_done(suite: Suite, config: Path, seed: int) -> bool:
    path = suite.record_path(config, seed)
    if not path.is_file():
        return False
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return _subset(fingerprint(resolved_config(suite.run_args(config, seed))), fingerprint(record.get("config") or {}))


def run_suite(suite: Suite, progress: Callable[[str], None] = print) -> list[tuple[Path, int, Optional[str]]]:
    """Run every missing (config, seed) in-process; returns (config, seed, error or None) per run."""
    from tqdm.auto import tqdm

    from ltbench.cli import run, user_error

    results = []
    todo = [(c, s) for c, s in suite.runs() if not is_done(suite, c, s)]
    skipped = len(suite.runs()) - len(todo)
    progress(f"suite {suite.name}: {len(suite.runs())} runs, {skipped} already recorded, {len(todo)} to run")
    for config, seed in tqdm(todo, desc=f"suite {suite.name}", unit="run"):
        try:
            run(["fit", *suite.run_args(config, seed), "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"])
            results.append((config, seed, None))
        except Exception as e:  # one broken run must not stop the suite
            message = user_error(e) or f"{type(e).__name__}: {e}"
            progress(f"run {config.stem} seed {seed} failed: {message}")
            results.append((config, seed, message))
    return results
