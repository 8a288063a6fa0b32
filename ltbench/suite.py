"""Suites: the runs (configs x seeds) that make one comparable table, and running what is missing.

A suite file (``benchmarks/*.yaml``) names configs, seeds, the protocol every run must share and
where runs and the board go. Entries can also come from W&B sweep files (``sweeps:``): their grid,
or a seeded random draw, expanded here the way W&B's sweep engine and agent would, so a sweep runs
offline through the same runner.

A run is skipped when its directory already holds a record whose resolved config equals the one the
suite would run now, so an interrupted suite resumes where it stopped and a changed config reruns.
A run interrupted after a checkpoint continues from it (``--ckpt_path last``); the directory of a run
made with another config is moved aside (``seed0.replaced-1``) before the rerun, never overwritten.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
import os
import re
import signal
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import yaml

from ltbench.errors import Interrupted, LTBenchError
from ltbench.rundirs import existing_run, last_checkpoint, sweep_point_name

RUNTIME_KEYS = ("run_dir", "name", "version", "test_after_fit", "checkpoint", "ckpt_path", "config", "optimizer", "lr_scheduler")
#: LightningCLI warns when called in-process while sys.argv holds the suite command; that is intended here
IN_PROCESS_WARNING = "LightningCLI's args parameter is intended to run"
SUITE_KEYS = {
    "name", "description", "configs", "sweeps", "sweep_count", "sweep_seed", "seeds", "run_dir", "output",
    "overrides", "protocol", "references",
}  # fmt: skip


# ---- W&B sweep files, expanded locally ------------------------------------------------------------
SWEEP_KEYS = {
    "apiVersion", "kind", "controller", "description", "program", "job", "image_uri", "entity", "project",
    "method", "command", "name", "run_cap", "metric", "metrics", "scheduler", "early_terminate", "parameters",
}  # fmt: skip  (the top-level keys of W&B's sweep-config JSON schema)
#: parameter kinds a grid enumerates; the rest are sampled (random, and bayes's first draws)
GRID_KINDS = ("constant", "categorical", "int_uniform", "q_uniform")
SAMPLED_KINDS = (
    "categorical_w_probabilities", "uniform", "log_uniform", "log_uniform_values", "inv_log_uniform_values",
    "q_log_uniform_values", "normal", "q_normal", "log_normal",
)  # fmt: skip


def parameter_kind(name: str, spec: Any) -> str:
    """The kind of one sweep parameter, inferred as W&B's sweep schema does (``min``/``max`` ints:
    int_uniform; numbers: uniform; ``values``: categorical; ``value``: constant)."""
    if not isinstance(spec, dict):
        raise LTBenchError(f"sweep parameter {name}: expected a mapping such as {{values: [...]}}, got {spec!r}")
    dist = spec.get("distribution")
    if "parameters" in spec:
        raise LTBenchError(f"sweep parameter {name}: nested parameters are not supported; name the full dotted path instead")
    if dist is None:
        if "value" in spec:
            return "constant"
        if "values" in spec:
            return "categorical_w_probabilities" if "probabilities" in spec else "categorical"
        if "min" in spec and "max" in spec:
            ints = all(isinstance(spec[k], int) and not isinstance(spec[k], bool) for k in ("min", "max"))
            return "int_uniform" if ints else "uniform"
        raise LTBenchError(f"sweep parameter {name}: give value, values, or min and max (with a distribution)")
    if dist == "categorical" and "probabilities" in spec:
        return "categorical_w_probabilities"
    if dist not in GRID_KINDS + SAMPLED_KINDS:
        raise LTBenchError(f"sweep parameter {name}: distribution {dist!r} is not supported here; use one of {', '.join(GRID_KINDS + SAMPLED_KINDS)}")
    return dist


def _check_parameter(name: str, spec: dict, kind: str) -> None:
    if kind == "categorical" and not (isinstance(spec.get("values"), list) and spec["values"]):
        raise LTBenchError(f"sweep parameter {name}: values must be a non-empty list")
    if kind == "categorical_w_probabilities":
        p = spec.get("probabilities") or []
        if len(p) != len(spec.get("values") or []) or not math.isclose(sum(p), 1.0, abs_tol=1e-6):
            raise LTBenchError(f"sweep parameter {name}: probabilities must match values and sum to 1")
    if "min" in spec and "max" in spec and kind not in ("normal", "q_normal", "log_normal"):
        if not spec["min"] < spec["max"]:
            raise LTBenchError(f"sweep parameter {name}: min {spec['min']} is not less than max {spec['max']}")
        if kind in ("log_uniform_values", "inv_log_uniform_values", "q_log_uniform_values") and spec["min"] <= 0:
            raise LTBenchError(f"sweep parameter {name}: {kind} needs min > 0")
    elif kind in ("int_uniform", "uniform", "q_uniform", "log_uniform", "log_uniform_values", "inv_log_uniform_values", "q_log_uniform_values"):
        raise LTBenchError(f"sweep parameter {name}: {kind} needs min and max")


def _plain(v: Any) -> Any:
    """numpy scalars to Python ones, as W&B's server hands values to the agent (JSON)."""
    if isinstance(v, np.generic):
        return v.item()
    return v


