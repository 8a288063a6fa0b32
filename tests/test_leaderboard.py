"""The board: mean ± std over seeds, one table per dataset and ratio, multi-label columns, paper rows
with citations, Markdown / CSV / self-contained HTML with plots, bad records skipped by name."""

import csv
import io
import json
import math
import re

import numpy as np
import pytest

from ltbench.leaderboard import build_tables, load_records, render_csv, render_html, render_markdown, render_suite, suite_records
from ltbench.references import Reference
from ltbench.suite import Suite
from tests.helpers import REPO

COUNTS = [120, 71, 43, 25, 15, 9, 5, 3, 2, 1]


def _record(dataset, label, seed, acc, few, task="multiclass", imb_ratio=100, scores=None, **proto):
    if task == "multiclass":
        m = {"acc": acc, "acc_many": 1.0, "acc_medium": 0.9, "acc_few": few}
    else:
        m = {"mAP": acc, "mAP_many": 0.8, "mAP_medium": 0.6, "mAP_few": few}
    return {
        "dataset": dataset, "method": "CrossEntropy", "label": label, "seed": seed, "task": task, "metrics": m,
        "protocol": {"backbone": "tiny_cnn", "pretrained": False, "input_size": 8, "epochs": 3, "group_rule": "many>=101,few<=19", "imb_ratio": imb_ratio, **proto},
        "per_class": {"class_names": [str(i) for i in range(10)], "train_counts": COUNTS, "score": scores or [acc] * 10},
        "throughput": {"train_images_per_s": 100.0 + seed, "devices": 1, "accelerator": "cpu"},
        "versions": {"torch": "2.x", "lightning": "2.y"}, "git": {"commit": "abcdef1234567", "dirty": False},
    }  # fmt: skip


def _ref(config="ce_digits_lt", dataset="DigitsLT", task="multiclass", **metrics):
    names = ("overall", "many", "medium", "few") if task == "multiclass" else ("mAP", "head", "medium", "tail")
    return Reference(
        config=config, method="Paper-CE", cite="Doe et al. A paper. 2020", url="https://example.org/x", table="Table 2, row CE",
        dataset=dataset, task=task, metrics={n: metrics.get(n) for n in names}, runs=2, imb_ratio=100,
        protocol={"backbone": "resnet32", "pretrained": False, "input_size": 32, "epochs": 200, "group_rule": "many>=101,few<=19"},
    )  # fmt: skip


def test_tables_mean_std_over_seeds_and_na_for_empty_groups():
    recs = [_record("D", "ce", s, a, f) for s, (a, f) in enumerate([(0.5, 0.1), (0.6, 0.3), (0.7, None)])]
    recs.append(_record("D", "la", 0, 0.9, float("nan")))
    tables = build_tables(recs)
    rows = {r["method"]: r for r in tables["D (ρ = 100)"]["rows"]}
    mean, std, n = rows["ce"]["overall"]
    assert (mean, n) == (pytest.approx(0.6), 3) and std == pytest.approx(np.std([0.5, 0.6, 0.7], ddof=1))
    assert rows["ce"]["few"][2] == 2 and rows["ce"]["seeds"] == 3
    assert math.isnan(rows["la"]["few"][0])
    assert rows["ce"]["train img/s"] == pytest.approx(101.0) and rows["ce"]["epochs"] == 3
    recs[1]["protocol"]["epochs"] = 5  # one seed run with another protocol: the board says so
    assert build_tables(recs)["D (ρ = 100)"]["rows"][1]["epochs"] == "mixed: 3 / 5"
    md = render_markdown(tables, "t")
    assert "| la | ltbench | 1 | 90.0 | 100.0 | 90.0 | n/a | tiny_cnn | none | 8 | 3 | many>=101,few<=19 | 100 |" in md
    assert "| ce | ltbench | 3 | 60.0 ± 10.0 | 100.0 ± 0.0 |" in md
    assert md.index("| la |") < md.index("| ce |")  # sorted by the headline metric


