"""Multi-process runs through the strategy pieces: ranks read from torchrun / SLURM, a staged method
trained under 2-process DDP, and its evaluation equal to the same evaluation on one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ltbench.runner import run
from ltbench.suite import resolved_config
from tests.helpers import CE_DIGITS, REPO

STRATEGY = REPO / "configs" / "strategy"
CRT_DIGITS = str(REPO / "configs" / "crt_digits_lt.yaml")


def test_every_strategy_piece_composes_with_a_run():
    pieces = sorted(STRATEGY.glob("*.yaml"))
    assert {p.stem for p in pieces} >= {"ddp", "ddp_cpu", "ddp_torchrun", "ddp_slurm"}
    for piece in pieces:
        cfg = resolved_config(["--config", CE_DIGITS, "--config", str(piece)])["trainer"]
        assert cfg["strategy"].startswith("ddp") and cfg["max_epochs"] == 30, piece.name
        # staged methods (cRT) freeze parameters in later stages: plain DDP refuses that
        assert cfg["strategy"] == "ddp_find_unused_parameters_true", piece.name
    slurm = yaml.safe_load((STRATEGY / "ddp_slurm.yaml").read_text())["trainer"]["plugins"][0]
    assert slurm["class_path"].endswith("SLURMEnvironment") and slurm["init_args"]["auto_requeue"] is True


SCRIPT = r"""
import json, os, sys
from ltbench.runner import run
kind, piece = sys.argv[1], sys.argv[2]
if kind == "slurm":
    os.environ.update(SLURM_NTASKS="16", SLURM_NTASKS_PER_NODE="8", SLURM_JOB_ID="1", SLURM_PROCID="9", SLURM_LOCALID="1",
                      SLURM_NODEID="1", SLURM_JOB_NAME="ltbench", SLURM_NODELIST="n[1-2]", SLURM_JOB_NUM_NODES="2")
else:
    os.environ.update(RANK="9", LOCAL_RANK="1", GROUP_RANK="1", LOCAL_WORLD_SIZE="8", WORLD_SIZE="16",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT="29555", TORCHELASTIC_RUN_ID="t")
cli = run(["--config", sys.argv[3], "--config", piece, "--trainer.accelerator", "cpu", "--run_dir", sys.argv[4]], run=False)
t = cli.trainer
print(json.dumps({"env": type(t.strategy.cluster_environment).__name__, "world": t.world_size, "rank": t.global_rank,
                  "node": t.node_rank, "local": t.local_rank, "requeue": getattr(t.strategy.cluster_environment, "auto_requeue", None)}))
"""


@pytest.mark.parametrize("kind,piece,env", [("torchrun", "ddp_torchrun", "TorchElasticEnvironment"), ("slurm", "ddp_slurm", "SLURMEnvironment")])
def test_multi_node_pieces_take_ranks_from_the_launcher(tmp_path, kind, piece, env):
    """2 nodes x 8 processes: the process that torchrun / srun calls rank 9 is node 1, local rank 1."""
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, kind, str(STRATEGY / f"{piece}.yaml"), CE_DIGITS, str(tmp_path)],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == {"env": env, "world": 16, "rank": 9, "node": 1, "local": 1, "requeue": True if kind == "slurm" else None}


@pytest.mark.slow
def test_staged_fit_under_two_process_ddp_reports_what_one_process_reports(tmp_path):
    """cRT (two stages, frozen backbone in the second) trains on 2 CPU processes through the ddp_cpu
    piece; its test numbers equal a 1-process test of the same checkpoint."""
    stages = ["--model.init_args.representation_epochs", "2", "--model.init_args.crt_epochs", "1", "--trainer.max_epochs", "3"]
    common = ["--config", CRT_DIGITS, *stages, "--run_dir", str(tmp_path), "--trainer.enable_progress_bar", "false", "--data.init_args.eval_batch_size", "37"]
    proc = subprocess.run(
        [sys.executable, "-m", "ltbench.cli", "fit", *common, "--config", str(STRATEGY / "ddp_cpu.yaml"), "--version", "two"],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    two_dir = tmp_path / "CRT-DigitsLT" / "two"
    two = json.loads((two_dir / "record.json").read_text())
    assert two["throughput"]["devices"] == 2 and two["protocol"]["epochs"] == 3
    assert [s["epochs"] for s in two["protocol"]["stages"]] == [2, 1]
    one_cli = run(["test", *common, "--ckpt_path", str(two_dir / "checkpoints" / "last.ckpt"), "--version", "one"])
    one = json.loads(Path(one_cli.model.record_path).read_text())
    assert one_cli.trainer.world_size == 1
    assert two["num_test_samples"] == one["num_test_samples"] == 500
    assert two["metrics"] == pytest.approx(one["metrics"], abs=1e-7)
    assert two["per_class"]["score"] == pytest.approx(one["per_class"]["score"], abs=1e-7)
