"""End to end through the ``ltbench`` CLI on Digits-LT, in-process as a user would run it."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from ltbench.cli import main
from ltbench.errors import LTBenchError, user_error
from ltbench.runner import run
from tests.helpers import CE_DIGITS, REPO

QUIET = ["--trainer.enable_progress_bar", "false"]
pytestmark = pytest.mark.slow


def _fit(tmp_path, *extra, config=CE_DIGITS):
    return run(["fit", "--config", config, "--run_dir", str(tmp_path), *QUIET, *extra])


def _record(cli) -> dict:
    return json.loads(Path(cli.model.record_path).read_text())


def test_fit_then_test_writes_a_complete_record(tmp_path):
    cli = _fit(tmp_path, "--trainer.max_epochs", "6", "--seed_everything", "3")
    rec = _record(cli)
    assert Path(cli.model.record_path) == tmp_path / "CrossEntropy-DigitsLT" / "seed3" / "record.json"
    assert rec["method"] == "CrossEntropy" and rec["dataset"] == "DigitsLT" and rec["seed"] == 3
    proto = rec["protocol"]
    for key in ("split", "subset_sha256", "group_rule", "backbone", "pretrained", "input_size", "epochs", "imb_ratio"):
        assert key in proto, key
    assert proto["epochs"] == 6 and proto["input_size"] == 8 and proto["group_sizes"] == {"many": 1, "medium": 3, "few": 6}
    m = rec["metrics"]
    assert set(m) == {"acc", "acc_many", "acc_medium", "acc_few"}
    assert 0.2 < m["acc"] <= 1.0  # at least twice the 10% of chance after 6 epochs
    per_class = rec["per_class"]["score"]
    assert len(per_class) == 10 and rec["per_class"]["train_counts"][0] == 120
    assert m["acc_many"] == pytest.approx(per_class[0])
    assert m["acc_few"] == pytest.approx(sum(per_class[4:]) / 6)
    assert rec["num_test_samples"] == rec["test_split_size"] == 500 and rec["partial_test"] is False
    assert rec["throughput"]["train_images_per_s"] > 0
    assert rec["config"]["model"]["class_path"] == "ltbench.methods.CrossEntropy"
    assert rec["config"]["trainer"]["max_epochs"] == 6
    assert {"torch", "lightning", "ltbench"} <= set(rec["versions"])
    assert "commit" in rec["git"]
    assert not list(Path(cli.model.record_path).parent.glob(".*.tmp"))


def test_limited_test_run_is_recorded_as_partial_and_records_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        cli = _fit(tmp_path, "--trainer.max_epochs", "1", "--trainer.limit_test_batches", "2", "--data.init_args.eval_batch_size", "8")
    finally:
        os.umask(old)
    rec = _record(cli)
    assert (rec["num_test_samples"], rec["test_split_size"], rec["partial_test"]) == (16, 500, True)
    assert Path(cli.model.record_path).stat().st_mode & 0o777 == 0o644


def test_same_seed_same_numbers_in_another_process(tmp_path):

    a = _record(_fit(tmp_path / "a", "--trainer.max_epochs", "3", "--seed_everything", "1"))
    proc = subprocess.run(
        [sys.executable, "-m", "ltbench.cli", "fit", "--config", CE_DIGITS, "--run_dir", str(tmp_path / "b"), *QUIET, "--trainer.max_epochs", "3", "--seed_everything", "1"],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    b = json.loads((tmp_path / "b" / "CrossEntropy-DigitsLT" / "seed1" / "record.json").read_text())
    c = _record(_fit(tmp_path / "c", "--trainer.max_epochs", "3", "--seed_everything", "2"))
    assert a["metrics"] == b["metrics"] and a["per_class"] == b["per_class"]
    assert a["protocol"]["subset_sha256"] == c["protocol"]["subset_sha256"]  # the split is fixed by subset_seed
    assert a["per_class"] != c["per_class"]


@pytest.mark.parametrize("stop_epoch,stage", [(0, 0), (2, 1)], ids=["stop-in-stage-1", "stop-in-stage-2"])
def test_interrupted_multi_stage_run_resumes_to_the_same_result(tmp_path, stop_epoch, stage):
    """A stop at any epoch of any stage resumes bit-identically (the stage-2 re-init included)."""
    crt = ["--config", str(REPO / "configs" / "crt_digits_lt.yaml"), "--model.init_args.representation_epochs", "2", "--model.init_args.crt_epochs", "2", "--trainer.max_epochs", "4"]
    straight = run(["fit", *crt, "--run_dir", str(tmp_path / "s"), *QUIET])
    stopped = run(["fit", *crt, "--run_dir", str(tmp_path / "r"), *QUIET, "--test_after_fit", "false", "--trainer.callbacks+=tests.helpers.StopAfterEpoch", "--trainer.callbacks.epoch", str(stop_epoch)])
    assert stopped.trainer.current_epoch == stop_epoch + 1 and stopped.model.entered_stage == stage
    assert not (tmp_path / "r" / "CRT-DigitsLT" / "seed0" / "record.json").exists()
    resumed = run(["fit", *crt, "--run_dir", str(tmp_path / "r"), *QUIET, "--ckpt_path", "last"])
    ckpts = tmp_path / "r" / "CRT-DigitsLT" / "seed0" / "checkpoints"
    full = [p.name for p in ckpts.iterdir() if not p.is_symlink() and p.name != "weights.ckpt"]
    assert full == ["epoch=3-step=20.ckpt"] and sorted(p.name for p in ckpts.iterdir()) == [*full, "last.ckpt", "weights.ckpt"]
    assert (ckpts / "last.ckpt").resolve() == ckpts / full[0]  # the resume left no second full checkpoint
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert _record(straight)["metrics"] == _record(resumed)["metrics"]


def test_a_run_resumed_with_loader_workers_ends_bit_identical(tmp_path):
    """Worker processes draw their first indices as the loader's first iterator starts: that iterator must
    be made after the resumed epoch is known, or the resumed epoch trains on epoch 0's sample order."""
    ce = ["--config", CE_DIGITS, *QUIET, "--data.init_args.num_workers", "2", "--trainer.max_epochs", "3"]
    straight = run(["fit", *ce, "--run_dir", str(tmp_path / "s")])
    run(["fit", *ce, "--run_dir", str(tmp_path / "r"), "--test_after_fit", "false", "--trainer.callbacks+=tests.helpers.StopAfterEpoch", "--trainer.callbacks.epoch", "0"])
    resumed = run(["fit", *ce, "--run_dir", str(tmp_path / "r"), "--ckpt_path", "last"])
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


