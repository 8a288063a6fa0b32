"""Suites: validation before running, resuming by record, shards, the default suite's coverage."""

import csv
import json

import pytest
import torch
import yaml

from ltbench.errors import LTBenchError
from ltbench.commands.leaderboard import main as leaderboard_main
from ltbench.suite import Resolver, Suite, is_done, parse_shard, plan, resolved_config, start_args
from tests.helpers import REPO

CE = REPO / "configs" / "ce_digits_lt.yaml"
LA = REPO / "configs" / "la_digits_lt.yaml"


def _suite_file(tmp_path, configs, **extra):
    bench = tmp_path / "benchmarks"
    bench.mkdir(parents=True, exist_ok=True)
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
    # a record made before an option existed (here the optimiser's `fused`, default None) still counts;
    # the same option set to a value it did not have does not
    cfg = json.loads(path.read_text())["config"]
    optimizer = cfg["model"]["init_args"]["optimizer"]
    assert "fused" in optimizer and optimizer.pop("fused") is None
    path.write_text(json.dumps({"metrics": {"acc": 0.5}, "config": cfg}))
    assert is_done(suite, entry, 0)
    fused = Suite.load(_suite_file(tmp_path, [CE], overrides=["--trainer.max_epochs", "2", "--model.init_args.optimizer.fused", "true"]))
    assert not is_done(fused, fused.entries[0], 0)
    path.write_text('{"metrics": {"acc": 0.')  # half-written: run again
    assert not is_done(suite, entry, 0)


def _attempt(suite, entry, seed, config=None, record=False):
    """A run directory as an attempt left it: config.yaml, a last checkpoint, a record if it finished."""
    run = suite.record_path(entry, seed).parent
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(yaml.safe_dump(config if config is not None else resolved_config(suite.run_args(entry, seed))))
    (run / "checkpoints" / "epoch=0-step=5.ckpt").write_bytes(b"full")
    (run / "checkpoints" / "last.ckpt").symlink_to("epoch=0-step=5.ckpt")
    if record:
        _fake_record(suite, entry, seed, config=config if config is not None else resolved_config(suite.run_args(entry, seed)))
    return run


def test_a_run_not_done_resumes_its_checkpoint_or_moves_a_run_of_another_config_aside(tmp_path):
    """fit refuses a directory holding a run, so the suite decides: resume it, or keep it aside and start afresh."""
    suite = Suite.load(_suite_file(tmp_path, [CE], overrides=["--trainer.max_epochs", "2"]))
    entry, resolver, said = suite.entries[0], Resolver(suite), []
    plain = suite.run_args(entry, 0)
    assert start_args(suite, entry, 0, resolver, said.append) == plain  # nothing there yet
    run = _attempt(suite, entry, 0)  # interrupted after a checkpoint, same config
    assert start_args(suite, entry, 0, resolver, said.append) == [*plain, "--ckpt_path", "last"]
    assert run.is_dir() and said[-1] == f"run ce_digits_lt seed 0: resuming from {run / 'checkpoints'}"
    (run / "checkpoints" / "last.ckpt").unlink()
    (run / "checkpoints" / "epoch=0-step=5.ckpt").unlink()  # leftovers from before the first checkpoint: no run
    assert start_args(suite, entry, 0, resolver, said.append) == plain and run.is_dir()
    # made with another protocol (2 epochs -> 3): kept beside, never resumed or overwritten
    changed = Suite.load(_suite_file(tmp_path, [CE], overrides=["--trainer.max_epochs", "3"]))
    (run / "config.yaml").unlink()
    _attempt(suite, entry, 0, record=True)
    assert not is_done(changed, changed.entries[0], 0)
    assert start_args(changed, changed.entries[0], 0, Resolver(changed), said.append) == changed.run_args(changed.entries[0], 0)
    aside = run.with_name("seed0.replaced-1")
    assert not run.exists() and (aside / "record.json").is_file() and (aside / "checkpoints" / "last.ckpt").exists()
    assert said[-1] == f"run ce_digits_lt seed 0: made with another config; moved to {aside}, running it afresh"
    _attempt(suite, entry, 0, config={"trainer": {"max_epochs": 7}})  # an interrupted run of another config
    start_args(changed, changed.entries[0], 0, Resolver(changed), said.append)
    assert not run.exists() and (run.with_name("seed0.replaced-2") / "checkpoints" / "last.ckpt").exists()


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


