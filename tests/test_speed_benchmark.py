"""benchmarks/speed.py: one row per config, from the data facts or from synthetic ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/ce_digits_lt.yaml"
FAST = ["--steps", "3", "--warmup", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def speed():
    return load_benchmark("speed")


@pytest.fixture(autouse=True)
def _in_repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def _resnet32_config() -> tuple[str, list[str]]:
    """A ResNet-32 config if the repo has one, else the Digits config with the backbone swapped."""
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        if "resnet32" in path.read_text():
            return str(path.relative_to(ROOT)), []
    return CONFIG, ["--model.init_args.backbone", "resnet32_bbn"]


def test_digits_row(speed, tmp_path, capsys):
    out = tmp_path / "speed.json"
    rows = speed.main(["--config", CONFIG, "--batch-size", "8", *FAST, "--json", str(out)])
    assert len(rows) == 1
    row = rows[0]
    assert row["batch_size"] == 8
    assert row["images_per_s"] > 0 and row["ms_per_step"] > 0
    assert row["facts"] == "data" and row["input"] == "1x8x8" and row["num_classes"] == 10
    assert row["params"] > 0 and row["device"] == "cpu" and row["precision"] == "32"
    assert json.loads(out.read_text()) == rows
    table = capsys.readouterr().out
    assert "| config |" in table and "images/s" in table and CONFIG in table


def test_synthetic_facts_resnet32(speed):
    config, backbone = _resnet32_config()
    rows = speed.main(
        ["--config", config, "--batch-size", "4", *FAST, "--synthetic-facts",
         "--num-classes", "100", "--in-chans", "3", "--image-size", "32", *backbone]
    )
    row = rows[0]
    assert row["facts"] == "synthetic"
    assert row["num_classes"] == 100 and row["input"] == "3x32x32" and row["batch_size"] == 4
    assert "resnet32" in row["backbone"]
    assert row["images_per_s"] > 0


def test_synthetic_facts_need_num_classes(speed):
    with pytest.raises(SystemExit):
        speed.main(["--config", CONFIG, "--synthetic-facts", *FAST])