def grid_values(name: str, spec: dict, kind: str) -> list[Any]:
    """The values a grid enumerates for one parameter, as W&B's grid search makes them."""
    if kind == "constant":
        return [spec["value"]]
    if kind == "categorical":
        return list(spec["values"])
    if kind == "int_uniform":
        return list(range(spec["min"], spec["max"] + 1))
    if kind == "q_uniform":  # W&B: np.arange(min, max, q), max excluded
        return [_plain(v) for v in np.arange(spec["min"], spec["max"], spec.get("q", 1.0)).tolist()]
    raise LTBenchError(f"sweep parameter {name}: a grid sweep takes constant, categorical, int_uniform or q_uniform parameters, not {kind}")


def sample_value(spec: dict, kind: str, rng: np.random.Generator) -> Any:
    """One draw of one parameter (the distributions of W&B's random search)."""
    u = rng.uniform
    q = spec.get("q", 1.0)

    def quantize(x: float) -> Any:
        r = round(x / q) * q
        return int(r) if isinstance(q, int) else float(r)

    if kind == "constant":
        return spec["value"]
    if kind == "categorical":
        return spec["values"][int(rng.integers(len(spec["values"])))]
    if kind == "categorical_w_probabilities":
        return spec["values"][int(rng.choice(len(spec["values"]), p=spec["probabilities"]))]
    if kind == "int_uniform":
        return int(rng.integers(spec["min"], spec["max"] + 1))
    if kind == "uniform":
        return float(u(spec["min"], spec["max"]))
    if kind == "q_uniform":
        return quantize(u(spec["min"], spec["max"]))
    if kind == "log_uniform":  # bounds are exponents
        return float(math.exp(u(spec["min"], spec["max"])))
    if kind == "log_uniform_values":
        return float(math.exp(u(math.log(spec["min"]), math.log(spec["max"]))))
    if kind == "inv_log_uniform_values":
        return float(1.0 / math.exp(u(-math.log(spec["max"]), -math.log(spec["min"]))))
    if kind == "q_log_uniform_values":
        return quantize(math.exp(u(math.log(spec["min"]), math.log(spec["max"]))))
    mu, sigma = spec.get("mu", 0.0), spec.get("sigma", 1.0)
    if kind == "normal":
        return float(rng.normal(mu, sigma))
    if kind == "q_normal":
        return quantize(rng.normal(mu, sigma))
    if kind == "log_normal":
        return float(math.exp(rng.normal(mu, sigma)))
    raise LTBenchError(f"cannot sample a {kind} parameter")