def test_one_table_per_dataset_and_ratio_multilabel_columns():
    recs = [_record("D", "ce", 0, 0.5, 0.1, imb_ratio=100), _record("D", "ce_r10", 0, 0.8, 0.6, imb_ratio=10)]
    recs += [_record("M", "asl", s, 0.4 + s / 10, 0.2, task="multilabel", imb_ratio=None) for s in range(3)]
    tables = build_tables(recs)
    assert list(tables) == ["D (ρ = 10)", "D (ρ = 100)", "M"]
    md = render_markdown(tables, "t")
    assert "| method | source | seeds | mAP | head | medium | tail | backbone | pretraining | input | epochs | groups | train img/s |" in md
    assert "| asl | ltbench | 3 | 50.0 ± 10.0 | 80.0 ± 0.0 | 60.0 ± 0.0 | 20.0 ± 0.0 |" in md
    assert "## M (multilabel)" in md and "## D (ρ = 10) (multiclass)" in md
    rows = list(csv.DictReader(io.StringIO(render_csv(tables))))
    assert {r["metric"] for r in rows if r["task"] == "multilabel"} == {"mAP", "head", "medium", "tail"}
    asl = [r for r in rows if r["method"] == "asl" and r["metric"] == "mAP"][0]
    assert float(asl["mean"]) == pytest.approx(0.5) and float(asl["std"]) == pytest.approx(0.1) and asl["seeds"] == "3"


def test_paper_rows_sit_under_their_config_with_the_citation():
    recs = [_record("DigitsLT", "ce_digits_lt", s, 0.5, 0.1) for s in range(2)] + [_record("DigitsLT", "la_digits_lt", 0, 0.7, 0.4)]
    for r in recs:
        r["config_stem"] = r["label"]
    refs = [_ref(overall=0.441, few=0.125), _ref(config="tde_other", overall=0.5)]  # fractions, as loaded
    tables = build_tables(recs, refs)
    rows = tables["DigitsLT (ρ = 100)"]["rows"]
    assert [(r["method"], r["source"]) for r in rows] == [
        ("la_digits_lt", "ltbench"), ("ce_digits_lt", "ltbench"), ("ce_digits_lt", "paper"), ("tde_other", "paper")
    ]  # fmt: skip
    md = render_markdown(tables, "t")
    assert "| ce_digits_lt | paper [1] | 2 | 44.1 | n/a | n/a | 12.5 | resnet32 | none | 32 | 200 | many>=101,few<=19 | — |" in md
    assert "[1] Paper-CE: Doe et al. A paper. 2020; Table 2, row CE (https://example.org/x)" in md
    rows = list(csv.DictReader(io.StringIO(render_csv(tables))))
    paper = [r for r in rows if r["source"] == "paper" and r["metric"] == "overall"][0]
    assert float(paper["mean"]) == pytest.approx(0.441) and paper["std"] == "" and "Doe et al." in paper["citation"]
    # a reference whose config has no record yet still shows, in its own dataset's table; one note per citation
    assert "| tde_other | paper [1] | 2 | 50.0 |" in md and "[2]" not in md


def test_html_is_self_contained_sortable_with_plots():
    recs = [_record("DigitsLT", lbl, s, a, 0.2, scores=list(np.linspace(1, 0, 10) * a)) for lbl, a in (("ce", 0.5), ("la", 0.7)) for s in range(2)]
    recs.append(_record("Multi", "asl", 0, 0.5, 0.3, task="multilabel", imb_ratio=None))
    page = render_html(build_tables(recs, [_ref(config="ce", overall=0.4)]), "board <t>", notes=["a & b"])
    assert page.startswith("<!DOCTYPE html>") and "board &lt;t&gt;" in page and "a &amp; b" in page
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)  # nothing fetched at view time
    assert "addEventListener('click'" in page and page.count('<table class="board">') == 2
    # per-class plot: one dot per class per ltbench row; grouped bars: one bar per row and group
    svgs = re.findall(r"<svg.*?</svg>", page, flags=re.S)
    assert len(svgs) == 4
    assert svgs[0].count("<circle") == 2 * 10 and svgs[0].count("<polyline") == 2
    assert "training images per class" in svgs[0]
    assert svgs[1].count("<title>") == 3 * 4 - 3  # the paper row has only overall
    assert 'fill="url(#hatch)"' in svgs[1]
    # paper rows stay with their ltbench row when sorting: both in one tbody
    body = re.search(r'<tbody class="g"><tr class="ltbench"><td[^>]*>ce</td>.*?</tbody>', page, flags=re.S).group(0)
    assert '<tr class="paper">' in body


