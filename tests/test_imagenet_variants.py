"""The domain-generalisation targets (ImageNet-V2, -Sketch, -A, -R): fixtures in each archive's real layout
(fake wnids, named by a classnames.txt or a torchvision meta.bin the fixture writes), labels and class names,
V2's integer folders in numeric order, -A/-R scored among their own classes, one-line errors, and a zero-shot
CLIP test run on a target through the CLI."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ltbench.cli import run
from ltbench.data import ImageNetVariant
from ltbench.data.imagenet_variants import LAYOUTS
from ltbench.data.synthetic import write_fake_image_folders, write_fake_imagenet, write_imagenet_classnames
from ltbench.errors import DataError
from tests.helpers import REPO

WNIDS = [f"n{1440764 + 7 * k:08d}" for k in range(12)]
NAMES = [f"class {k}" for k in range(12)]
SUBSET = [1, 5, 10]  # -A/-R: some of ImageNet's classes


@pytest.fixture
def classnames(tmp_path) -> Path:
    return write_imagenet_classnames(tmp_path / "imagenet" / "classnames.txt", WNIDS, NAMES)


def _variant(name, root, classnames, **kw) -> ImageNetVariant:
    return ImageNetVariant(name, root=str(root), classnames=str(classnames), image_size=16, **kw)


def _folder_of_each_item(dm: ImageNetVariant) -> list[str]:
    return [Path(path).parent.name for _, path in dm.dataset("test").items]


def test_v2_integer_folders_are_imagenet_labels_in_numeric_order(tmp_path, classnames):
    write_fake_image_folders(tmp_path / "imagenetv2-matched-frequency-format-val", [str(k) for k in range(12)], per_class=2, ext="jpeg")
    dm = _variant("ImageNetV2", tmp_path, classnames)
    assert dm.class_names == NAMES
    targets = dm.split_targets("test")
    assert [int(f) for f in _folder_of_each_item(dm)] == targets.tolist()  # folder "10" is label 10, not 2
    assert np.bincount(targets).tolist() == [2] * 12
    x, y, i = dm.dataset("test")[5]
    assert x.dtype == torch.uint8 and x.shape == (3, 16, 16) and (y, i) == (int(targets[5]), 5)
    assert dm.protocol()["dataset"] == "ImageNetV2" and dm.split_targets("val").tolist() == targets.tolist()


def test_labels_follow_imagenets_sorted_wnids_whatever_the_classnames_order(tmp_path):
    """Label k is ImageNet's class k (the k-th wnid in sorted order, as the source run's TorchvisionSet labels
    them), whatever order classnames.txt lists its lines in; V2's integer folders index that order too."""
    order = [7, 0, 3, 11, 1, 2, 4, 5, 6, 8, 9, 10]
    names = write_imagenet_classnames(tmp_path / "classnames.txt", [WNIDS[k] for k in order], [NAMES[k] for k in order])
    write_fake_image_folders(tmp_path / "sketch", WNIDS, per_class=1, ext="JPEG")
    dm = _variant("ImageNetSketch", tmp_path, names)
    assert sorted(WNIDS) == WNIDS and dm.class_names == NAMES
    assert list(dm.split_targets("test")) == [WNIDS.index(f) for f in _folder_of_each_item(dm)]
    write_fake_image_folders(tmp_path / "imagenetv2-matched-frequency-format-val", [str(k) for k in range(12)], per_class=1, ext="jpeg")
    v2 = _variant("ImageNetV2", tmp_path, names)
    assert v2.class_names == NAMES and list(v2.split_targets("test")) == [int(f) for f in _folder_of_each_item(v2)]


@pytest.mark.parametrize("name", ["ImageNetA", "ImageNetR"])
def test_a_and_r_are_scored_among_their_own_classes(tmp_path, classnames, name):
    folder = tmp_path / LAYOUTS[name].folder
    write_fake_image_folders(folder, [WNIDS[k] for k in SUBSET], per_class=3)
    (folder / "README.txt").write_text("the 200 classes: ...\n")  # ImageNet-A ships one beside its folders
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a test-only set warns about no missing training images
        dm = _variant(name, tmp_path, classnames)
        assert dm.class_names == [NAMES[k] for k in SUBSET] and dm.train_class_counts == [0] * 3
    assert [SUBSET[t] for t in dm.split_targets("test")] == [WNIDS.index(f) for f in _folder_of_each_item(dm)]
    proto = dm.protocol()
    assert proto["dataset"] == name and "3 of the 12 ImageNet classes" in proto["split"] and proto["classes_without_training_images"] == []