def load_sweep(path: str | Path) -> dict[str, Any]:
    """A W&B sweep file, checked against the parts of W&B's schema ltbench relies on."""
    path = Path(path)
    if not path.is_file():
        raise LTBenchError(f"sweep file {path} does not exist")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise LTBenchError(f"{path}: not valid YAML ({e})") from None
    unknown = set(spec) - SWEEP_KEYS
    if unknown:
        raise LTBenchError(f"{path}: unknown sweep key(s) {', '.join(sorted(unknown))}")
    if spec.get("method") not in ("grid", "random", "bayes"):
        raise LTBenchError(f"{path}: method must be grid, random or bayes, got {spec.get('method')!r}")
    params = spec.get("parameters")
    if not isinstance(params, dict) or not params:
        raise LTBenchError(f"{path}: parameters must be a non-empty mapping of dotted config keys")
    for name, p in params.items():
        kind = parameter_kind(name, p)
        _check_parameter(name, p, kind)
        if spec["method"] == "grid":
            grid_values(name, p, kind)
    metric = spec.get("metric")
    if spec["method"] == "bayes" and not metric:
        raise LTBenchError(f"{path}: a bayes sweep needs a metric")
    if metric is not None and (not isinstance(metric, dict) or "name" not in metric or metric.get("goal", "minimize") not in ("minimize", "maximize")):
        raise LTBenchError(f"{path}: metric must be {{name: ..., goal: minimize|maximize}}")
    command = spec.get("command")
    if command is not None and (not isinstance(command, list) or not all(isinstance(c, (str, int, float)) for c in command)):
        raise LTBenchError(f"{path}: command must be a list of strings")
    return spec


def expand_sweep(spec: dict[str, Any], count: Optional[int] = None, seed: int = 0) -> list[dict[str, Any]]:
    """Parameter sets of a sweep: every grid point (in W&B's order: parameters sorted by name, last
    varying fastest), or ``count`` seeded random draws (default ``run_cap``; bayes draws as its
    first, random, suggestions do)."""
    params = spec["parameters"]
    names = sorted(params)
    kinds = {n: parameter_kind(n, params[n]) for n in names}
    if spec["method"] == "grid":
        points = [dict(zip(names, combo)) for combo in itertools.product(*(grid_values(n, params[n], kinds[n]) for n in names))]
        return points[:count] if count else points
    count = count or spec.get("run_cap")
    if not count:
        raise LTBenchError(f"a {spec['method']} sweep has no end: give sweep_count in the suite or run_cap in the sweep file")
    rng = np.random.default_rng(seed)
    return [{n: _plain(sample_value(params[n], kinds[n], rng)) for n in names} for _ in range(int(count))]