def test_a_second_fit_into_a_run_directory_refuses_and_leaves_the_run(tmp_path, capsys):
    """Without --ckpt_path, fit into a directory holding a run would retrain it and replace its record."""
    first = _fit(tmp_path, "--trainer.max_epochs", "1")
    run_dir = Path(first.trainer.log_dir)
    before = {p.relative_to(run_dir): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}
    assert Path("record.json") in before and Path("checkpoints/last.ckpt") in before
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", CE_DIGITS, "--run_dir", str(tmp_path), *QUIET, "--trainer.max_epochs", "1"])
    assert e.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == (
        f"ltbench: error: fit: {run_dir} already holds a finished run (record.json, checkpoints/last.ckpt); give another "
        f"--version (or --name, --run_dir) for a new run beside it, --ckpt_path last to continue it, or remove {run_dir} to redo it"
    )
    assert {p.relative_to(run_dir): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()} == before
    # what an attempt writes before its first checkpoint is no run: fit goes ahead there
    early = tmp_path / "early"
    leftovers = early / "CrossEntropy-DigitsLT" / "seed0"
    leftovers.mkdir(parents=True)
    for name in ("config.yaml", "metrics.csv", "hparams.yaml"):
        (leftovers / name).write_text((run_dir / name).read_text())
    assert Path(_fit(early, "--trainer.max_epochs", "1").model.record_path) == leftovers / "record.json"


def test_nan_loss_is_one_clear_error(tmp_path):
    with pytest.raises(LTBenchError, match="non-finite training loss .* lower model.init_args.optimizer.lr"):
        _fit(tmp_path, "--model", "tests.helpers.NaNAfterSteps", "--model.init_args.backbone", "tiny_cnn", "--trainer.log_every_n_steps", "1")


