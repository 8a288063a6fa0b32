"""benchmarks/speed.py: one row per config, from the data facts or from synthetic ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import load_benchmark_script

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/ce_digits_lt.yaml"
FAST = ["--steps", "3", "--warmup", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def speed():
    return load_benchmark_script("speed")


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


def test_synthetic_facts_need_num_classes(speed, capsys):
    with pytest.raises(SystemExit) as e:
        speed.main(["--config", CONFIG, "--synthetic-facts", *FAST])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("error: --synthetic-facts needs --num-classes")


def test_reports_the_median_of_the_timed_steps_after_untimed_warmup(speed, monkeypatch):
    """A scripted clock: 2 warm-up steps are never timed; the row's ms/step is the median of the 5 timed ones."""
    durations = iter([0.010, 0.030, 0.020, 1.000, 0.015])  # median 0.020; the mean (0.215) would differ
    clock = {"now": 0.0, "reads": 0, "forwards_before_first_read": None}
    forwards = []

    class Clock:
        @staticmethod
        def perf_counter():
            if clock["forwards_before_first_read"] is None:
                clock["forwards_before_first_read"] = len(forwards)
            clock["reads"] += 1
            if clock["reads"] % 2 == 0:  # the second read of a step: the step took the next duration
                clock["now"] += next(durations)
            return clock["now"]

    real_build = speed.build_model

    def counting_build(*args, **kwargs):
        model, dm, facts = real_build(*args, **kwargs)
        model.register_forward_pre_hook(lambda *_: forwards.append(1))
        return model, dm, facts

    monkeypatch.setattr(speed, "time", Clock)
    monkeypatch.setattr(speed, "build_model", counting_build)
    row = speed.main(["--config", CONFIG, "--batch-size", "8", "--steps", "5", "--warmup", "2", "--device", "cpu"])[0]
    assert len(forwards) == 7 and clock["forwards_before_first_read"] == 2 and clock["reads"] == 10
    assert row["ms_per_step"] == 20.0 and row["images_per_s"] == 400.0
    assert row["ms_per_step_min"] == 10.0 and row["ms_per_step_max"] == 1000.0
    assert (row["steps"], row["warmup"]) == (5, 2)
