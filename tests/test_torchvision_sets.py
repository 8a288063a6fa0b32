"""The prompt-learning papers' datasets through torchvision's classes: DTD and EuroSAT fixtures in their
real on-disk layouts, official vs drawn splits, CoOp's split JSON, one-line errors, and base-to-new over them."""

import json
from dataclasses import replace

import numpy as np
import yaml
import pytest
import torch

from ltbench.cli import run
from ltbench.data import BaseToNew, TorchvisionSet
from ltbench.data.synthetic import write_coop_split, write_fake_dtd, write_fake_eurosat
from ltbench.data.torchvision_sets import SPECS
from ltbench.errors import DataError, LTBenchError
from tests.helpers import REPO

DTD_CLASSES = ["banded", "blotchy", "braided", "bubbly", "bumpy"]
EUROSAT_CLASSES = ["AnnualCrop", "Forest", "Highway", "River"]


def test_dtd_official_partition_one(tmp_path):
    write_fake_dtd(tmp_path, DTD_CLASSES, per_split=3)
    dm = TorchvisionSet("DTD", root=str(tmp_path), image_size=16)
    assert dm.class_names == DTD_CLASSES and dm.train_class_counts == [3] * 5
    assert "official train/val/test" in dm.protocol()["split"] and dm.protocol()["dataset"] == "DTD"
    image, label, index = dm.dataset("test")[4]
    assert image.dtype == torch.uint8 and image.shape == (3, 16, 16) and label == 1 and index == 4
    assert dm.split_targets("val").tolist() == np.repeat(np.arange(5), 3).tolist()


def test_eurosat_without_a_split_gets_a_seeded_stratified_draw(tmp_path):
    write_fake_eurosat(tmp_path, EUROSAT_CLASSES, per_class=10)
    dm = TorchvisionSet("EuroSAT", root=str(tmp_path), image_size=16, split_seed=3)
    assert dm.class_names == sorted(EUROSAT_CLASSES) and dm.train_class_counts == [5] * 4
    assert np.bincount(dm.split_targets("test")).tolist() == [3] * 4
    parts = dm._parts
    keys = [{(id(o), i) for o, i in parts[s][0]} for s in ("train", "val", "test")]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    same = TorchvisionSet("EuroSAT", root=str(tmp_path), image_size=16, split_seed=3)._parts["train"][0]
    other = TorchvisionSet("EuroSAT", root=str(tmp_path), image_size=16, split_seed=4)._parts["train"][0]
    assert [i for _, i in same] == [i for _, i in parts["train"][0]] != [i for _, i in other]
    assert "50/20/30" in dm.protocol()["split"]
    x, y, _ = dm.dataset("train")[0]
    assert x.shape == (3, 16, 16)


def test_coop_split_file_is_read_with_its_class_names(tmp_path):
    images = write_fake_dtd(tmp_path, DTD_CLASSES, per_split=2)
    split = write_coop_split(tmp_path / "split_zhou_DescribableTextures.json", images, DTD_CLASSES, per_split=2)
    dm = TorchvisionSet("DTD", root=str(tmp_path), split_file=str(split), image_size=16)
    assert dm.class_names == DTD_CLASSES and dm.train_class_counts == [2] * 5
    assert dm.protocol()["split"] == "CoOp split file split_zhou_DescribableTextures.json"
    assert dm.dataset("val")[0][0].shape == (3, 16, 16)


def test_bad_split_files_and_missing_data_fail_in_one_line(tmp_path):
    with pytest.raises(DataError, match="torchvision's layout"):
        TorchvisionSet("DTD", root=str(tmp_path / "none")).class_names
    with pytest.raises(DataError, match="does not exist"):
        TorchvisionSet("DTD", split_file=str(tmp_path / "nope.json")).class_names
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": [["a.jpg", "x", "a"]], "val": [], "test": []}))
    with pytest.raises(DataError, match=r"train\[0\]"):
        TorchvisionSet("DTD", split_file=str(bad)).class_names
    with pytest.raises(LTBenchError, match="unknown dataset"):
        TorchvisionSet("Places")
    images = write_fake_dtd(tmp_path, DTD_CLASSES[:2], per_split=1)
    split = write_coop_split(tmp_path / "s.json", images, DTD_CLASSES[:2], per_split=1)
    (images / "banded").rename(images / "gone")
    with pytest.raises(DataError, match="image missing"):
        TorchvisionSet("DTD", split_file=str(split), image_size=16).dataset("train")[0]


def test_every_paper_dataset_has_a_torchvision_class():
    import torchvision.datasets as tvd

    assert len(SPECS) == 10 and all(hasattr(tvd, name) for name in SPECS)


class _NoDownload:
    """A torchvision-like class without ``download`` and without a val split (as ImageNet)."""

    def __init__(self, root, split):
        self.targets = [0, 1, 1] if split == "train" else [1, 0]
        self.classes = [("tench",), ("goldfish",)]

    def __getitem__(self, i):
        return torch.zeros(3, 4, 4, dtype=torch.uint8), self.targets[i]


def test_what_sets_a_dataset_apart_is_its_spec_not_its_name(monkeypatch):
    """A spec like ImageNet's under another name: no download argument, validation on the test split."""
    import torchvision.datasets as tvd

    monkeypatch.setattr(tvd, "FakeNet", _NoDownload, raising=False)
    monkeypatch.setitem(SPECS, "FakeNet", replace(SPECS["ImageNet"]))
    dm = TorchvisionSet("FakeNet", download=True)
    assert dm.class_names == ["tench", "goldfish"] and dm.train_class_counts == [1, 2]
    assert dm.split_targets("val").tolist() == dm.split_targets("test").tolist() == [1, 0]
    assert dm.protocol()["split"] == "torchvision FakeNet: train; val = test = the official val set"


def test_base_to_new_over_a_torchvision_set(tmp_path):
    write_fake_dtd(tmp_path, DTD_CLASSES, per_split=3)
    dm = BaseToNew(TorchvisionSet("DTD", root=str(tmp_path), image_size=16), shots=2, shot_seed=0)
    assert dm.class_names == DTD_CLASSES[:3] and dm.train_class_counts == [2] * 3
    assert [s.class_names for s in dm.test_class_sets()] == [DTD_CLASSES[:3], DTD_CLASSES[3:]]
    assert dm.mean == TorchvisionSet.mean and dm.image_size == 16
    proto = dm.protocol()
    assert proto["dataset"] == "DTD base-to-new" and proto["wrapped"]["split"].startswith("torchvision DTD")


@pytest.mark.parametrize("piece", sorted((REPO / "configs" / "data").glob("tv_*.yaml")), ids=lambda p: p.stem)
def test_cross_dataset_targets_resolve_with_the_source_config(piece, capsys):
    """Every cross-dataset target piece composes with the ImageNet source config (what `ltbench test` runs)."""
    with pytest.raises(SystemExit) as exit_:
        run(["test", "--config", str(REPO / "configs" / "cdc_imagenet_xd.yaml"), "--data", str(piece), "--print_config"])
    assert exit_.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["class_path"] == "ltbench.data.TorchvisionSet"
    assert printed["data"]["init_args"]["name"] in SPECS
