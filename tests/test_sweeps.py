"""W&B sweep files: valid specs, expanded locally (grid / random as W&B does), and every argument list
they generate is accepted by ``ltbench fit`` and lands on the config key it names."""

import contextlib
import importlib
import io
import itertools
import math
import warnings
from pathlib import Path

import pytest
import yaml

from ltbench.runner import run
from ltbench.errors import LTBenchError
from ltbench.suite import Suite, agent_command, expand_sweep, grid_values, load_sweep, ltbench_args, parameter_kind
from tests.helpers import REPO

SWEEPS = sorted((REPO / "configs" / "sweeps").glob("*.yaml"))
LOGGED = {
    "multiclass": {f"{s}/{m}" for s in ("val", "test") for m in ("acc", "acc_many", "acc_medium", "acc_few")},
    "multilabel": {f"{s}/{m}" for s in ("val", "test") for m in ("mAP", "mAP_many", "mAP_medium", "mAP_few")},
}


def _print_config(args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        with pytest.raises(SystemExit) as exc:
            run([*args, "--print_config"])
    assert exc.value.code in (0, None), f"ltbench rejected {args}"
    return yaml.safe_load(out.getvalue())


def _get(config, dotted):
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def test_there_are_sweeps_for_tde_and_asl():
    names = {p.stem for p in SWEEPS}
    assert any(n.startswith("tde_") for n in names) and any(n.startswith("asl_") for n in names)
    params = {k for p in SWEEPS for k in load_sweep(p)["parameters"]}
    assert {"model.init_args.alpha", "model.init_args.optimizer.lr", "model.init_args.gamma_neg"} <= params


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_file_is_a_valid_wandb_spec_running_ltbench_fit(path):
    spec = load_sweep(path)
    assert spec.get("program"), "the CLI agent needs `program` (wandb issue #4187)"
    assert (REPO / spec["program"]).is_file()
    command = [str(c) for c in spec["command"]]
    assert command[-1] == "${args}" and "${args_no_hyphens}" not in command
    sub = command.index("fit")
    assert command[sub + 1] == "--config" and (REPO / command[sub + 2]).is_file(), "subcommand and base config come before ${args}"
    base = _print_config(["fit", "--config", str(REPO / command[sub + 2])])
    module, _, cls = base["data"]["class_path"].rpartition(".")
    task = getattr(importlib.import_module(module), cls).task
    assert spec["metric"]["name"] in LOGGED[task] and spec["metric"]["goal"] == "maximize"


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_cli_accepts_every_generated_argument_list(path):
    spec = load_sweep(path)
    points = expand_sweep(spec, count=6 if spec["method"] != "grid" else None, seed=1)
    if spec["method"] == "grid":
        sizes = [len(grid_values(k, v, parameter_kind(k, v))) for k, v in spec["parameters"].items()]
        assert len(points) == math.prod(sizes) and len({tuple(sorted(p.items())) for p in points}) == len(points)
    for params in points:
        argv = agent_command(spec, params)
        assert argv[:2] == ["/usr/bin/env", "python"]
        subcommand, args = ltbench_args(spec, params)
        assert subcommand == "fit"
        assert args[-len(params):] == [f"--{k}={v}" for k, v in params.items()]  # wandb's own ${args} format
        config = _print_config([subcommand, *[str(REPO / a) if a.startswith("configs/") else a for a in args]])
        for key, value in params.items():
            got = _get(config, key)
            assert got == pytest.approx(value, rel=1e-12) if isinstance(value, float) else got == value, (key, got, value)
            spec_p = spec["parameters"][key]
            if "min" in spec_p:
                assert spec_p["min"] <= got <= spec_p["max"]
            if "values" in spec_p:
                assert got in spec_p["values"]


def test_grid_and_random_expansion_follow_wandb_semantics():
    grid = {"method": "grid", "parameters": {"b": {"values": [1, 2]}, "a": {"min": 1, "max": 3}, "c": {"value": "x"}, "d": {"distribution": "q_uniform", "min": 0, "max": 1, "q": 0.25}}}
    pts = expand_sweep(grid)
    # a int_uniform 1..3 inclusive, d = arange(0, 1, 0.25) (max excluded), sorted names, last fastest
    assert len(pts) == 3 * 2 * 1 * 4 and pts[0] == {"a": 1, "b": 1, "c": "x", "d": 0.0} and pts[1]["d"] == 0.25
    assert [p["a"] for p in pts] == [a for a, _ in itertools.product([1, 2, 3], range(8))]
    rnd = {"method": "random", "run_cap": 200, "parameters": {
        "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1},
        "g": {"distribution": "int_uniform", "min": 0, "max": 4},
        "u": {"min": 0.5, "max": 1.5},
        "q": {"distribution": "q_uniform", "min": 0, "max": 3, "q": 1},
    }}  # fmt: skip
    draws = expand_sweep(rnd, seed=3)
    assert len(draws) == 200 and draws == expand_sweep(rnd, seed=3) and draws != expand_sweep(rnd, seed=4)
    lrs = [d["lr"] for d in draws]
    assert 1e-4 <= min(lrs) and max(lrs) <= 1e-1
    assert sum(lr < 1e-2 for lr in lrs) > 100  # log-uniform: two thirds of the mass below 1e-2
    assert {d["g"] for d in draws} == {0, 1, 2, 3, 4} and all(isinstance(d["q"], int) for d in draws)
    assert all(0.5 <= d["u"] <= 1.5 for d in draws)
    with pytest.raises(LTBenchError, match="has no end"):
        expand_sweep({"method": "random", "parameters": rnd["parameters"]})
    with pytest.raises(LTBenchError, match="grid sweep takes"):
        grid_values("lr", rnd["parameters"]["lr"], "log_uniform_values")


def test_bad_sweep_files_are_refused(tmp_path):
    def write(body):
        p = tmp_path / "s.yaml"
        p.write_text(yaml.safe_dump(body))
        return p

    ok = {"method": "grid", "program": "x", "parameters": {"a": {"values": [1]}}, "command": ["${args}"]}
    load_sweep(write(ok))
    with pytest.raises(LTBenchError, match="unknown sweep key"):
        load_sweep(write({**ok, "paramters": {}}))
    with pytest.raises(LTBenchError, match="method must be"):
        load_sweep(write({**ok, "method": "hyperband"}))
    with pytest.raises(LTBenchError, match="grid sweep takes"):
        load_sweep(write({**ok, "parameters": {"a": {"distribution": "normal"}}}))
    with pytest.raises(LTBenchError, match="min 2 is not less than max 1"):
        load_sweep(write({**ok, "method": "random", "parameters": {"a": {"min": 2, "max": 1}}}))
    with pytest.raises(LTBenchError, match="metric must be"):
        load_sweep(write({**ok, "metric": {"name": "val/acc", "goal": "max"}}))


def test_expansion_matches_wandbs_sweep_engine_when_installed():
    """W&B's own engine (PyPI `sweeps`, optional: it pins numpy<2) gives the same grid points."""
    sweeps = pytest.importorskip("sweeps")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in SWEEPS:
            spec = load_sweep(path)
            sweeps.SweepConfig(spec)  # W&B's JSON-schema validation
            if spec["method"] != "grid":
                continue
            runs = []
            while (r := sweeps.next_run(spec, runs)) is not None:
                r.state = sweeps.RunState.finished
                runs.append(r)
            theirs = sorted(tuple(sorted((k, v["value"]) for k, v in r.config.items())) for r in runs)
            assert theirs == sorted(tuple(sorted(p.items())) for p in expand_sweep(spec))


def test_a_suite_runs_a_sweep_offline_one_entry_per_point(tmp_path):
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    suite_file = bench / "s.yaml"
    sweep = REPO / "configs" / "sweeps" / "tde_alpha_lr_digits_lt.yaml"
    suite_file.write_text(yaml.safe_dump({"name": "s", "sweeps": [str(sweep)], "seeds": [0, 1], "run_dir": str(tmp_path / "runs")}))
    suite = Suite.load(suite_file)
    assert len(suite.entries) == 12 and len(suite.runs()) == 24
    e = suite.entries[0]
    assert e.label == "tde_digits_lt,alpha=0.5,lr=0.02" and e.config == REPO / "configs" / "tde_digits_lt.yaml"
    args = suite.run_args(e, 1)
    assert args[:2] == ["--config", str(e.config)] and "--model.init_args.alpha=0.5" in args and args[args.index("--name") + 1] == e.label
    assert Path(args[args.index("--config", 2) + 1]).is_file()  # the logger piece, resolved against the repository


RANDOM_SWEEP = REPO / "configs" / "sweeps" / "tde_alpha_lr_cifar100_lt_r100.yaml"


def _sweep_suite(tmp_path, sweep, **extra):
    bench = tmp_path / "benchmarks"
    bench.mkdir(exist_ok=True)
    path = bench / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "sweeps": [str(sweep)], "seeds": [0], **extra}))
    return Suite.load(path)