def test_names_from_torchvisions_imagenet_meta(tmp_path):
    """Without classnames.txt: torchvision's meta.bin, first name per wnid in sorted wnid order (as TorchvisionSet's ImageNet)."""
    meta = {w: (f"name {k}", f"alias {k}") for k, w in reversed(list(enumerate(WNIDS)))}
    (tmp_path / "imagenet").mkdir()
    torch.save((meta, []), tmp_path / "imagenet" / "meta.bin")
    write_fake_image_folders(tmp_path / "imagenet-r", [WNIDS[k] for k in SUBSET], per_class=1)
    dm = ImageNetVariant("ImageNetR", root=str(tmp_path), imagenet_root=str(tmp_path / "imagenet"), image_size=16)
    assert dm.class_names == [f"name {k}" for k in SUBSET]
    assert dm.protocol()["class_names_from"].endswith("meta.bin")


def _one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_bad_layouts_fail_in_one_line(tmp_path, classnames):
    with pytest.raises(DataError, match="image folder .*imagenet-a does not exist") as e:
        _variant("ImageNetA", tmp_path, classnames).class_names
    _one_line(e)
    v2 = tmp_path / "imagenetv2-matched-frequency-format-val"
    write_fake_image_folders(v2, [str(k) for k in range(11)], per_class=1)
    with pytest.raises(DataError, match=r"no folder for 1 of the 12 ImageNet classes \(first: 11, 'class 11'\)") as e:
        _variant("ImageNetV2", tmp_path, classnames).class_names
    _one_line(e)
    write_fake_image_folders(v2, ["11", "n01440764"], per_class=1)
    with pytest.raises(DataError, match=r"1 folders of .* are not ImageNet classes \(first: n01440764\); expected class indices 0..11"):
        _variant("ImageNetV2", tmp_path, classnames).class_names
    write_fake_image_folders(tmp_path / "imagenet-r", [WNIDS[0], "n99999999"], per_class=1)
    with pytest.raises(DataError, match=r"first: n99999999\); expected wnids listed in .*classnames.txt"):
        _variant("ImageNetR", tmp_path, classnames).class_names
    (tmp_path / "sketch" / WNIDS[0]).mkdir(parents=True)
    write_fake_image_folders(tmp_path / "sketch", WNIDS[1:], per_class=1)
    with pytest.raises(DataError, match=f"Found no valid file for the classes {WNIDS[0]}") as e:
        _variant("ImageNetSketch", tmp_path, classnames).class_names
    _one_line(e)
    with pytest.raises(DataError, match="no torchvision ImageNet meta file .*meta.bin") as e:
        ImageNetVariant("ImageNetR", root=str(tmp_path), imagenet_root=str(tmp_path / "nowhere")).class_names
    _one_line(e)
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{WNIDS[0]} tench\n{WNIDS[1]}\n")
    with pytest.raises(DataError, match=r"bad.txt:2: .*expected '<wnid> <class name>' lines"):
        _variant("ImageNetR", tmp_path, bad).class_names
    dm = _variant("ImageNetV2", tmp_path, classnames)
    with pytest.raises(DataError, match="ImageNetV2 is a test-only set .*train on ImageNet"):
        dm.dataset("train")


def test_zero_shot_clip_tests_on_a_target_through_the_cli(tmp_path, classnames):
    """`ltbench test` with the committed target piece: the tiny CLIP scores ImageNet-A's classes, the record
    names the dataset and its split."""
    write_fake_image_folders(tmp_path / "imagenet-a", [WNIDS[k] for k in SUBSET], per_class=2)
    cli = run([
        "test", "--config", str(REPO / "configs" / "zeroshot_digits_b2n.yaml"), "--data", str(REPO / "configs" / "data" / "tv_imagenet_a.yaml"),
        "--data.init_args.root", str(tmp_path), "--data.init_args.classnames", str(classnames), "--data.init_args.image_size", "16",
        "--data.init_args.num_workers", "0", "--model.init_args.clip_pretrained", "null", "--run_dir", str(tmp_path / "runs"),
        "--trainer.enable_progress_bar", "false",
    ])  # fmt: skip
    record = json.loads(cli.model.record_path.read_text())
    assert record["dataset"] == "ImageNetA" and record["protocol"]["split"].startswith("test-only: all 6 images under imagenet-a/")
    assert record["per_class"]["class_names"] == [NAMES[k] for k in SUBSET]
    assert record["num_test_samples"] == record["test_split_size"] == 6 and 0 <= record["metrics"]["acc"] <= 1