def agent_command(spec: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """The argv a ``wandb agent`` runs for these parameters: the sweep's ``command`` with its macros
    filled in by wandb's own code (``${args}`` is ``--key=value`` per parameter)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

    command = create_sweep_command(list(spec.get("command") or []))
    macros: dict[str, Any] = create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    macros.update(interpreter=["python"], program=[spec.get("program", "")], env=["/usr/bin/env"], args_json_file=["config.json"])
    argv: list[str] = []
    for chunk in command:
        chunk = str(chunk)
        if chunk.startswith("${") and chunk.endswith("}"):
            argv += macros.get(chunk[2:-1]) or []
        else:
            argv.append(chunk)
    return argv


def ltbench_args(spec: dict[str, Any], params: dict[str, Any]) -> tuple[str, list[str]]:
    """(subcommand, arguments) that the sweep's agent command passes to ltbench."""
    argv = agent_command(spec, params)
    for i, a in enumerate(argv):
        if a in ("fit", "validate", "test", "predict"):
            return a, argv[i + 1 :]
    raise LTBenchError(f"sweep command {spec.get('command')} has no ltbench subcommand (fit, test, ...)")


# ---- suites ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One row of a suite: a config, plus the arguments a sweep adds; run once per seed."""

    label: str  # the row's name and its run directory's name
    config: Path
    args: tuple[str, ...] = ()
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def stem(self) -> str:
        return self.config.stem


@dataclass
class Suite:
    name: str
    entries: list[Entry]
    seeds: list[int]
    run_dir: Path
    output: Path
    overrides: list[str] = field(default_factory=list)
    protocol: dict[str, Any] = field(default_factory=dict)
    references: bool = True
    description: str = ""
    source: Optional[Path] = None

    @property
    def configs(self) -> list[Path]:
        return list(dict.fromkeys(e.config for e in self.entries))

    @classmethod
    def load(cls, path: str | Path) -> "Suite":
        """Read a suite file; every config and sweep it names must exist before anything runs."""
        path = Path(path)
        if not path.is_file():
            raise LTBenchError(f"suite file {path} does not exist")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise LTBenchError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(raw, dict):
            raise LTBenchError(f"{path}: expected a mapping with configs: [...] and seeds: [...]")
        missing_keys = [k for k in ("seeds",) if k not in raw] + ([] if ("configs" in raw or "sweeps" in raw) else ["configs"])
        if missing_keys:
            raise LTBenchError(f"{path}: missing key(s) {', '.join(missing_keys)}; expected configs: [...], seeds: [...]")
        unknown = set(raw) - SUITE_KEYS
        if unknown:
            raise LTBenchError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
        root = path.resolve().parent.parent  # suite files live in <repo>/benchmarks/

        def resolve(p: str) -> Path:
            return Path(p) if Path(p).is_absolute() else root / p

        configs = [resolve(c) for c in raw.get("configs") or []]
        sweeps = [resolve(s) for s in raw.get("sweeps") or []]
        absent = [str(c) for c in configs if not c.is_file()]
        if absent:
            raise LTBenchError(f"{path}: config(s) not found: {', '.join(absent)}")
        absent = [str(s) for s in sweeps if not s.is_file()]
        if absent:
            raise LTBenchError(f"{path}: sweep file(s) not found: {', '.join(absent)}")
        entries = [Entry(label=c.stem, config=c) for c in configs]
        for s in sweeps:
            entries += _sweep_entries(s, root, raw.get("sweep_count"), int(raw.get("sweep_seed", 0)))
        labels = [e.label for e in entries]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise LTBenchError(f"{path}: run name(s) {', '.join(dup)} appear twice; each config (or sweep point) once")
        seeds = raw["seeds"]
        if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise LTBenchError(f"{path}: seeds must be a non-empty list of integers")
        protocol = raw.get("protocol") or {}
        if not isinstance(protocol, dict):
            raise LTBenchError(f"{path}: protocol must map run-record protocol keys to the values every run shares")
        name = raw.get("name", path.stem)
        return cls(
            name=name,
            entries=entries,
            seeds=[int(s) for s in seeds],
            run_dir=Path(raw.get("run_dir", f"runs/{name}")),
            output=Path(raw.get("output", f"leaderboard/{name}")),
            overrides=[str(o) for o in raw.get("overrides", [])],
            protocol=protocol,
            references=bool(raw.get("references", True)),
            description=str(raw.get("description", "")),
            source=path,
        )

    def entry(self, key: Entry | Path | str) -> Entry:
        if isinstance(key, Entry):
            return key
        for e in self.entries:
            if e.label == str(key) or (isinstance(key, Path) and e.config == key and not e.args):
                return e
        raise KeyError(key)

    def runs(self) -> list[tuple[Entry, int]]:
        return [(e, s) for e in self.entries for s in self.seeds]

    def run_args(self, entry: Entry | Path, seed: int) -> list[str]:
        e = self.entry(entry)
        return [
            "--config", str(e.config), *self.overrides, *e.args,
            "--seed_everything", str(seed),
            "--run_dir", str(self.run_dir), "--name", e.label, "--version", f"seed{seed}",
        ]  # fmt: skip

    def record_path(self, entry: Entry | Path, seed: int) -> Path:
        return self.run_dir / self.entry(entry).label / f"seed{seed}" / "record.json"


def _sweep_entries(path: Path, root: Path, count: Optional[int], seed: int) -> list[Entry]:
    spec = load_sweep(path)
    # a sweep's command names configs relative to the repository it lives in (<repo>/configs/sweeps/),
    # where `wandb agent` is started
    here = path.resolve()
    if here.parent.name == "sweeps" and here.parent.parent.name == "configs":
        root = here.parents[2]
    subcommand, _ = ltbench_args(spec, {})
    if subcommand != "fit":
        raise LTBenchError(f"{path}: a suite runs `ltbench fit` sweeps; this one runs {subcommand}")
    points = expand_sweep(spec, count, seed)
    out = []
    for params in points:
        _, args = ltbench_args(spec, params)
        configs = [args[i + 1] for i, a in enumerate(args) if a == "--config" and i + 1 < len(args)]
        if not configs:
            raise LTBenchError(f"{path}: the command names no --config before ${{args}}")
        base = Path(configs[0]) if Path(configs[0]).is_absolute() else root / configs[0]
        if not base.is_file():
            raise LTBenchError(f"{path}: config {configs[0]} not found")
        rest = list(args)
        i = rest.index("--config")
        del rest[i : i + 2]
        rest = [(str(root / a) if prev == "--config" and not Path(a).is_absolute() else a) for prev, a in zip([None, *rest], rest)]
        # named as a `wandb agent` run of the point names itself (ltbench.rundirs), so both routes share directories
        out.append(Entry(label=sweep_point_name(base.stem, params), config=base, args=tuple(rest), params=tuple(sorted(params.items()))))
    return out


def fingerprint(config: dict[str, Any]) -> dict[str, Any]:
    """The parts of a resolved config that change results (not where a run is written or logged)."""
    out = {k: v for k, v in config.items() if k not in RUNTIME_KEYS}
    trainer = dict(out.get("trainer") or {})
    for k in ("logger", "enable_progress_bar", "enable_model_summary", "default_root_dir"):
        trainer.pop(k, None)
    out["trainer"] = trainer
    return json.loads(json.dumps(out, default=str))


def _subset(small: Any, big: Any) -> bool:
    """Is every key of ``small`` in ``big`` with an equal value (``big`` may hold linked extras)?

    A key ``big`` lacks whose value is None is an option added since ``big`` was recorded, at its
    default: a record made before it still counts (an upgrade does not rerun every suite)."""
    if isinstance(small, dict):
        return isinstance(big, dict) and all(
            _subset(v, big[k]) if k in big else v is None for k, v in small.items()
        )
    return small == big


def resolved_config(args: list[str]) -> dict[str, Any]:
    """The config ``ltbench fit`` would run with, parsed but not instantiated."""
    from ltbench.runner import run

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=IN_PROCESS_WARNING)
        try:
            run(["fit", *args, "--print_config"])
        except LTBenchError as e:
            raise LTBenchError(f"config {args[1]} does not parse ({e}); run `ltbench fit {' '.join(args)} --print_config`") from None
        except SystemExit as e:
            if e.code not in (0, None):
                detail = err.getvalue().strip().splitlines()
                raise LTBenchError(
                    f"config {args[1]} does not parse ({detail[-1] if detail else 'exit ' + str(e.code)}); "
                    f"run `ltbench fit {' '.join(args)} --print_config`"
                ) from None
    return yaml.safe_load(out.getvalue())


