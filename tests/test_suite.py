"""Suites and the board: validation before running, resuming by record, corrupt records skipped."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ltbench.errors import LTBenchError
from ltbench.leaderboard import build_tables, load_records, main as leaderboard_main, render_markdown
from ltbench.suite import Suite
from tests.helpers import REPO


def _suite_file(tmp_path, configs, **extra):
    bench = tmp_path / "benchmarks"
    bench.mkdir(exist_ok=True)
    path = bench / "s.yaml"
    body = {"name": "s", "configs": configs, "seeds": [0, 1], "run_dir": str(tmp_path / "runs"), "output": str(tmp_path / "board"), **extra}
    path.write_text(json.dumps(body))
    return path


def test_missing_config_fails_before_anything_runs(tmp_path):
    path = _suite_file(tmp_path, [str(REPO / "configs" / "ce_digits_lt.yaml"), str(tmp_path / "nope.yaml")])
    with pytest.raises(LTBenchError, match="config\\(s\\) not found: .*nope.yaml"):
        Suite.load(path)
    assert not (tmp_path / "runs").exists()
    with pytest.raises(LTBenchError, match="unknown key\\(s\\) seed"):
        Suite.load(_suite_file(tmp_path, [], seed=1))


def _record(dataset, label, seed, acc, few, task="multiclass"):
    m = {"acc": acc, "acc_many": 1.0, "acc_medium": 0.9, "acc_few": few}
    return {"dataset": dataset, "method": "CrossEntropy", "label": label, "seed": seed, "task": task, "metrics": m,
            "protocol": {"backbone": "tiny_cnn", "pretrained": False, "input_size": 8, "epochs": 3, "group_rule": "many>=101,few<=19"},
            "throughput": {"train_images_per_s": 100.0 + seed}}


def test_tables_mean_std_over_seeds_and_na_for_empty_groups():
    recs = [_record("D", "ce", s, a, f) for s, (a, f) in enumerate([(0.5, 0.1), (0.6, 0.3), (0.7, None)])]
    recs.append(_record("D", "la", 0, 0.9, float("nan")))
    tables = build_tables(recs)
    rows = {r["method"]: r for r in tables["D"]["rows"]}
    mean, std, n = rows["ce"]["overall"]
    assert (mean, n) == (pytest.approx(0.6), 3) and std == pytest.approx(np.std([0.5, 0.6, 0.7], ddof=1))
    assert rows["ce"]["few"][2] == 2
    assert math.isnan(rows["la"]["few"][0])
    md = render_markdown(tables, "t")
    assert "| la | 1 | 90.0 | 100.0 | 90.0 | n/a |" in md
    assert md.index("| la |") < md.index("| ce |")  # sorted by the headline metric


def test_corrupt_record_is_skipped_with_a_warning(tmp_path):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(_record("D", "ce", 0, 0.5, 0.1)))
    bad.write_text('{"method": "CrossEn')
    with pytest.warns(UserWarning, match="skipping run record .*bad.json"):
        recs = load_records([good, bad])
    assert len(recs) == 1


@pytest.mark.slow
def test_suite_runs_missing_runs_once_and_renders(tmp_path, capsys):
    cfg = REPO / "configs" / "ce_digits_lt.yaml"
    path = _suite_file(tmp_path, [str(cfg)], overrides=["--trainer.max_epochs", "2"])
    assert leaderboard_main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 runs, 0 already recorded, 2 to run" in out
    board = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "| ce_digits_lt | 2 |" in board
    assert (tmp_path / "board" / "leaderboard.csv").read_text().count("ce_digits_lt") == 4
    assert leaderboard_main([str(path)]) == 0
    assert "2 runs, 2 already recorded, 0 to run" in capsys.readouterr().out
    # a changed protocol is a different run
    path = _suite_file(tmp_path, [str(cfg)], overrides=["--trainer.max_epochs", "1"])
    assert leaderboard_main([str(path), "--render-only"]) == 0
    from ltbench.suite import is_done

    assert not is_done(Suite.load(path), cfg, 0)
