"""benchmarks/keyed_augment.py: one row per case, both variants timed, the MD5 table left as it was."""

from __future__ import annotations

import json

import pytest

from ltbench.data import cifar
from tests.helpers import load_benchmark_script


@pytest.fixture(scope="module")
def bench():
    return load_benchmark_script("keyed_augment")


def test_rows_for_every_case(bench, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cifar, "MD5S", dict(cifar.MD5S))  # the cifar case points it at its fixture
    out = tmp_path / "rows.json"
    rows = bench.main(["--items", "3", "--rounds", "2", "--json", str(out)])
    assert [r["case"] for r in rows] == ["cifar", "jpeg", "seed"]
    for r in rows:
        assert r["first_us"] > 0 and r["second_us"] > 0 and r["rounds"] == 2
        assert r["overhead_us"] == pytest.approx(r["second_us"] - r["first_us"], abs=0.02)
    assert json.loads(out.read_text()) == rows
    assert "| jpeg | plain |" in capsys.readouterr().out


def test_unknown_case_is_refused(bench, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--only", "webdataset"])
    assert e.value.code == 2 and "unknown case(s) webdataset" in capsys.readouterr().err
