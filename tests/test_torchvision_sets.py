"""The prompt-learning papers' datasets through torchvision's classes: DTD and EuroSAT fixtures in their
real on-disk layouts, official vs drawn splits, CoOp's split JSON, one-line errors, and base-to-new over them;
UCF101 as CoOp ships it (mid-frames and its split file); ImageNet named by torchvision's meta.bin or CoOp's
classnames.txt."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml
import pytest
import torch

from ltbench.cli import run
from ltbench.data import BaseToNew, TorchvisionSet
from ltbench.data.imagenet_variants import LAYOUTS
from ltbench.data.synthetic import (
    write_coop_split,
    write_fake_dtd,
    write_fake_eurosat,
    write_fake_imagenet,
    write_fake_ucf101,
    write_imagenet_classnames,
)
from ltbench.data.torchvision_sets import SPECS
from ltbench.models.clip_text import class_prompts
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


IMAGENET_WNIDS = ["n01440764", "n01443537", "n01484850", "n01491361"]
META_NAMES = ["tench, Tinca tinca", "goldfish, Carassius auratus", "great white shark", "tiger shark, Galeocerdo cuvieri"]
COOP_NAMES = ["tench", "goldfish", "great white shark", "tiger shark"]


def test_imagenet_class_names_from_coops_classnames_file(tmp_path):
    """Names follow the dataset's wnids (not the file's line order); the record says where they came from."""
    root = write_fake_imagenet(tmp_path / "imagenet", IMAGENET_WNIDS, META_NAMES, per_class=1)
    names = write_imagenet_classnames(tmp_path / "classnames.txt", IMAGENET_WNIDS[::-1], COOP_NAMES[::-1])
    dm = TorchvisionSet("ImageNet", root=str(root), classnames=str(names), image_size=16)
    assert dm.class_names == COOP_NAMES
    assert dm.split_targets("test").tolist() == [0, 1, 2, 3] and dm.dataset("train")[2][1] == 2
    assert dm.protocol()["class_names_from"] == str(names)


def test_imagenet_class_names_default_to_torchvisions_meta(tmp_path):
    root = write_fake_imagenet(tmp_path / "imagenet", IMAGENET_WNIDS, META_NAMES, per_class=1)
    dm = TorchvisionSet("ImageNet", root=str(root), image_size=16)
    assert dm.class_names == META_NAMES
    assert dm.protocol()["class_names_from"] == str(root / "meta.bin")
    write_fake_dtd(tmp_path, DTD_CLASSES, per_split=1)
    assert "class_names_from" not in TorchvisionSet("DTD", root=str(tmp_path)).protocol()


def test_a_classnames_file_that_does_not_fit_the_dataset_fails_in_one_line(tmp_path):
    root = str(write_fake_imagenet(tmp_path / "imagenet", IMAGENET_WNIDS, META_NAMES, per_class=1))
    short = write_imagenet_classnames(tmp_path / "short.txt", IMAGENET_WNIDS[:2] + IMAGENET_WNIDS[3:], COOP_NAMES[:2] + COOP_NAMES[3:])
    with pytest.raises(DataError, match=r"short.txt: no line for wnid n01484850; expected one line per class of the dataset \(4 classes\)") as e:
        TorchvisionSet("ImageNet", root=root, classnames=str(short)).class_names
    assert "\n" not in str(e.value)
    extra = write_imagenet_classnames(tmp_path / "extra.txt", [*IMAGENET_WNIDS, "n99999999"], [*COOP_NAMES, "nothing"])
    with pytest.raises(DataError, match=r"extra.txt:5: wnid n99999999 is not a class of the dataset"):
        TorchvisionSet("ImageNet", root=root, classnames=str(extra)).class_names
    twice = tmp_path / "twice.txt"
    twice.write_text("".join(f"{w} {n}\n" for w, n in zip(IMAGENET_WNIDS, COOP_NAMES)) + f"{IMAGENET_WNIDS[0]} tench again\n")
    with pytest.raises(DataError, match=r"twice.txt:5: wnid n01440764 is listed a second time"):
        TorchvisionSet("ImageNet", root=root, classnames=str(twice)).class_names
    with pytest.raises(DataError, match=r"classnames file .*nope.txt does not exist; .* linked from https://github.com/KaiyangZhou/CoOp"):
        TorchvisionSet("ImageNet", root=root, classnames=str(tmp_path / "nope.txt")).class_names
    with pytest.raises(LTBenchError, match="only ImageNet's classes are named from a classnames file; DTD names its own"):
        TorchvisionSet("DTD", classnames=str(short))


def test_every_paper_dataset_has_a_torchvision_class_or_needs_coops_split_file():
    import torchvision.datasets as tvd

    assert len(SPECS) == 11 and all(hasattr(tvd, name) for name, spec in SPECS.items() if not spec.split_file_from)
    assert [name for name, spec in SPECS.items() if spec.split_file_from] == ["UCF101"]


# CoOp's UCF101 labels follow classInd.txt (the CamelCase action names, sorted); frame folders split at capitals
UCF_ACTIONS = ["ApplyEyeMakeup", "Archery", "BabyCrawling", "PlayingDaf", "YoYo"]
UCF_CLASSES = ["Apply_Eye_Makeup", "Archery", "Baby_Crawling", "Playing_Daf", "Yo_Yo"]


def test_ucf101_midframes_with_coops_split_file(tmp_path):
    frames = write_fake_ucf101(tmp_path, UCF_ACTIONS, groups=3, clips=2)
    assert sorted(p.name for p in frames.iterdir()) == UCF_CLASSES
    split = write_coop_split(tmp_path / "ucf101" / "split_zhou_UCF101.json", frames, UCF_CLASSES, per_split=2)
    dm = TorchvisionSet("UCF101", root=str(tmp_path), split_file=str(split), image_size=16)
    assert dm.class_names == UCF_CLASSES and dm.train_class_counts == [2] * 5
    assert class_prompts(dm.class_names)[0] == "a photo of a Apply Eye Makeup."
    for part in ("train", "val", "test"):
        items, targets = dm._parts[part]
        assert len(items) == 10 and [UCF_CLASSES[t] for t in targets] == [Path(p).parent.name for _, p in items]
    image, label, _ = dm.dataset("test")[3]
    assert image.shape == (3, 16, 16) and label == 1
    assert dm.protocol()["dataset"] == "UCF101" and dm.protocol()["split"] == "CoOp split file split_zhou_UCF101.json"
    b2n = BaseToNew(dm, shots=1, shot_seed=0)
    assert [s.class_names for s in b2n.test_class_sets()] == [UCF_CLASSES[:3], UCF_CLASSES[3:]]
    assert b2n.train_class_counts == [1] * 3 and b2n.protocol()["dataset"] == "UCF101 base-to-new"
    assert b2n.dataset("test").labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_ucf101_without_its_split_file_says_where_coop_publishes_it(tmp_path):
    write_fake_ucf101(tmp_path, UCF_ACTIONS[:2], groups=1, clips=1)
    with pytest.raises(DataError, match=r"UCF101: .*split file is required: give split_file \(split_zhou_UCF101.json, published at https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md#ucf101\)") as e:
        TorchvisionSet("UCF101", root=str(tmp_path)).class_names
    assert "\n" not in str(e.value)


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
    names = {"ltbench.data.TorchvisionSet": SPECS, "ltbench.data.ImageNetVariant": LAYOUTS}[printed["data"]["class_path"]]
    assert printed["data"]["init_args"]["name"] in names