class Resolver:
    """Resolved configs of a suite's runs, parsed once per entry (only the seed differs by run)."""

    def __init__(self, suite: Suite) -> None:
        self.suite = suite
        self._cache: dict[str, dict[str, Any]] = {}

    def resolve_all(self, map_fn: Callable[..., Iterator[dict[str, Any]]]) -> None:
        """Parse every entry's config through ``map_fn`` (a worker pool's ``map``: in parallel, while the
        workers' imports are paid once)."""
        todo = [e for e in self.suite.entries if e.label not in self._cache]
        args = [self.suite.run_args(e, self.suite.seeds[0]) for e in todo]
        self._cache.update({e.label: cfg for e, cfg in zip(todo, map_fn(resolved_config, args))})

    def __call__(self, entry: Entry, seed: int) -> dict[str, Any]:
        if entry.label not in self._cache:
            self._cache[entry.label] = resolved_config(self.suite.run_args(entry, self.suite.seeds[0]))
        return {**self._cache[entry.label], "seed_everything": seed}


def is_done(suite: Suite, entry: Entry | Path, seed: int, resolver: Optional[Resolver] = None) -> bool:
    """Does the run's directory hold a readable record made with the config the suite would run now?"""
    entry = suite.entry(entry)
    path = suite.record_path(entry, seed)
    if not path.is_file():
        return False
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict):
        return False
    config = (resolver or Resolver(suite))(entry, seed)
    return _subset(fingerprint(config), fingerprint(record.get("config") or {}))


