"""Every bad input ends in one line naming the key, file or line and what was expected, exit status 2,
and leaves nothing half-written. One row per input: the next bad input is one more row.

Each row: id, setup (tmp_path, monkeypatch) -> argv of ``ltbench``, exit status, a pattern the single
error line must match, and the files (relative to the run directory) left behind.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ltbench.cli import main
from tests.helpers import CE_DIGITS, REPO

QUIET = ["--trainer.enable_progress_bar", "false"]
CPRFL_DIGITS = str(REPO / "configs" / "cprfl_digits_lt.yaml")
CE_CIFAR10 = str(REPO / "configs" / "ce_cifar10_lt.yaml")
RUN = "CrossEntropy-DigitsLT/seed0"


def _fit(tmp_path: Path, *extra: str, config: str = CE_DIGITS) -> list[str]:
    return ["fit", "--config", config, "--run_dir", str(tmp_path / "runs"), *QUIET, *extra]


def _truncated_checkpoint(tmp_path, monkeypatch):
    buf = io.BytesIO()
    torch.save({"state_dict": {"w": torch.zeros(64, 64)}}, buf)
    path = tmp_path / "cut.ckpt"
    path.write_bytes(buf.getvalue()[:300])
    return ["test", "--config", CE_DIGITS, "--run_dir", str(tmp_path / "runs"), *QUIET, "--ckpt_path", str(path)]


def _mismatched_checkpoint(tmp_path, monkeypatch):
    """A checkpoint of a 5-class head tested with the 10-class Digits config."""
    path = tmp_path / "five.ckpt"
    state = {"head.weight": torch.zeros(5, 32), "head.bias": torch.zeros(5)}
    torch.save({"state_dict": state, "hyper_parameters": {"_class_path": "ltbench.methods.CrossEntropy"}}, path)
    return ["test", "--config", CE_DIGITS, "--run_dir", str(tmp_path / "runs"), *QUIET, "--ckpt_path", str(path)]


def _image_lists(tmp_path: Path) -> Path:
    """Two classes of three 12x12 JPEGs in list files; the last training image is then deleted."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        rel = f"imgs/{i}.jpg"
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(tmp_path / rel)
        rows.append(f"{rel} {i % 2}\n")
    for split in ("train", "val", "test"):
        (tmp_path / f"{split}.txt").write_text("".join(rows))
    (tmp_path / "imgs" / "5.jpg").unlink()
    return tmp_path


def _missing_image_in_a_worker(tmp_path, monkeypatch):
    root = _image_lists(tmp_path)
    return _fit(
        tmp_path, "--data", "ltbench.data.ImageListLT", "--data.init_args.root", str(root), "--data.init_args.image_size", "12",
        "--data.init_args.batch_size", "6", "--data.init_args.num_workers", "1", "--trainer.max_epochs", "1",
        "--name", "lists", "--version", "seed0",
    )  # fmt: skip


def _offline(tmp_path, monkeypatch, *extra, config=CE_DIGITS):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return _fit(tmp_path, *extra, config=config)


def _no_network(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE unset, but the Hub does not answer: the same one line, at once."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("ltbench.network.reachable", lambda url, timeout=3.0: False)
    return _fit(tmp_path, "--model.init_args.backbone", "resnet10t", "--model.init_args.pretrained", "true")


def _corrupt_cifar(tmp_path: Path) -> Path:
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]:
        (folder / name).write_bytes(b"not a pickle")
    return folder.parent


def _download_without_network(tmp_path, monkeypatch):
    monkeypatch.setattr("ltbench.data.cifar.reachable", lambda url, timeout=3.0: False)
    return _fit(tmp_path, "--data.init_args.root", str(_corrupt_cifar(tmp_path)), "--data.init_args.download", "true", config=CE_CIFAR10)


def _yaml_file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _broken_yaml(tmp_path, monkeypatch):
    return _fit(tmp_path, "--config", str(_yaml_file(tmp_path, "broken.yaml", "trainer:\n  max_epochs: 3\nmodel:\n  init_args: [\n")))