def test_no_checkpoint_is_saved_from_a_non_finite_state(tmp_path):
    """The loss turns NaN in epoch 2 between logging steps: the epoch-end save is refused, last.ckpt stays finite."""
    with pytest.raises(LTBenchError, match="non-finite weights or training loss at epoch 1.*no checkpoint saved"):
        _fit(tmp_path, "--model", "tests.helpers.NaNAfterSteps", "--model.init_args.backbone", "tiny_cnn", "--model.init_args.nan_after", "7", "--trainer.log_every_n_steps", "100", "--trainer.max_epochs", "3")
    ckpt = torch.load(tmp_path / "NaNAfterSteps-DigitsLT" / "seed0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 0 and all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_missing_checkpoint_and_unknown_backbone_end_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["test", "--config", CE_DIGITS, "--run_dir", str(tmp_path), *QUIET, "--ckpt_path", str(tmp_path / "missing.ckpt")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ltbench: error: Checkpoint file not found") and "missing.ckpt" in err[-1]
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", CE_DIGITS, "--run_dir", str(tmp_path), "--model.init_args.backbone", "resnet33_cifar"])
    assert e.value.code == 2
    assert "unknown backbone 'resnet33_cifar'" in capsys.readouterr().err.strip().splitlines()[-1]


def test_missing_dataset_names_the_expected_path(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(REPO / "configs" / "ce_cifar10_lt.yaml"), "--data.init_args.root", str(tmp_path / "nowhere")])
    assert e.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("ltbench: error: CIFAR-10 folder missing: expected " + str(tmp_path / "nowhere" / "cifar-10-batches-py"))


def test_user_error_finds_the_cause():
    try:
        try:
            raise LTBenchError("x.txt:3: bad line")
        except LTBenchError as inner:
            raise ValueError("wrapped") from inner
    except ValueError as outer:
        assert user_error(outer) == "x.txt:3: bad line"
    assert user_error(RuntimeError("other")) is None


def test_two_process_evaluation_equals_one_process(tmp_path):
    """Test on 2 CPU processes (gloo) gives the numbers of 1: padded duplicates are not counted."""
    trained = _fit(tmp_path, "--trainer.max_epochs", "2", "--test_after_fit", "false")
    ckpt = str(Path(trained.trainer.log_dir) / "checkpoints" / "last.ckpt")
    common = ["test", "--config", CE_DIGITS, "--ckpt_path", ckpt, "--run_dir", str(tmp_path), *QUIET, "--data.init_args.eval_batch_size", "37"]
    one = _record(run([*common, "--version", "one"]))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "ltbench.cli", *common, "--version", "two", "--trainer.devices", "2", "--trainer.strategy", "ddp"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sync_dist" not in proc.stderr  # test/ scalars come from torchmetrics, already reduced
    two = json.loads((tmp_path / "CrossEntropy-DigitsLT" / "two" / "record.json").read_text())
    assert two["throughput"] == one["throughput"]
    assert two["num_test_samples"] == one["num_test_samples"] == 500
    assert two["metrics"] == pytest.approx(one["metrics"], abs=1e-7)
    assert two["per_class"]["score"] == pytest.approx(one["per_class"]["score"], abs=1e-7)


def test_validate_and_predict_subcommands(tmp_path):
    trained = _fit(tmp_path, "--trainer.max_epochs", "1", "--test_after_fit", "false")
    ckpt = str(Path(trained.trainer.log_dir) / "checkpoints" / "last.ckpt")
    val = run(["validate", "--config", CE_DIGITS, "--ckpt_path", ckpt, "--run_dir", str(tmp_path), *QUIET, "--version", "val"])
    assert {"val/acc", "val/acc_many", "val/acc_medium", "val/acc_few"} <= set(val.trainer.callback_metrics)
    pred = run(["predict", "--config", CE_DIGITS, "--ckpt_path", ckpt, "--run_dir", str(tmp_path), *QUIET, "--version", "pred"])
    batches = pred.trainer.predict_loop.predictions
    index = torch.cat([b["index"] for b in batches])
    scores = torch.cat([b["scores"] for b in batches])
    assert index.tolist() == list(range(500)) and scores.shape == (500, 10)
    assert torch.allclose(scores.sum(1), torch.ones(500), atol=1e-5)