@pytest.mark.slow
@pytest.mark.parametrize("coop_names", [False, True], ids=["meta", "classnames"])
def test_prompts_trained_on_imagenet_test_on_a_target_as_the_xd_config_says(tmp_path, coop_names):
    """The documented command: fit cdc_imagenet_xd.yaml (16-shot ImageNet, here a 12-class fixture and the tiny
    CLIP), then `ltbench test --data configs/data/tv_imagenet_v2.yaml --ckpt_path`: the trained prompts score V2,
    with the class names the source run used: ImageNet's meta.bin, or CoOp's classnames.txt given to both."""
    data = tmp_path / "data"
    write_fake_imagenet(data / "imagenet", WNIDS, [f"meta {k}" for k in range(12)] if coop_names else NAMES, per_class=2)
    names_file = write_imagenet_classnames(data / "imagenet" / "classnames.txt", WNIDS, NAMES)
    source_names = ["--data.init_args.data.init_args.classnames", str(names_file)] if coop_names else []
    target_names = ["--data.init_args.classnames", str(names_file)] if coop_names else []
    names_from = str(names_file) if coop_names else str(data / "imagenet" / "meta.bin")
    write_fake_image_folders(data / "imagenetv2" / "imagenetv2-matched-frequency-format-val", [str(k) for k in range(12)], per_class=1, ext="jpeg")
    xd = str(REPO / "configs" / "cdc_imagenet_xd.yaml")
    cpu = ["--model.init_args.clip_model", "ltbench-tiny-clip", "--model.init_args.clip_pretrained", "null", "--trainer.accelerator", "cpu",
           "--trainer.precision", "32-true", "--trainer.benchmark", "false", "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
           "--trainer.callbacks", "null", "--run_dir", str(tmp_path / "runs")]  # fmt: skip
    source = ["--data.init_args.data.init_args.root", str(data / "imagenet"), "--data.init_args.data.init_args.image_size", "16",
              "--data.init_args.data.init_args.num_workers", "0"]  # fmt: skip
    fit = run(["fit", "--config", xd, *source, *source_names, *cpu, "--test_after_fit", "false"])
    assert fit.model.class_names == NAMES
    assert fit.datamodule.data.protocol()["class_names_from"] == names_from
    ckpt = next((tmp_path / "runs").rglob("last.ckpt"))
    target = ["--data", str(REPO / "configs" / "data" / "tv_imagenet_v2.yaml"), "--data.init_args.root", str(data / "imagenetv2"),
              "--data.init_args.imagenet_root", str(data / "imagenet"), "--data.init_args.image_size", "16", "--data.init_args.num_workers", "0"]  # fmt: skip
    cli = run(["test", "--config", xd, *target, *target_names, *cpu, "--ckpt_path", str(ckpt)])
    record = json.loads(cli.model.record_path.read_text())
    assert record["dataset"] == "ImageNetV2" and record["per_class"]["class_names"] == NAMES and record["num_test_samples"] == 12
    assert record["protocol"]["class_names_from"] == names_from
    assert torch.equal(cli.model.contexts.detach(), torch.load(ckpt, weights_only=True)["state_dict"]["contexts"])
    # a second target, no --name: its own folder, the first target's record stays (runs are named by dataset)
    write_fake_image_folders(data / "imagenet-a", [WNIDS[k] for k in SUBSET], per_class=1)
    target_a = ["--data", str(REPO / "configs" / "data" / "tv_imagenet_a.yaml"), "--data.init_args.root", str(data),
                "--data.init_args.imagenet_root", str(data / "imagenet"), "--data.init_args.image_size", "16", "--data.init_args.num_workers", "0"]  # fmt: skip
    second = run(["test", "--config", xd, *target_a, *target_names, *cpu, "--ckpt_path", str(ckpt)])
    assert cli.model.record_path.parent.parent.name == "CDC-ImageNetV2" and second.model.record_path.parent.parent.name == "CDC-ImageNetA"
    assert ckpt.parent.parent.parent.name == "CDC-FewShot-ImageNet"
    assert json.loads(cli.model.record_path.read_text())["dataset"] == "ImageNetV2"