@pytest.mark.slow
def test_an_interrupted_suite_resumes_its_run_from_the_last_checkpoint(tmp_path, capsys):
    """SIGTERM after epoch 2 of 3 (checkpointed every epoch): the rerun trains only epoch 3, from the
    checkpoint, keeps one full checkpoint, and ends with the weights of an uninterrupted run."""
    common = ["--trainer.max_epochs=3", "--trainer.check_val_every_n_epoch=1", "--trainer.callbacks+=tests.helpers.SigtermAfterEpoch", "--trainer.callbacks.epoch=1"]
    stopped = _suite_file(tmp_path / "r", [CE], seeds=[0], overrides=[*common, "--trainer.callbacks.run_name=ce_digits_lt"])
    straight = _suite_file(tmp_path / "s", [CE], seeds=[0], overrides=[*common, "--trainer.callbacks.run_name=nobody"])
    with pytest.raises(SystemExit) as e:
        leaderboard_main([str(stopped)])
    assert e.value.code == 143
    run = tmp_path / "r" / "runs" / "ce_digits_lt" / "seed0"
    ckpts = run / "checkpoints"
    assert not (run / "record.json").exists() and (ckpts / "last.ckpt").resolve().name == "epoch=1-step=10.ckpt"
    # mark the finished epochs' rows: a resume keeps them (the log stays whole), a restart would write them anew
    with open(run / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames, [dict(r, **{"train/loss": "-1"}) if r.get("train/loss") else r for r in reader]
    with open(run / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    capsys.readouterr()
    assert leaderboard_main([str(stopped)]) == 0
    assert f"run ce_digits_lt seed 0: resuming from {ckpts}" in capsys.readouterr().out
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    losses = [(int(row["epoch"]), row["train/loss"]) for row in rows if row.get("train/loss")]
    assert [int(row["epoch"]) for row in rows if row.get("val/acc")] == [0, 1, 2]  # each epoch's validation once
    assert {e for e, _ in losses} == {0, 1, 2}
    assert all((loss == "-1") == (e < 2) for e, loss in losses)  # epochs 0-1 kept from before, only epoch 2 trained now
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch=2-step=15.ckpt", "last.ckpt", "weights.ckpt"]
    assert (ckpts / "last.ckpt").is_symlink() and (ckpts / "last.ckpt").resolve() == ckpts / "epoch=2-step=15.ckpt"
    assert leaderboard_main([str(straight)]) == 0
    other = tmp_path / "s" / "runs" / "ce_digits_lt" / "seed0"
    a = torch.load(ckpts / "weights.ckpt", weights_only=True)["state_dict"]
    b = torch.load(other / "checkpoints" / "weights.ckpt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    records = [json.loads((d / "record.json").read_text()) for d in (run, other)]
    assert records[0]["metrics"] == records[1]["metrics"]


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


@pytest.mark.slow
def test_parallel_suite_workers_write_the_records_of_a_serial_suite(tmp_path):
    """--jobs 2 spreads runs over two worker processes; each run's numbers are those of a serial suite."""
    serial = _suite_file(tmp_path / "serial", [CE, LA], overrides=["--trainer.max_epochs", "2"], seeds=[0])
    parallel = _suite_file(tmp_path / "parallel", [CE, LA], overrides=["--trainer.max_epochs", "2"], seeds=[0])
    assert leaderboard_main([str(serial)]) == 0
    assert leaderboard_main([str(parallel), "--jobs", "2"]) == 0
    for name in ("ce_digits_lt", "la_digits_lt"):
        a = json.loads((tmp_path / "serial" / "runs" / name / "seed0" / "record.json").read_text())
        b = json.loads((tmp_path / "parallel" / "runs" / name / "seed0" / "record.json").read_text())
        assert a["metrics"] == b["metrics"] and a["per_class"] == b["per_class"], name