def test_test_time_overrides_win_over_checkpoint_hyperparameters(tmp_path, capsys):
    """`ltbench test --ckpt_path X --model.init_args.tau V` evaluates with V (post-hoc LA needs no retraining)."""
    la = str(REPO / "configs" / "la_digits_lt.yaml")
    trained = run(["fit", "--config", la, "--run_dir", str(tmp_path), *QUIET, "--trainer.max_epochs", "2", "--test_after_fit", "false"])
    ckpt = str(Path(trained.trainer.log_dir) / "checkpoints" / "last.ckpt")
    common = ["test", "--config", la, "--ckpt_path", ckpt, "--run_dir", str(tmp_path), *QUIET]
    plain = run([*common, "--version", "tau0", "--model.init_args.tau", "0"])
    adjusted = run([*common, "--version", "tau2", "--model.init_args.tau", "2"])
    assert plain.model.tau == 0 and adjusted.model.tau == 2
    assert _record(plain)["metrics"] != _record(adjusted)["metrics"]
    assert _record(adjusted)["config"]["model"]["init_args"]["tau"] == 2
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main([*common, "--version", "wrong", "--model", "ltbench.methods.CosineClassifier", "--model.init_args.backbone", "tiny_cnn"])
    assert e.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == f"ltbench: error: checkpoint {ckpt} was trained by ltbench.methods.LogitAdjustment, but the config's model is ltbench.methods.CosineClassifier"


def test_logger_false_still_writes_into_the_run_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = _fit(tmp_path / "runs", "--trainer.max_epochs", "1", "--trainer.logger", "false")
    run_dir = tmp_path / "runs" / "CrossEntropy-DigitsLT" / "seed0"
    assert Path(cli.model.record_path) == run_dir / "record.json"
    assert (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


def test_testing_a_trained_run_writes_its_own_record_beside_the_training_one(tmp_path):
    trained = _fit(tmp_path, "--trainer.max_epochs", "1")
    run_dir = Path(trained.trainer.log_dir)
    before = {f: (run_dir / f).read_bytes() for f in ("record.json", "config.yaml")}
    test = ["test", "--config", CE_DIGITS, "--run_dir", str(tmp_path), *QUIET, "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt")]
    a = run([*test, "--data.init_args.imb_ratio", "10"])
    b = run(test)
    assert {f: (run_dir / f).read_bytes() for f in before} == before  # the training run's files are untouched
    paths = {Path(a.model.record_path), Path(b.model.record_path)}
    assert len(paths) == 2 and all(p.parent.parent == run_dir and p.parent.name.startswith("test-last-") for p in paths)
    assert _record(a)["protocol"]["imb_ratio"] == 10 and _record(a)["checkpoint"].endswith("last.ckpt")
    assert (Path(a.model.record_path).parent / "config.yaml").is_file()
    assert Path(run([*test, "--data.init_args.imb_ratio", "10"]).model.record_path) == Path(a.model.record_path)  # same test, same place


def test_a_wandb_agent_point_gets_the_run_directory_a_suite_gives_it(tmp_path, monkeypatch):
    """Under `wandb agent` (its env: sweep id, parameter file) a point is named from its parameters as in a suite."""
    from ltbench.suite import Suite

    params = tmp_path / "config-abc.yaml"
    params.write_text("wandb_version: 1\n\nmodel.init_args.alpha:\n  value: 1.5\nmodel.init_args.optimizer.lr:\n  value: 0.05\n")
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc")
    monkeypatch.setenv("WANDB_SWEEP_PARAM_PATH", str(params))
    tde = str(REPO / "configs" / "tde_digits_lt.yaml")
    cli = run(["--config", tde, "--model.init_args.alpha=1.5", "--model.init_args.optimizer.lr=0.05", "--run_dir", str(tmp_path)], run=False)
    labels = [e.label for e in Suite.load(REPO / "benchmarks" / "sweep_tde_digits.yaml").entries]
    assert Path(cli.trainer.log_dir) == tmp_path / "tde_digits_lt,alpha=1.5,lr=0.05" / "seed0"
    assert "tde_digits_lt,alpha=1.5,lr=0.05" in labels and len(set(labels)) == 12


