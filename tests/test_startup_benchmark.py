"""benchmarks/startup.py: it measures what it names (no time is asserted: timings follow the machine)."""

from __future__ import annotations

import json
import sys

import pytest

from tests.helpers import load_benchmark_script


@pytest.fixture(scope="module")
def startup():
    return load_benchmark_script("startup")


def test_import_breakdown_names_the_heavy_packages_of_a_run(startup):
    breakdown = startup.import_breakdown("ltbench.runner")
    assert {"ltbench.runner", "torch", "lightning", "timm"} <= set(breakdown)
    assert "open_clip" not in breakdown and "sklearn" not in breakdown
    assert breakdown.get("wandb", 0) < 0.01  # timm's guarded `import wandb` is answered without loading it
    assert 0 < breakdown["torch"] < breakdown["ltbench.runner"]


def test_help_is_timed_and_a_failing_command_is_reported(startup):
    timing = startup.repeated([sys.executable, "-m", "ltbench.cli", "--help"], 2)
    assert timing["runs"] == 2 and timing["wall_s"] > 0 and timing["cpu_s"] >= 0
    with pytest.raises(SystemExit, match="failed"):
        startup.timed([sys.executable, "-m", "ltbench.cli", "leaderboard", "nope.yaml"])


@pytest.mark.slow
def test_the_report_covers_help_imports_and_a_digits_fit(startup, tmp_path, capsys):
    out = startup.main(["--repeat", "1", "--json", str(tmp_path / "t.json")])
    names = list(out["results"])
    assert names[:4] == ["ltbench --help", "ltbench leaderboard --help", "import ltbench.cli", "import ltbench.runner"]
    assert names[4].startswith("ltbench fit --config configs/ce_digits_lt.yaml")
    assert json.loads((tmp_path / "t.json").read_text())["results"]["ltbench --help"]["runs"] == 1
    assert "| `ltbench --help` |" in capsys.readouterr().out
