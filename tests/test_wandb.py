"""The W&B logger piece: offline by default, no model upload, usable with any run by one --config,
and a second run in the same directory (a resume) neither crashes nor moves the run's files."""

from pathlib import Path

import pytest
import yaml
from lightning.pytorch.loggers import WandbLogger

from ltbench.run_log import RunCSVLogger
from ltbench.runner import run
from ltbench.suite import resolved_config
from tests.helpers import CE_DIGITS, REPO

WANDB = str(REPO / "configs" / "logger" / "wandb.yaml")
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.max_epochs", "1"]


def test_piece_is_offline_without_model_upload():
    logger = yaml.safe_load(Path(WANDB).read_text())["trainer"]["logger"]
    assert logger["class_path"] == "lightning.pytorch.loggers.WandbLogger"
    args = logger["init_args"]
    assert args["offline"] is True and args["log_model"] is False
    assert args["project"] == "ltbench" and "entity" in args


def test_piece_composes_with_any_config():
    for cfg in ("ce_digits_lt", "tde_cifar100_lt_r100", "asl_digits_ml_lt"):
        cli = resolved_config(["--config", str(REPO / "configs" / f"{cfg}.yaml"), "--config", WANDB])
        assert cli["trainer"]["logger"]["class_path"].endswith("WandbLogger")
        assert cli["trainer"]["max_epochs"] > 1  # the run's own trainer settings survive the piece


@pytest.mark.slow
def test_two_runs_in_one_directory_keep_their_files_in_the_run_directory(tmp_path, monkeypatch):
    import wandb

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WANDB_MODE", raising=False)  # the piece's own offline mode; restored after the test
    monkeypatch.setenv("WANDB_SILENT", "true")
    save_dir = tmp_path / "wandb_logs"
    args = ["fit", "--config", CE_DIGITS, "--config", WANDB, *QUIET, "--run_dir", str(tmp_path / "runs"), "--trainer.logger.init_args.save_dir", str(save_dir)]
    clis = []
    # the second run is the first's resumed in its directory (fit refuses a fresh run over a finished one)
    for extra in ([], ["--ckpt_path", "last"], ["--seed_everything", "1"]):
        cli = run([*args, *extra])
        wandb.finish()
        clis.append(cli)
    for cli, version in zip(clis, ("seed0", "seed0", "seed1")):
        assert [type(lg) for lg in cli.trainer.loggers] == [RunCSVLogger, WandbLogger]
        run_dir = tmp_path / "runs" / "CrossEntropy-DigitsLT" / version
        assert Path(cli.model.record_path) == run_dir / "record.json"
        assert yaml.safe_load((run_dir / "config.yaml").read_text())["trainer"]["logger"]["class_path"].endswith("WandbLogger")
        assert (run_dir / "metrics.csv").is_file()
    offline_runs = list((save_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 3  # logged locally, nothing sent
    # nothing of the run lands in the logger's shared save_dir or the working directory
    assert not list(save_dir.glob("*.yaml")) and not list(save_dir.glob("*.json"))
    assert not (tmp_path / "config.yaml").exists() and not (tmp_path / "record.json").exists()


@pytest.mark.slow
def test_wandb_files_go_under_the_run_directory_and_the_run_is_finished(tmp_path, monkeypatch, capsys):
    import wandb

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cli = run(["fit", "--config", CE_DIGITS, "--config", WANDB, *QUIET, "--run_dir", str(tmp_path / "runs")])
    run_dir = tmp_path / "runs" / "CrossEntropy-DigitsLT" / "seed0"
    assert Path(cli.model.record_path) == run_dir / "record.json"
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    assert wandb.run is None  # finished by the CLI, not left to the interpreter's exit
    assert not (tmp_path / "runs" / "wandb").exists() and not (tmp_path / "wandb").exists()
    logs = "".join(p.read_text(errors="replace") for p in offline.rglob("*.log"))
    assert "HandleAbandonedError" not in logs
    assert f"wandb sync {offline}" in capsys.readouterr().err