def test_corrupt_half_written_and_incomplete_records_are_skipped_by_name(tmp_path):
    good, bad, half, empty = (tmp_path / f"{n}.json" for n in ("good", "bad", "half", "empty"))
    good.write_text(json.dumps(_record("D", "ce", 0, 0.5, 0.1)))
    bad.write_bytes(b"\xff\xfe not json")
    half.write_text(json.dumps(_record("D", "ce", 1, 0.5, 0.1))[:-40])
    empty.write_text(json.dumps({"method": "CrossEntropy"}))
    with pytest.warns(UserWarning) as caught:
        recs = load_records([good, bad, half, empty])
    assert len(recs) == 1
    messages = " ".join(str(w.message) for w in caught)
    for name in ("bad.json", "half.json", "empty.json"):
        assert f"skipping run record {tmp_path / name}" in messages


def _suite(tmp_path, protocol=None):
    bench = tmp_path / "benchmarks"
    bench.mkdir(exist_ok=True)
    path = bench / "s.yaml"
    body = {"name": "s", "configs": [str(REPO / "configs" / "ce_digits_lt.yaml"), str(REPO / "configs" / "la_digits_lt.yaml")], "seeds": [0, 1],
            "run_dir": str(tmp_path / "runs"), "output": str(tmp_path / "board"), "protocol": protocol or {}}  # fmt: skip
    path.write_text(json.dumps(body))
    return Suite.load(path)


