"""benchmarks/gpu_report.py --smoke: every section runs end to end on CPU and the report is complete."""

from __future__ import annotations

import json

import pytest

from tests.helpers import load_benchmark_script


@pytest.mark.slow
def test_smoke_report_has_every_section(tmp_path, monkeypatch):
    from ltbench.data import cifar

    monkeypatch.setattr(cifar, "MD5S", dict(cifar.MD5S))  # the report adds its synthetic files' checksums
    bench = load_benchmark_script("gpu_report")
    bench.main(["--out", str(tmp_path), "--smoke"])
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["errors"] == {}
    assert report["meta"]["smoke"] is True
    cifar = report["cifar"]
    assert [r["pipeline"].split(" (")[0].split(":")[0] for r in cifar] == ["reference", "reference", "ltbench fit", "ltbench fit", "ltbench fit"]
    assert all(r["images_per_s"] > 0 and r["ratio_to_reference_fp32"] > 0 for r in cifar)
    assert all(r["data_wait_ms_per_step"] is not None and r["compute_ms_per_step"] > 0 for r in cifar)
    assert report["sync"][0]["host_syncs"] == "none" and report["sync"][0]["steps_checked"] > 0
    resnext = report["resnext"]
    assert [r["variant"] for r in resnext] == ["eager", "channels_last", "channels_last + torch.compile"]
    assert all(r["images_per_s"] > 0 and r["backbone_gflops_per_image"] > 0 for r in resnext)
    jpeg = report["jpeg"]
    assert [r["pipeline"].split(" (")[0] for r in jpeg] == ["decode: device", "decode: pil"]
    assert all(r["images_per_s"] > 0 for r in jpeg)
    cprfl = report["cprfl"]
    assert [r["variant"] for r in cprfl] == ["text tower trainable (released)", "text tower frozen"]
    assert all(r["ms_per_step"] > 0 and r["params_m"] > 100 for r in cprfl)
    prompts = report["prompts"]
    assert [r["variant"].split(" (")[0].split(",")[0] for r in prompts] == ["CoOp", "CoCoOp", "MaPLe", "CDC-like", "CDC-like"]
    assert all(r["ms_per_step"] > 0 and r["images_per_s"] > 0 for r in prompts)
    tscnet = report["tscnet"]
    assert {(r["variant"], r["stage"]) for r in tscnet} >= {("both interventions", "hcrl"), ("neither", "clbc")}
    assert all(r["ms_per_step"] > 0 for r in tscnet)
    md = (tmp_path / "report.md").read_text()
    assert "SMOKE" in md and md.count("|---|") >= 4
    assert not (tmp_path / "report.partial.json").exists()
