"""The papers' own figures: every one cited, in the board's columns, tied to a config of the same data."""

import pytest
import yaml

from ltbench.errors import LTBenchError
from ltbench.references import REFERENCES_FILE, load_references, references_for
from ltbench.suite import resolved_config
from tests.helpers import REPO


def test_every_reference_is_cited_and_in_the_boards_columns():
    refs = load_references()
    assert len(refs) >= 10
    for r in refs:
        assert r.cite and r.table and r.url, r
        assert any(v is not None for v in r.metrics.values())
        assert all(v is None or 0 <= v <= 1 for v in r.metrics.values())
    by = {(r.config, r.method): r for r in refs}
    tde = by[("tde_imagenet_lt", "De-confound-TDE")]
    assert tde.metrics == pytest.approx({"overall": 0.518, "many": 0.627, "medium": 0.488, "few": 0.316})
    assert tde.protocol["backbone"] == "resnext50_32x4d" and tde.protocol["epochs"] == 90
    assert by[("tde_cifar100_lt_r100", "De-confound-TDE")].metrics["overall"] == pytest.approx(0.441)
    coco = by[("dbfocal_coco_lt", "DB-Focal")]
    assert coco.task == "multilabel" and coco.metrics == pytest.approx({"mAP": 0.5355, "head": 0.5113, "medium": 0.5705, "tail": 0.5106})
    assert by[("dbfocal_voc_lt", "DB-Focal")].metrics["mAP"] == pytest.approx(0.7894)
    assert [r.config for r in references_for(["tde_cifar10_lt_r10", "nothing"])] == ["tde_cifar10_lt_r10"]
    sun = by[("cdc_sun397_b2n", "CDC")]
    assert sun.task == "base_to_new" and sun.metrics == pytest.approx({"Base": None, "New": None, "HM": 0.8118})


def test_references_match_the_data_of_their_config():
    """Where the config exists, it trains on the reference's dataset (and ratio) and task."""
    checked = 0
    for r in load_references():
        path = REPO / "configs" / f"{r.config}.yaml"
        if not path.is_file():  # a config still to be written (e.g. COCO-LT's DB-Focal)
            continue
        cfg = resolved_config(["--config", str(path)])
        if r.task == "base_to_new":  # BaseToNew over a TorchvisionSet: the record's dataset is "<name> base-to-new"
            assert cfg["data"]["class_path"] == "ltbench.data.BaseToNew", r.config
            assert f"{cfg['data']['init_args']['data']['init_args']['name']} base-to-new" == r.dataset, r.config
            assert r.protocol["backbone"].startswith(cfg["model"]["init_args"]["clip_model"]), r.config
            continue
        assert cfg["data"]["class_path"].rsplit(".", 1)[1] == r.dataset, r.config
        if r.imb_ratio is not None:
            assert cfg["data"]["init_args"]["imb_ratio"] == r.imb_ratio, r.config
        assert cfg["model"]["init_args"].get("backbone").split(".")[0] == r.protocol["backbone"], r.config  # timm tags aside
        checked += 1
    assert checked >= 8  # the TDE figures (ImageNet-LT, CIFAR-10/100-LT at three ratios, CE baseline)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"metrics": {"overall": 144.0}}, "percentages in \\[0, 100\\]"),
        ({"metrics": {"mAP": 50.0}}, "not multiclass columns"),
        ({"paper": "nobody"}, "not in the papers table"),
        ({"table": None}, "missing table"),
        ({"protocol": {"lr": 0.1}}, "protocol key"),
        ({"year": 2020}, "unknown key"),
    ],
)
def test_a_malformed_reference_is_an_error_naming_it(tmp_path, change, message):
    raw = yaml.safe_load(REFERENCES_FILE.read_text())
    raw["references"] = [{**raw["references"][0], **change}]
    path = tmp_path / "refs.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(LTBenchError, match=f"refs.yaml: references\\[0\\].*{message}"):
        load_references(path)
