"""Every committed config loads and resolves (`--print_config`), as a user's first step would."""

from pathlib import Path

import pytest
import yaml

from ltbench.runner import run

CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_there_are_configs():
    assert len(CONFIGS) >= 5


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_print_config(config, capsys):
    with pytest.raises(SystemExit) as exit_:
        run(["fit", "--config", str(config), "--print_config"])
    assert exit_.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].startswith("ltbench.methods.")
    assert printed["data"]["class_path"].startswith("ltbench.data.")
    assert "num_classes" not in printed["model"]["init_args"]  # linked from the data module
    assert printed["trainer"]["max_epochs"] > 0