def test_one_full_checkpoint_a_link_and_small_evaluated_weights(tmp_path):
    """Resuming needs one full checkpoint (last.ckpt links to it); test/predict take the weights-only file."""
    cli = _fit(tmp_path, "--trainer.max_epochs", "2")
    ckpts = Path(cli.trainer.log_dir) / "checkpoints"
    full = [p for p in ckpts.iterdir() if not p.is_symlink() and p.name != "weights.ckpt"]
    assert len(full) == 1, sorted(p.name for p in ckpts.iterdir())
    assert (ckpts / "last.ckpt").is_symlink() and (ckpts / "last.ckpt").resolve() == full[0].resolve()
    weights = ckpts / "weights.ckpt"
    assert weights.stat().st_size < 0.7 * full[0].stat().st_size
    saved = torch.load(weights, weights_only=True, map_location="cpu")
    assert "optimizer_states" not in saved and "callbacks" not in saved
    for k, v in cli.model.state_dict().items():
        assert torch.equal(v, saved["state_dict"][k]), k
    rec = _record(cli)
    assert rec["weights"] == str(weights)
    again = run(["test", "--config", CE_DIGITS, "--ckpt_path", str(weights), "--run_dir", str(tmp_path), *QUIET, "--version", "w"])
    assert _record(again)["metrics"] == rec["metrics"]
    pred = run(["predict", "--config", CE_DIGITS, "--ckpt_path", str(weights), "--run_dir", str(tmp_path), *QUIET, "--version", "p"])
    assert sum(len(b["index"]) for b in pred.trainer.predict_loop.predictions) == 500


