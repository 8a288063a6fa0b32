"""Suites: validation before running, resuming by record, shards, the default suite's coverage."""

import json

import pytest
import yaml

from ltbench.errors import LTBenchError
from ltbench.commands.leaderboard import main as leaderboard_main
from ltbench.suite import Resolver, Suite, is_done, parse_shard, plan, resolved_config
from tests.helpers import REPO

CE = REPO / "configs" / "ce_digits_lt.yaml"
LA = REPO / "configs" / "la_digits_lt.yaml"


def _suite_file(tmp_path, configs, **extra):
    bench = tmp_path / "benchmarks"
    bench.mkdir(exist_ok=True)
    path = bench / "s.yaml"
    body = {"name": "s", "configs": [str(c) for c in configs], "seeds": [0, 1], "run_dir": str(tmp_path / "runs"), "output": str(tmp_path / "board"), **extra}
    path.write_text(json.dumps(body))
    return path


def test_missing_config_fails_before_anything_runs(tmp_path):
    path = _suite_file(tmp_path, [CE, tmp_path / "nope.yaml"])
    with pytest.raises(LTBenchError, match="config\\(s\\) not found: .*nope.yaml"):
        Suite.load(path)
    assert leaderboard_main([str(path)]) == 2
    assert not (tmp_path / "runs").exists() and not (tmp_path / "board").exists()
    with pytest.raises(LTBenchError, match="unknown key\\(s\\) seed"):
        Suite.load(_suite_file(tmp_path, [], seed=1))
    with pytest.raises(LTBenchError, match="sweep file\\(s\\) not found"):
        Suite.load(_suite_file(tmp_path, [CE], sweeps=["configs/sweeps/nope.yaml"]))
    with pytest.raises(LTBenchError, match="appear twice"):
        Suite.load(_suite_file(tmp_path, [CE, CE]))
    with pytest.raises(LTBenchError, match="seeds must be"):
        Suite.load(_suite_file(tmp_path, [CE], seeds=[]))


def test_a_config_that_does_not_parse_fails_before_anything_runs(tmp_path):
    bad = tmp_path / "bad_digits_lt.yaml"
    bad.write_text(CE.read_text() + "\nmodel_typo: 1\n")
    suite = Suite.load(_suite_file(tmp_path, [CE, bad]))
    with pytest.raises(LTBenchError, match="config .*bad_digits_lt.yaml does not parse"):
        plan(suite)
    assert not (tmp_path / "runs").exists()