def _write_records(suite, backbone="tiny_cnn"):
    for i, (entry, seed) in enumerate(suite.runs()[:3]):
        path = suite.record_path(entry, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        rec = _record("DigitsLT", None, seed, 0.5 + i / 10, 0.2, backbone=backbone if i == 2 else "tiny_cnn")
        del rec["label"]
        path.write_text(json.dumps(rec))


def test_render_suite_merges_records_lists_missing_runs_and_checks_the_protocol(tmp_path):
    suite = _suite(tmp_path, protocol={"backbone": "tiny_cnn", "input_size": 8})
    _write_records(suite, backbone="resnet32")  # la seed 0 was run with another backbone
    with pytest.warns(UserWarning, match=r"skipping run record .*la_digits_lt/seed0/record.json: protocol backbone = 'resnet32'"):
        records, missing = suite_records(suite)
    assert sorted(r["label"] for r in records) == ["ce_digits_lt", "ce_digits_lt"]
    assert "la_digits_lt seed 1" in missing and any("protocol differs" in m for m in missing)
    with pytest.warns(UserWarning):
        out = render_suite(suite)
    md = out["md"].read_text()
    assert "| ce_digits_lt | ltbench | 2 | 55.0 ± 7.1 |" in md and "la_digits_lt | ltbench" not in md
    assert "Not yet recorded (2 of 4 runs)" in md and '"backbone": "tiny_cnn"' in md
    assert "ltbench commits: abcdef1234 (2)" in md
    assert out["csv"].is_file() and "<svg" in out["html"].read_text()
    assert not list(out["md"].parent.glob(".*.tmp"))


def test_records_written_by_several_machines_merge(tmp_path):
    """One runner per shard writes into a shared run_dir; --render-only renders them all."""
    from ltbench.commands.leaderboard import main

    suite = _suite(tmp_path)
    for entry, seed in suite.runs():  # as if two machines each wrote half
        path = suite.record_path(entry, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        rec = _record("DigitsLT", None, seed, 0.6, 0.3)
        rec["git"]["commit"] = "1111111111aaaa" if seed == 0 else "2222222222bbbb"
        path.write_text(json.dumps(rec))
    assert main([str(suite.source), "--render-only"]) == 0
    md = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "| ce_digits_lt | ltbench | 2 |" in md and "| la_digits_lt | ltbench | 2 |" in md
    assert "more than one ltbench commit" in md and "Not yet recorded" not in md


def test_staged_epochs_show_as_a_sum_and_the_footer_lists_versions_and_devices(tmp_path):
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    path = bench / "s.yaml"
    path.write_text(json.dumps({"name": "s", "configs": [str(REPO / "configs" / f"{c}_digits_lt.yaml") for c in ("ce", "crt")], "seeds": [0, 1],
                                "run_dir": str(tmp_path / "runs"), "output": str(tmp_path / "board")}))  # fmt: skip
    suite = Suite.load(path)
    for i, (entry, seed) in enumerate(suite.runs()):
        rec = _record("DigitsLT", None, seed, 0.5, 0.2)
        del rec["label"]
        if entry.label == "crt_digits_lt":
            rec["method"] = "CRT"
            rec["protocol"].update(epochs=40, stages=[{"name": "representation", "epochs": 30}, {"name": "classifier", "epochs": 10}])
        if i == 3:
            rec["throughput"].update(devices=2, accelerator="cuda")
            rec["versions"] = {"torch": "2.z", "lightning": "2.y"}
        suite.record_path(entry, seed).parent.mkdir(parents=True)
        suite.record_path(entry, seed).write_text(json.dumps(rec))
    out = render_suite(suite)
    md = out["md"].read_text()
    crt_row = next(line for line in md.splitlines() if line.startswith("| crt_digits_lt |"))
    ce_row = next(line for line in md.splitlines() if line.startswith("| ce_digits_lt |"))
    assert "| 30+10 |" in crt_row and "| 3 |" in ce_row and "+" not in ce_row
    assert ">30+10</td>" in out["html"].read_text()
    footer = md[md.index("\n---\n") :]
    assert "versions: torch 2.x, lightning 2.y (3); torch 2.z, lightning 2.y (1)" in footer
    assert "devices per run: 1×cpu (3), 2×cuda (1)" in footer
    assert "4 run records; ltbench commits: abcdef1234 (4)" in footer


def test_partial_test_runs_are_left_off_the_board(tmp_path):
    suite = _suite(tmp_path)
    _write_records(suite)
    path = suite.record_path(*suite.runs()[1])
    rec = json.loads(path.read_text()) | {"num_test_samples": 8, "test_split_size": 500, "partial_test": True}
    path.write_text(json.dumps(rec))
    with pytest.warns(UserWarning, match=r"skipping run record .*: scored 8 of 500 test images"):
        records, missing = suite_records(suite)
    assert len(records) == 2 and any("partial test, 8 of 500 images" in m for m in missing)


def test_run_table_is_in_percent_in_board_order():
    from ltbench.records import metrics_table

    single = metrics_table({"acc_few": 0.2333333492, "acc": 0.54000002, "acc_medium": 1.0, "acc_many": 1.0}, "multiclass")
    assert single.splitlines() == ["test (%)", "overall    54.00", "many      100.00", "medium    100.00", "few        23.33"]
    multi = metrics_table({"mAP_few": float("nan"), "mAP": 0.849, "extra": 0.5, "mAP_many": 0.9, "mAP_medium": None}, "multilabel")
    assert [line.split() for line in multi.splitlines()[1:]] == [["mAP", "84.90"], ["head", "90.00"], ["medium", "n/a"], ["tail", "n/a"], ["extra", "50.00"]]


def test_base_to_new_runs_get_base_new_hm_columns_sorted_by_hm():
    def b2n(label, seed, base, new):
        r = _record("D base-to-new", label, seed, 0.0, 0.0, imb_ratio=None, eval_protocol="base_to_new")
        r["metrics"] = {"base": base, "new": new, "hm": 2 * base * new / (base + new)}
        return r

    recs = [b2n("coop", 0, 0.9, 0.5), b2n("coop", 1, 0.8, 0.5), b2n("cdc", 0, 0.8, 0.7), _record("D", "ce", 0, 0.5, 0.1, imb_ratio=None)]
    tables = build_tables(recs)
    table = tables["D base-to-new"]
    assert table["task"] == "base_to_new" and tables["D"]["task"] == "multiclass"
    assert [r["method"] for r in table["rows"]] == ["cdc", "coop"]  # by HM, not by Base
    assert table["rows"][1]["Base"][:2] == pytest.approx((0.85, np.std([0.9, 0.8], ddof=1)))
    md = render_markdown(tables, "t")
    assert "| method | source | seeds | Base | New | HM |" in md
    ref = Reference(
        config="cdc", method="CDC", cite="Zhang et al. 2024", url="https://example.org", table="b2n table", dataset="D base-to-new",
        task="base_to_new", metrics={"Base": 0.8, "New": None, "HM": None}, runs=3, protocol={"backbone": "ViT-B-16"},
    )  # fmt: skip
    rows = build_tables(recs, [ref])["D base-to-new"]["rows"]
    assert rows[1]["source"] == "paper" and rows[1]["Base"][0] == pytest.approx(0.8)  # under its config's row (label cdc)
    assert "<svg" in render_html(tables, "t")  # group bars still drawn; no per-class plot against counts