def _broken_yaml_piece(tmp_path, monkeypatch):
    """The syntax error is in a piece the config names (``data: data/x.yaml``)."""
    (tmp_path / "data").mkdir()
    _yaml_file(tmp_path / "data", "x.yaml", "class_path: ltbench.data.DigitsLT\ninit_args: {imb_ratio: 10\n")
    top = _yaml_file(tmp_path, "top.yaml", (Path(CE_DIGITS).read_text()).replace("data: data/digits_lt.yaml", "data: data/x.yaml"))
    (tmp_path / "trainer").mkdir()
    for piece in ("trainer/cpu_small.yaml", "optim/sgd_digits.yaml", "schedule/cosine_warmup1.yaml"):
        (tmp_path / piece).parent.mkdir(exist_ok=True)
        (tmp_path / piece).write_text((REPO / "configs" / piece).read_text())
    return _fit(tmp_path, config=str(top))


def _run_there(tmp_path, monkeypatch, record: bool):
    """A run directory as a finished (record) or interrupted (last checkpoint only) fit leaves it."""
    run = tmp_path / "runs" / RUN
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("seed_everything: 0\n")
    (run / "checkpoints" / "epoch=2-step=15.ckpt").write_bytes(b"full checkpoint")
    (run / "checkpoints" / "last.ckpt").symlink_to("epoch=2-step=15.ckpt")
    if record:
        (run / "record.json").write_text("{}")
    return _fit(tmp_path)


NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a GPU, so a GPU config is not bad input here")

def row(name, setup, status, pattern, left=(), marks=()):
    return pytest.param(setup, status, pattern, list(left), id=name, marks=marks)