def _points(suite):
    return [dict(e.params) for e in suite.entries]


def test_suite_draws_sweep_count_points_seeded_by_sweep_seed(tmp_path):
    spec = load_sweep(RANDOM_SWEEP)
    three = _sweep_suite(tmp_path, RANDOM_SWEEP, sweep_count=3, sweep_seed=5)
    assert len(three.entries) == 3 and len(three.runs()) == 3
    assert _points(three) == expand_sweep(spec, 3, 5)
    assert _points(_sweep_suite(tmp_path, RANDOM_SWEEP, sweep_count=3, sweep_seed=5)) == _points(three)  # reproducible
    assert _points(_sweep_suite(tmp_path, RANDOM_SWEEP, sweep_count=3, sweep_seed=6)) != _points(three)
    for p in _points(three):
        assert 0.05 <= p["model.init_args.optimizer.lr"] <= 0.4 and p["model.init_args.alpha"] in [0.5 + 0.25 * i for i in range(11)]
    default = _sweep_suite(tmp_path, RANDOM_SWEEP)  # no sweep_count: run_cap draws; no sweep_seed: seed 0
    assert len(default.entries) == spec["run_cap"] == 16 and _points(default) == expand_sweep(spec, None, 0)
    grid = _sweep_suite(tmp_path, REPO / "configs" / "sweeps" / "tde_alpha_lr_digits_lt.yaml", sweep_count=5)
    assert len(grid.entries) == 5  # a grid's first sweep_count points


def test_bayes_sweep_is_drawn_at_random_offline(tmp_path):
    """W&B's bayes needs its server; offline the same spec gives the random search's seeded draws."""
    spec = load_sweep(RANDOM_SWEEP)
    command = [str(REPO / c) if str(c).startswith("configs/") else c for c in spec["command"]]
    files = {}
    for method in ("random", "bayes"):
        files[method] = tmp_path / f"{method}.yaml"
        files[method].write_text(yaml.safe_dump({**spec, "method": method, "command": command}))
    bayes = _sweep_suite(tmp_path, files["bayes"], sweep_count=4, sweep_seed=2)
    assert _points(bayes) == _points(_sweep_suite(tmp_path, files["random"], sweep_count=4, sweep_seed=2))
    assert len(bayes.entries) == 4 and _points(bayes) != _points(_sweep_suite(tmp_path, files["bayes"], sweep_count=4, sweep_seed=3))
    no_metric = tmp_path / "bayes_no_metric.yaml"
    no_metric.write_text(yaml.safe_dump({k: v for k, v in {**spec, "method": "bayes"}.items() if k != "metric"}))
    with pytest.raises(LTBenchError, match="a bayes sweep needs a metric"):
        load_sweep(no_metric)