def _fake_record(suite, entry, seed, config=None):
    path = suite.record_path(entry, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = config if config is not None else resolved_config(suite.run_args(entry, seed))
    path.write_text(json.dumps({"metrics": {"acc": 0.5}, "config": cfg}))
    return path


def test_a_run_is_done_when_its_record_holds_the_same_resolved_config(tmp_path):
    suite = Suite.load(_suite_file(tmp_path, [CE], overrides=["--trainer.max_epochs", "2"]))
    entry = suite.entries[0]
    assert not is_done(suite, entry, 0)
    path = _fake_record(suite, entry, 0)
    assert is_done(suite, entry, 0) and is_done(suite, CE, 0)  # by entry or by config path
    resolver = Resolver(suite)
    assert resolver(entry, 1)["seed_everything"] == 1 and is_done(suite, entry, 0, resolver)
    # the record of another seed, or of another protocol, is not this run
    _fake_record(suite, entry, 1, config=json.loads(path.read_text())["config"])
    assert not is_done(suite, entry, 1)
    changed = Suite.load(_suite_file(tmp_path, [CE], overrides=["--trainer.max_epochs", "3"]))
    assert not is_done(changed, changed.entries[0], 0)
    # where the run is logged does not matter
    logged = Suite.load(_suite_file(tmp_path, [CE], overrides=["--trainer.max_epochs", "2", "--config", str(REPO / "configs" / "logger" / "wandb.yaml")]))
    assert is_done(logged, logged.entries[0], 0)
    path.write_text('{"metrics": {"acc": 0.')  # half-written: run again
    assert not is_done(suite, entry, 0)


def test_shards_split_the_runs_between_machines(tmp_path):
    assert parse_shard("1/3") == (1, 3) and parse_shard(None) is None
    for bad in ("3/3", "x", "1/0", "-1/2"):
        with pytest.raises(LTBenchError, match="--shard"):
            parse_shard(bad)
    suite = Suite.load(_suite_file(tmp_path, [CE, LA], seeds=[0, 1, 2]))
    _fake_record(suite, suite.entries[0], 0)
    shares = [plan(suite, (i, 2)) for i in range(2)]
    mine = [set((e.label, s) for e, s in m) for m, _ in shares]
    assert mine[0].isdisjoint(mine[1]) and mine[0] | mine[1] == {(e.label, s) for e, s in suite.runs()}
    assert {len(m) for m in mine} == {3}
    todo = [t for _, t in shares]
    assert sum(len(t) for t in todo) == 5  # ce seed 0 is recorded already


def test_default_suite_covers_every_digits_config_with_three_seeds():
    suite = Suite.load(REPO / "benchmarks" / "default.yaml")
    assert suite.seeds == [0, 1, 2]
    named = {c.name for c in suite.configs}
    existing = {p.name for pattern in ("*_digits_lt.yaml", "*_digits_ml_lt.yaml", "*_digits_b2n.yaml") for p in (REPO / "configs").glob(pattern)}
    assert existing <= named, f"configs missing from benchmarks/default.yaml: {sorted(existing - named)}"
    for path in (REPO / "benchmarks").glob("*.yaml"):
        Suite.load(path)  # every suite file names configs and sweeps that exist
    full = yaml.safe_load((REPO / "benchmarks" / "cifar100_lt.yaml").read_text())
    assert full["seeds"] and all((REPO / c).is_file() for c in full["configs"])


@pytest.mark.slow
def test_suite_runs_missing_runs_once_resumes_and_renders(tmp_path, capsys):
    path = _suite_file(tmp_path, [CE], overrides=["--trainer.max_epochs", "2"])
    assert leaderboard_main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 runs, 0 already recorded, 2 to run" in out
    board = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "| ce_digits_lt | ltbench | 2 |" in board
    assert (tmp_path / "board" / "leaderboard.csv").read_text().count("ce_digits_lt") == 4
    assert "<svg" in (tmp_path / "board" / "leaderboard.html").read_text()
    assert leaderboard_main([str(path)]) == 0
    assert "2 runs, 2 already recorded, 0 to run" in capsys.readouterr().out
    # an interrupted suite (one record never written) runs only what is missing
    record = tmp_path / "runs" / "ce_digits_lt" / "seed1" / "record.json"
    record.unlink()
    assert leaderboard_main([str(path)]) == 0
    assert "2 runs, 1 already recorded, 1 to run" in capsys.readouterr().out and record.is_file()
    # a changed protocol is a different run
    path = _suite_file(tmp_path, [CE], overrides=["--trainer.max_epochs", "1"])
    assert leaderboard_main([str(path), "--render-only"]) == 0
    assert not is_done(Suite.load(path), CE, 0)


def test_a_failing_run_does_not_stop_the_others_and_the_command_exits_1(tmp_path, monkeypatch, capsys):
    """The runner's own loop, with each run replaced by a stub (configs still parse for real)."""
    import ltbench.runner

    real_run, attempted = ltbench.runner.run, []

    def run(args, **kwargs):
        if "--print_config" in args:
            return real_run(args, **kwargs)
        name, seed = args[args.index("--name") + 1], int(args[args.index("--seed_everything") + 1])
        attempted.append((name, seed))
        if (name, seed) == ("ce_digits_lt", 0):
            raise LTBenchError("digits_lt.npz:3: broken on purpose")
        if (name, seed) == ("la_digits_lt", 0):
            raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(ltbench.runner, "run", run)
    path = _suite_file(tmp_path, [CE, LA])
    assert leaderboard_main([str(path)]) == 1
    assert attempted == [("ce_digits_lt", 0), ("ce_digits_lt", 1), ("la_digits_lt", 0), ("la_digits_lt", 1)]
    captured = capsys.readouterr()
    assert "run ce_digits_lt seed 0 failed: digits_lt.npz:3: broken on purpose" in captured.out
    last = captured.err.strip().splitlines()[-1]
    assert last == "2 run(s) failed: ce_digits_lt seed 0: digits_lt.npz:3: broken on purpose; la_digits_lt seed 0: RuntimeError: CUDA out of memory"
    assert (tmp_path / "board" / "leaderboard.md").is_file()  # the board is still rendered