CASES = [
    row("imb_ratio-below-1", lambda t, m: _fit(t, "--data.init_args.imb_ratio", "0.5"), 2,
     r"data\.init_args\.imb_ratio: expected a number >= 1 .*got 0\.5", []),
    row("batch_size-0", lambda t, m: _fit(t, "--data.init_args.batch_size", "0"), 2,
     r"data\.init_args\.batch_size: expected an integer >= 1, got 0", []),
    row("batch_size-negative", lambda t, m: _fit(t, "--data.init_args.batch_size", "-3"), 2,
     r"data\.init_args\.batch_size: expected an integer >= 1, got -3", []),
    row("truncated-checkpoint", _truncated_checkpoint, 2,
     r"checkpoint .*cut\.ckpt is unreadable \(truncated, or not a checkpoint", []),
    row("checkpoint-shapes-differ", _mismatched_checkpoint, 2,
     r"checkpoint .*five\.ckpt does not fit this config's model: head\.weight is \(5, 32\) there but \(10, 64\) here", []),
    row("missing-image-in-a-loader-worker", _missing_image_in_a_worker, 2,
     r"^ltbench: error: image missing: .*imgs/5\.jpg \(entry 6 of .*(train|val)\.txt\)", ["lists/seed0/config.yaml", "lists/seed0/hparams.yaml"]),
    row("timm-pretrained-offline", lambda t, m: _offline(t, m, "--model.init_args.backbone", "resnet10t", "--model.init_args.pretrained", "true"), 2,
     r"model\.init_args\.pretrained: cannot fetch timm's published weights of 'resnet10t' \(HF_HUB_OFFLINE is set\); give the path of a local weights file", []),
    row("timm-pretrained-no-network", _no_network, 2,
     r"model\.init_args\.pretrained: cannot fetch timm's published weights of 'resnet10t' \(no network\)", []),
    row("open_clip-text_pretrained-offline", lambda t, m: _offline(t, m, "--model.init_args.text_model", "RN50", "--model.init_args.text_pretrained", "openai", config=CPRFL_DIGITS), 2,
     r"model\.init_args\.text_pretrained: cannot fetch open_clip weights 'openai' of 'RN50' \(HF_HUB_OFFLINE is set\); give the path of a local checkpoint", []),
    row("gpu-config-without-gpu", lambda t, m: _fit(t, "--trainer.accelerator", "gpu"), 2,
     r"trainer\.accelerator: .*pass --trainer\.accelerator cpu", [], marks=NO_GPU),
    row("download-without-network", _download_without_network, 2,
     r"CIFAR-10: data\.init_args\.download=true but https://www\.cs\.toronto\.edu/\S+ cannot be reached; without a network, extract", []),
    row("corrupt-cifar-file", lambda t, m: _fit(t, "--data.init_args.root", str(_corrupt_cifar(t)), config=CE_CIFAR10), 2,
     r"CIFAR-10 file corrupt: .*batches\.meta has MD5 \w+, expected \w+; extract it again from cifar-10-python\.tar\.gz", []),
    row("ckpt_path-last-with-nothing-to-resume", lambda t, m: _fit(t, "--ckpt_path", "last"), 2,
     r"ckpt_path last: nothing to resume, \S+CrossEntropy-DigitsLT/seed0/checkpoints holds no last\.ckpt .*leave out --ckpt_path", []),
    row("fit-over-a-finished-run", lambda t, m: _run_there(t, m, record=True), 2,
     r"fit: \S+CrossEntropy-DigitsLT/seed0 already holds a finished run \(record\.json, checkpoints/last\.ckpt\); give another --version \(or --name, --run_dir\) for a new run beside it, --ckpt_path last to continue it, or remove \S+seed0 to redo it$",
     [f"{RUN}/{f}" for f in ("config.yaml", "record.json", "checkpoints/epoch=2-step=15.ckpt", "checkpoints/last.ckpt")]),
    row("fit-over-an-interrupted-run", lambda t, m: _run_there(t, m, record=False), 2,
     r"fit: \S+CrossEntropy-DigitsLT/seed0 already holds an interrupted run \(checkpoints/last\.ckpt, no record\.json\); resume it with --ckpt_path last, give another --version .*, or remove \S+seed0 to redo it$",
     [f"{RUN}/{f}" for f in ("config.yaml", "checkpoints/epoch=2-step=15.ckpt", "checkpoints/last.ckpt")]),
    row("yaml-syntax-error", _broken_yaml, 2,
     r"ltbench: error: \S+broken\.yaml:5:1: YAML syntax error: .*; expected a YAML mapping", []),
    row("yaml-syntax-error-in-a-piece", _broken_yaml_piece, 2,
     r"ltbench: error: \S+data/x\.yaml:3:1: YAML syntax error", []),
    row("unknown-key-in-a-class", lambda t, m: _fit(t, "--model.init_args.backbon", "tiny_cnn"), 2,
     r"unknown key model\.init_args\.backbon of ltbench\.methods\.CrossEntropy; closest valid keys: model\.init_args\.backbone \(Optional\[str\]\)", []),
    row("unknown-key-in-a-config-file", lambda t, m: _fit(t, "--config", str(_yaml_file(t, "typo.yaml", "trainer:\n  max_epoch: 3\n"))), 2,
     r"unknown key trainer\.max_epoch; closest valid keys: trainer\.max_epochs \(Optional\[int\]\)", []),
    row("unknown-nested-key", lambda t, m: _fit(t, "--model.init_args.optimizer.lrr", "0.1"), 2,
     r"unknown key model\.init_args\.optimizer\.lrr of ltbench\.methods\.CrossEntropy; closest valid keys: model\.init_args\.optimizer\.lr \(float\)", []),
    row("wrong-type", lambda t, m: _fit(t, "--data.init_args.batch_size", "many"), 2,
     r"ltbench: error: data\.init_args\.batch_size: expected int, got 'many'$", []),
    row("wrong-type-union", lambda t, m: _fit(t, "--trainer.max_epochs", "x"), 2,
     r"ltbench: error: trainer\.max_epochs: expected int or None, got 'x'$", []),
    row("not-one-of-the-choices", lambda t, m: _fit(t, "--data.init_args.imb_profile", "linear"), 2,
     r"data\.init_args\.imb_profile: expected one of 'exp', 'step', got 'linear'$", []),
]  # fmt: skip


@pytest.mark.parametrize("setup,status,pattern,left", CASES)
def test_bad_input_is_one_line(tmp_path, monkeypatch, capsys, setup, status, pattern, left):
    argv = setup(tmp_path, monkeypatch)
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == status
    stderr = capsys.readouterr().err
    err = [ln for ln in stderr.splitlines() if ln.startswith("ltbench: error:")]
    assert len(err) == 1 and "Traceback" not in stderr and "usage:" not in stderr, stderr[-3000:]
    assert re.search(pattern, err[0]), err[0]
    runs = tmp_path / "runs"
    found = sorted(str(p.relative_to(runs)) for p in runs.rglob("*") if p.is_file()) if runs.exists() else []
    assert found == sorted(left)