def _saved_config(run: Path) -> Optional[dict[str, Any]]:
    """The config a run's directory was made with: its record's, else the ``config.yaml`` every fit
    writes before its first checkpoint (None if neither reads)."""
    for name, read in (("record.json", json.loads), ("config.yaml", yaml.safe_load)):
        try:
            data = read((run / name).read_text())
        except (OSError, ValueError, yaml.YAMLError, UnicodeDecodeError):
            continue
        config = data.get("config") if name == "record.json" and isinstance(data, dict) else data
        if isinstance(config, dict):
            return config
    return None


def start_args(suite: Suite, entry: Entry, seed: int, resolver: Resolver, progress: Callable[[str], None] = print) -> list[str]:
    """The ``fit`` arguments of a run that is not done, from what its directory holds.

    ``fit`` refuses a directory that holds a run, so: a last checkpoint made with the same config is
    resumed (``--ckpt_path last``); a run made with another config (or one whose config is unreadable)
    is moved aside, kept, and the run starts afresh; leftovers of an attempt before its first checkpoint
    are no run and stay."""
    args = suite.run_args(entry, seed)
    run = suite.record_path(entry, seed).parent
    if not existing_run(run):
        return args
    saved = _saved_config(run)
    if last_checkpoint(run / "checkpoints") is not None and saved is not None and _subset(fingerprint(resolver(entry, seed)), fingerprint(saved)):
        progress(f"run {entry.label} seed {seed}: resuming from {run / 'checkpoints'}")
        return [*args, "--ckpt_path", "last"]
    n = 1
    while (aside := run.with_name(f"{run.name}.replaced-{n}")).exists():
        n += 1
    run.rename(aside)
    progress(f"run {entry.label} seed {seed}: made with another config; moved to {aside}, running it afresh")
    return args


def parse_shard(text: Optional[str]) -> Optional[tuple[int, int]]:
    """``I/N`` (0-based I): this runner takes every N-th run starting at the I-th."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise LTBenchError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/4")
    return int(m.group(1)), int(m.group(2))


def plan(
    suite: Suite, shard: Optional[tuple[int, int]] = None, resolver: Optional[Resolver] = None
) -> tuple[list[tuple[Entry, int]], list[tuple[Entry, int]]]:
    """(this runner's runs, those of them still to run). Every config is parsed first, so a config
    that does not load fails before anything runs."""
    resolver = resolver or Resolver(suite)
    for e in suite.entries:
        resolver(e, suite.seeds[0])
    mine = [r for i, r in enumerate(suite.runs()) if shard is None or i % shard[1] == shard[0]]
    return mine, [(e, s) for e, s in mine if not is_done(suite, e, s, resolver)]


@contextlib.contextmanager
def _sigterm_flag() -> Iterator[list[int]]:
    """A list that holds the signal once SIGTERM arrives (truthy), for the suite to stop between runs.

    The handler only records: inside a run, Lightning calls it after its own, which ends the run at
    the next step; the run then raises ``Interrupted``.
    """
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
    try:
        yield got
    finally:
        signal.signal(signal.SIGTERM, previous)


QUIET = ("--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false")


def run_one(args: list[str], threads: Optional[int] = None) -> Optional[str]:
    """One suite run, in this process: ``ltbench fit ARGS``; its error line, or None.

    ``threads`` caps torch's intra-op threads (parallel suite workers share the cores)."""
    from ltbench.errors import user_error
    from ltbench.runner import run

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=IN_PROCESS_WARNING)
            run(["fit", *args, *QUIET])
        return None
    except Exception as e:  # one broken run must not stop the suite
        return user_error(e) or f"{type(e).__name__}: {e}"


