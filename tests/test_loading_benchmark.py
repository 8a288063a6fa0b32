"""benchmarks/loading.py: the load timings moved out of the tests run and report one row per case."""

from __future__ import annotations

import json

import pytest

from tests.helpers import load_benchmark_script


@pytest.fixture(scope="module")
def loading():
    return load_benchmark_script("loading")


def test_rows_for_present_and_absent_files(loading, tmp_path, capsys):
    out = tmp_path / "rows.json"
    rows = loading.main(["--only", "list_120k,digits_ml,coco_lt", "--lines", "500", "--repeat", "2", "--shared", str(tmp_path / "none"), "--json", str(out)])
    by_case = {r["case"]: r for r in rows}
    assert list(by_case) == ["list_120k", "digits_ml", "coco_lt"]
    for case in ("list_120k", "digits_ml"):
        assert by_case[case]["seconds"] > 0 and by_case[case]["repeat"] == 2
    assert by_case["coco_lt"]["seconds"] is None and by_case["coco_lt"]["note"].startswith("skipped: files absent")
    assert json.loads(out.read_text()) == rows
    assert "| list_120k |" in capsys.readouterr().out


def test_unknown_case_is_refused(loading, capsys):
    with pytest.raises(SystemExit) as e:
        loading.main(["--only", "cifar"])
    assert e.value.code == 2 and "unknown case(s) cifar" in capsys.readouterr().err