def test_the_latest_checkpoint_follows_training_not_the_validation_cadence(tmp_path):
    """cpu_small validates every 5 epochs: a 7-epoch run's last.ckpt is still epoch 6's (a resume loses
    nothing); a checkpoint that ranks by a validation metric, or a user's own setting, is left alone."""
    cli = _fit(tmp_path, "--trainer.max_epochs", "7")
    assert (Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt").resolve().name == "epoch=6-step=35.ckpt"
    assert cli.trainer.checkpoint_callback._save_on_train_epoch_end is True
    ranked = _fit(tmp_path, "--trainer.max_epochs", "1", "--version", "ranked", "--checkpoint.monitor", "val/acc", "--checkpoint.mode", "max")
    assert ranked.trainer.checkpoint_callback._save_on_train_epoch_end is None
    own = _fit(tmp_path, "--trainer.max_epochs", "1", "--version", "own", "--checkpoint.save_on_train_epoch_end", "false")
    assert own.trainer.checkpoint_callback._save_on_train_epoch_end is False


def test_a_run_prints_its_table_in_percent_and_none_of_the_known_noise(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "ltbench.cli", "fit", "--config", CE_DIGITS, "--run_dir", str(tmp_path), *QUIET, "--trainer.max_epochs", "2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    rec = json.loads(next(tmp_path.rglob("record.json")).read_text())
    lines = out[out.index("test (%)"):].splitlines()[1:5]
    expected = [("overall", "acc"), ("many", "acc_many"), ("medium", "acc_medium"), ("few", "acc_few")]
    assert [line.split() for line in lines] == [[label, f"{100 * rec['metrics'][key]:.2f}"] for label, key in expected]
    for noise in ("tensorboardX", "Tip: For seamless", "LeafSpec", "args parameter is intended", "Test metric"):
        assert noise not in out, noise


def test_sigterm_ends_fit_non_zero_with_where_it_stopped_and_how_to_resume(tmp_path):
    """A real SIGTERM from outside (as a scheduler sends it) once the first epoch is checkpointed."""
    cmd = [sys.executable, "-m", "ltbench.cli", "fit", "--config", CE_DIGITS, "--run_dir", str(tmp_path), *QUIET, "--trainer.max_epochs", "1000"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = tmp_path / "CrossEntropy-DigitsLT" / "seed0" / "checkpoints" / "last.ckpt"
    try:
        deadline = time.monotonic() + 120
        while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-3000:]
    line = err.strip().splitlines()[-1]
    assert re.fullmatch(r"ltbench: fit stopped by SIGTERM after \d+ completed epochs \(step \d+\) of \S+seed0; resume with the same command and --ckpt_path last \(from \S+last\.ckpt\)", line), line
    assert not (last.parent.parent / "record.json").exists()


def test_sigterm_stops_a_suite_non_zero_saying_which_runs_are_done(tmp_path, capsys):
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    suite = {
        "name": "s", "configs": [CE_DIGITS, str(REPO / "configs" / "la_digits_lt.yaml")], "seeds": [0],
        "run_dir": str(tmp_path / "runs"), "output": str(tmp_path / "board"),
        "overrides": ["--trainer.max_epochs=2", "--trainer.callbacks+=tests.helpers.SigtermAfterEpoch", "--trainer.callbacks.run_name=la_digits_lt"],
    }  # fmt: skip
    (bench / "s.yaml").write_text(yaml.safe_dump(suite))
    with pytest.raises(SystemExit) as e:
        main(["leaderboard", str(bench / "s.yaml")])
    assert e.value.code == 143
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.fullmatch(r"ltbench leaderboard: suite s: fit stopped by SIGTERM after 1 completed epochs \(step 5\) of \S+la_digits_lt/seed0; 1 of 2 runs recorded \(ce_digits_lt seed 0\); run the same command again to resume", line), line
    assert "| ce_digits_lt |" in (tmp_path / "board" / "leaderboard.md").read_text()
    assert not (tmp_path / "runs" / "la_digits_lt" / "seed0" / "record.json").exists()


def test_the_console_script_exits_zero_on_success(tmp_path):
    """`ltbench fit` and `ltbench tde-alpha-sweep` as the installed script runs them (sys.exit(main())): status 0,
    no object printed; in-process callers still get the subcommand's result. The script keeps its imports'
    objects out of garbage collection (gc.freeze); an in-process caller's objects are left alone."""
    script = ("import atexit, gc, sys; atexit.register(lambda: print('frozen objects', gc.get_freeze_count(), file=sys.stderr)); "
              "from ltbench.cli import main; sys.argv[0] = 'ltbench'; sys.exit(main())")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    tde = str(REPO / "configs" / "tde_digits_lt.yaml")
    fit = [sys.executable, "-c", script, "fit", "--config", tde, "--run_dir", str(tmp_path), *QUIET, "--trainer.max_epochs", "1"]
    proc = subprocess.run(fit, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "object at 0x" not in proc.stderr, proc.stderr[-2000:]
    assert int(re.search(r"frozen objects (\d+)", proc.stderr).group(1)) > 100_000
    import gc

    frozen = gc.get_freeze_count()
    main(["fit", "--config", tde, "--run_dir", str(tmp_path / "in_process"), *QUIET, "--trainer.max_epochs", "1"])
    assert gc.get_freeze_count() == frozen
    ckpt = next(tmp_path.rglob("last.ckpt"))
    sweep = [sys.executable, "-c", script, "tde-alpha-sweep", "--config", tde, "--ckpt_path", str(ckpt), "--alphas", "0", "--run_dir", str(tmp_path / "a")]
    proc = subprocess.run(sweep, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "{'alpha'" not in proc.stderr, proc.stderr[-2000:]


def test_runs_of_one_method_on_different_datasets_get_their_own_folders():
    """The run name follows the dataset, not a generic data class: testing one checkpoint on ten
    TorchvisionSet targets must not write ten records into one folder."""
    from ltbench.rundirs import data_name, default_name

    tv = {"class_path": "ltbench.data.TorchvisionSet", "init_args": {"name": "DTD", "root": "data"}}
    assert default_name("ltbench.methods.CDC", tv, []) == "CDC-DTD"
    assert data_name({"class_path": "ltbench.data.BaseToNew", "init_args": {"shots": 16, "data": tv}}) == "BaseToNew-DTD"
    assert data_name({"class_path": "ltbench.data.DigitsLT", "init_args": {"imb_ratio": 100}}) == "DigitsLT"
    assert data_name({"class_path": "ltbench.data.ImageNetVariant", "init_args": {"name": "ImageNetR"}}) == "ImageNetR"