def _start_worker() -> None:
    """A suite worker imports the runner once, then keeps those objects out of garbage collection."""
    import ltbench.runner  # noqa: F401
    from ltbench.lazy import freeze_imported_objects

    freeze_imported_objects()


def run_suite(
    suite: Suite, progress: Callable[[str], None] = print, shard: Optional[tuple[int, int]] = None, jobs: int = 1
) -> list[tuple[Entry, int, Optional[str]]]:
    """Run every missing (entry, seed) of this runner's share; (entry, seed, error or None) per run.

    Runs are in-process (imports paid once). With ``jobs > 1`` they are spread over that many worker
    processes, each running its share in-process with ``cores // jobs`` torch threads; every run is
    seeded by itself, so which worker runs it does not matter. The workers also parse the suite's
    configs, in parallel, as soon as their imports are done, instead of the parent alone before them."""
    # W&B pieces in a suite (or sweep commands) log locally unless the user asks for online
    os.environ.setdefault("WANDB_MODE", "offline")
    resolver = Resolver(suite)
    with _sigterm_flag() as stop:  # for the pool's whole life: a SIGTERM while it starts or winds down is recorded too
        pool = _worker_pool(jobs) if jobs > 1 else None
        try:
            if pool is not None:
                resolver.resolve_all(pool.map)
            return _run_planned(suite, progress, shard, jobs, resolver, pool, stop)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)


def _worker_pool(jobs: int) -> Any:
    """``jobs`` spawned workers that import the runner as they start (``_start_worker``)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker)


def _run_planned(
    suite: Suite, progress: Callable[[str], None], shard: Optional[tuple[int, int]], jobs: int, resolver: Resolver, pool: Any,
    stop: list[int],
) -> list[tuple[Entry, int, Optional[str]]]:
    from tqdm.auto import tqdm

    mine, todo = plan(suite, shard, resolver)
    share = f" (shard {shard[0]}/{shard[1]})" if shard else ""
    progress(f"suite {suite.name}{share}: {len(mine)} runs, {len(mine) - len(todo)} already recorded, {len(todo)} to run")
    results: list[tuple[Entry, int, Optional[str]]] = []
    bar = tqdm(total=len(todo), desc=f"suite {suite.name}", unit="run", dynamic_ncols=True)

    def done(entry: Entry, seed: int, message: Optional[str]) -> None:
        if message is not None:
            progress(f"run {entry.label} seed {seed} failed: {message}")
        results.append((entry, seed, message))
        bar.update()

    try:
        if pool is None:
            for entry, seed in todo:
                if stop:  # SIGTERM between runs
                    raise Interrupted(f"stopped by SIGTERM before {entry.label} seed {seed}")
                bar.set_postfix_str(f"{entry.label} seed {seed}")
                done(entry, seed, run_one(start_args(suite, entry, seed, resolver, progress)))
        else:
            from concurrent.futures import as_completed

            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            threads = max(1, cores // jobs)
            if stop:  # SIGTERM while the workers started and parsed the configs
                raise Interrupted("stopped by SIGTERM before the first run")
            futures = {pool.submit(run_one, start_args(suite, e, s, resolver, progress), threads): (e, s) for e, s in todo}
            try:
                for future in as_completed(futures):
                    done(*futures[future], future.result())  # a worker's Interrupted is raised here
                    if stop:
                        raise Interrupted("stopped by SIGTERM")
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    except Interrupted as e:
        finished = [f"{en.label} seed {s}" for en, s in mine if (en, s) not in todo or (en, s, None) in results]
        raise Interrupted(
            f"suite {suite.name}: {e.message.split('; ')[0]}; {len(finished)} of {len(mine)} runs recorded"
            + (f" ({', '.join(finished[:12])}{' ...' if len(finished) > 12 else ''})" if finished else "")
            + "; run the same command again to resume",
            e.code,
        ) from None
    finally:
        bar.close()
    order = {(e.label, s): i for i, (e, s) in enumerate(todo)}
    return sorted(results, key=lambda r: order[(r[0].label, r[1])])
