"""COCO-LT and VOC-LT: the real published lists, parsing traps, errors, lists vs raw annotations, items."""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ltbench.data import COCOLT, VOCLT
from ltbench.data.multilabel import COCO_NAMES, Cutout, labels_sha256
from ltbench.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared"
SPLITS = SHARED / "data" / "splits"
GROUP_KEYS = {"many": "head", "medium": "middle", "few": "tail"}
UNKNOWN = "ignore:.*matches no published"
#: The 80 COCO 2017 category ids (1..90 with gaps), so fixtures exercise the sorted-id label order.
COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


def _shared(name: str) -> Path:
    path = SPLITS / name
    if not path.is_dir():
        pytest.skip(f"real {name} split files not present at {path} (shared data dir absent)")
    return path


def _check_real(dm, split_dir: Path, n_train: int, n_test: int, n_classes: int, positives: int, groups) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        counts = dm.train_class_counts
        test = dm.read_split("test")
        protocol = dm.protocol()
    with open(split_dir / "class_freq.pkl", "rb") as f:
        freq = pickle.load(f)
    with open(split_dir / "class_split.pkl", "rb") as f:
        official = pickle.load(f)
    assert (len(dm.train_targets), len(test.paths), dm.num_classes) == (n_train, n_test, n_classes)
    assert dm.train_targets.shape == (n_train, n_classes) and set(np.unique(dm.train_targets)) == {0, 1}
    assert sum(counts) == positives and counts == freq["class_freq"].tolist()
    assert [int(v.sum()) for v in dm.groups.values()] == list(groups)
    for ours, theirs in GROUP_KEYS.items():
        assert set(np.flatnonzero(dm.groups[ours]).tolist()) == {int(c) for c in official[theirs]}
    assert all(rec["verified"] for rec in protocol["files"].values()) and len(protocol["files"]) == 3
    assert protocol["source"] == "lists" and protocol["image_size"] == 448
    assert protocol["group_sizes"] == dict(zip(("many", "medium", "few"), groups))


def test_real_coco_lt(tmp_path):
    split_dir = _shared("coco_lt")
    dm = COCOLT(root=str(tmp_path), list_dir=str(split_dir))
    _check_real(dm, split_dir, 1909, 5000, 80, 8316, (22, 33, 25))
    test = dm.read_split("test")
    assert int((test.targets.sum(1) == 0).sum()) == 48
    assert dm.class_names[9] == "traffic light" and dm.class_names == list(COCO_NAMES)
    train = dm.read_split("train")
    assert all(p.startswith("train2017/") for p in train.paths) and all(p.startswith("val2017/") for p in test.paths)
    ids = {int(x) for x in (split_dir / "img_id.pkl").read_text().split()}
    assert ids == {int(p[len("train2017/") : -4]) for p in train.paths}
    assert dm.groups["many"][24]  # backpack, exactly 100 images: head under >= 100


def test_real_voc_lt(tmp_path):
    split_dir = _shared("voc_lt")
    dm = VOCLT(root=str(tmp_path), list_dir=str(split_dir))
    _check_real(dm, split_dir, 1142, 4952, 20, 2346, (6, 6, 8))
    test = dm.read_split("test")
    assert int((test.targets.sum(1) == 0).sum()) == 0
    assert dm.class_names[0] == "aeroplane" and dm.class_names[-1] == "tvmonitor"
    ids = (split_dir / "img_id.txt").read_text().split()
    assert [p.split("/")[-1][:-4] for p in dm.read_split("train").paths] == ids
    assert all(p.startswith("VOCdevkit/VOC2007/JPEGImages/") for p in test.paths)
    assert dm.groups["many"][15]  # pottedplant, exactly 100 images


# ---- parsing traps and errors ---------------------------------------------------------------------
@pytest.mark.filterwarnings(UNKNOWN)
def test_list_traps(tmp_path):
    """No final newline, trailing spaces, CRLF, blank and label-less lines, repeats, names with spaces."""
    (tmp_path / "coco_lt_train.txt").write_bytes(
        b"train2017/a.jpg 0 62 \r\n\r\ntrain2017/b.jpg 9 9 79  \n   \ntrain2017/c.jpg 5"
    )
    (tmp_path / "coco_lt_test.txt").write_bytes(b"val2017/x.jpg\nval2017/y.jpg 1 \nval2017/z.jpg   \n")
    (tmp_path / "coco_labels.txt").write_bytes(
        "".join(f"{n} {i} \r\n" for i, n in enumerate(COCO_NAMES)).encode()[:-2]
    )
    dm = COCOLT(root=str(tmp_path))
    with pytest.warns(UserWarning, match="coco_lt_train.txt matches no published COCO-LT file checksum"):
        targets = dm.train_targets
    assert dm.class_names[9] == "traffic light" and dm.class_names[79] == "toothbrush"
    assert [np.flatnonzero(t).tolist() for t in targets] == [[0, 62], [9, 79], [5]]
    assert dm.read_split("train").paths == ["train2017/a.jpg", "train2017/b.jpg", "train2017/c.jpg"]
    test = dm.read_split("test")
    assert test.targets.sum(1).tolist() == [0, 1, 0] and dm.read_split("val") is test


def test_missing_list_names_path_and_source(tmp_path):
    dm = VOCLT(root=str(tmp_path / "voc"), list_dir=str(tmp_path))
    with pytest.raises(DataError) as e:
        dm.train_targets
    msg = str(e.value)
    assert str(tmp_path / "voc_lt_train.txt") in msg and "CPRFL" in msg and "source='annotations'" in msg
    assert "\n" not in msg


@pytest.mark.filterwarnings(UNKNOWN)
@pytest.mark.parametrize(
    "text, lineno, what",
    [
        ("a.jpg 0 1\nb.jpg 2 x\n", 2, "label 'x' is not an integer"),
        ("a.jpg 0\n\nb.jpg\nc.jpg 3 20\n", 4, "label 20 is not in 0..19"),
        ("a.jpg -1\n", 1, "label -1 is not in 0..19"),
    ],
)
def test_malformed_list_line_names_file_and_line(tmp_path, text, lineno, what):
    path = tmp_path / "voc_lt_train.txt"
    path.write_text(text)
    with pytest.raises(DataError, match=rf"{path}:{lineno}: {what} in .*expected '<relative image path> <label>"):
        VOCLT(root=str(tmp_path)).train_targets


@pytest.mark.filterwarnings(UNKNOWN)
def test_malformed_labels_file(tmp_path):
    path = tmp_path / "voc_labels.txt"
    path.write_text("aeroplane 0\nbicycle\n")
    with pytest.raises(DataError, match=rf"{path}:2: no class index in 'bicycle'"):
        VOCLT(root=str(tmp_path)).class_names
    path.write_text("aeroplane 0\nbicycle 1\n")
    with pytest.raises(DataError, match="lists 2 class names, expected 20"):
        VOCLT(root=str(tmp_path)).class_names


# ---- fixtures: raw annotations and the lists they should give ------------------------------------------
def _jpeg(path: Path, size=(40, 30), seed=0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)


def _ann(aid, image_id, cat, bbox=(1, 1, 10, 10), area=100.0, **extra):
    return {"id": aid, "image_id": image_id, "category_id": cat, "bbox": list(bbox), "area": area, "iscrowd": 0, **extra}


@pytest.fixture
def coco_root(tmp_path) -> Path:
    """Train ids 2, 1 (id-file order); image 1: person + a crowd car; image 2: toothbrush, plus an ignored,
    a zero-area and a sub-pixel annotation that must not count; val: one labelled, one empty image."""
    root = tmp_path / "coco"
    cats = [{"id": c, "name": n, "supercategory": "x"} for c, n in zip(COCO_IDS, COCO_NAMES)]
    train = {
        "images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in (1, 2, 3)],
        "categories": cats[::-1],
        "annotations": [
            _ann(1, 1, 1), _ann(2, 1, 3, iscrowd=1), _ann(3, 2, 90), _ann(4, 2, 5, ignore=True),
            _ann(5, 2, 6, area=0.0), _ann(6, 2, 7, bbox=(0, 0, 0.5, 10)), _ann(7, 3, 1),
        ],
    }  # fmt: skip
    val = {
        "images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in (11, 10)],
        "categories": cats,
        "annotations": [_ann(8, 11, 44), _ann(9, 11, 47), _ann(10, 11, 47)],
    }
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_train2017.json").write_text(json.dumps(train))
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(val))
    (root / "img_id.pkl").write_text("2\n1\n")
    # bottle (44) and cup (47) are labels 39 and 41; toothbrush (90) is 79
    (root / "coco_lt_train.txt").write_text("train2017/000000000002.jpg 79 \ntrain2017/000000000001.jpg 0 2 \n")
    (root / "coco_lt_test.txt").write_text("val2017/000000000011.jpg 39 41\nval2017/000000000010.jpg\n")
    for i, rel in enumerate(["train2017/000000000001.jpg", "train2017/000000000002.jpg", "val2017/000000000010.jpg",
                             "val2017/000000000011.jpg"]):
        _jpeg(root / rel, size=(40 + 8 * i, 30), seed=i)
    return root


def _voc_xml(path: Path, objects) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    objs = "".join(
        f"<object><name>{n}</name><pose>Left</pose><difficult>{d}</difficult>"
        f"<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>"
        for n, d in objects
    )
    path.write_text(f"<annotation><folder>VOC</folder><filename>{path.stem}.jpg</filename>{objs}</annotation>")


@pytest.fixture
def voc_root(tmp_path) -> Path:
    """A difficult-only class counts as positive (DB-Loss), as does every repeated object."""
    root = tmp_path / "voc"
    dev = root / "VOCdevkit"
    _voc_xml(dev / "VOC2012/Annotations/2008_000002.xml", [("person", 0), ("dog", 1), ("person", 0)])
    _voc_xml(dev / "VOC2012/Annotations/2008_000001.xml", [("cat", 1)])
    _voc_xml(dev / "VOC2007/Annotations/000001.xml", [("tvmonitor", 0), ("aeroplane", 1)])
    _voc_xml(dev / "VOC2007/Annotations/000002.xml", [("pottedplant", 0)])
    (dev / "VOC2007/ImageSets/Main").mkdir(parents=True)
    (dev / "VOC2007/ImageSets/Main/test.txt").write_text("000001\n000002\n")
    (root / "img_id.txt").write_text("2008_000002\n2008_000001")
    (root / "voc_lt_train.txt").write_text(
        "VOCdevkit/VOC2012/JPEGImages/2008_000002.jpg 14 11\nVOCdevkit/VOC2012/JPEGImages/2008_000001.jpg 7"
    )
    (root / "voc_lt_test.txt").write_text(
        "VOCdevkit/VOC2007/JPEGImages/000001.jpg 19 0\nVOCdevkit/VOC2007/JPEGImages/000002.jpg 15\n"
    )
    for i, name in enumerate(["VOC2012/JPEGImages/2008_000001", "VOC2012/JPEGImages/2008_000002",
                              "VOC2007/JPEGImages/000001", "VOC2007/JPEGImages/000002"]):
        _jpeg(dev / f"{name}.jpg", size=(30, 44 - 4 * i), seed=10 + i)
    return root


@pytest.mark.filterwarnings(UNKNOWN)
@pytest.mark.parametrize("cls, fixture", [(COCOLT, "coco_root"), (VOCLT, "voc_root")])
def test_lists_and_annotations_agree(cls, fixture, request):
    root = request.getfixturevalue(fixture)
    lists, anns = cls(root=str(root)), cls(root=str(root), source="annotations")
    for split in ("train", "test"):
        a, b = lists.read_split(split), anns.read_split(split)
        assert a.paths == b.paths
        np.testing.assert_array_equal(a.targets, b.targets)
    assert lists.train_class_counts == anns.train_class_counts
    pa, pb = lists.protocol(), anns.protocol()
    assert pa["train_labels_sha256"] == pb["train_labels_sha256"] and pa["test_labels_sha256"] == pb["test_labels_sha256"]
    assert (pa["source"], pb["source"]) == ("lists", "annotations")


def test_coco_annotation_semantics(coco_root):
    dm = COCOLT(root=str(coco_root), source="annotations")
    with pytest.warns(UserWarning, match="img_id.pkl matches no published"):
        train = dm.read_split("train")
    assert train.paths == ["train2017/000000000002.jpg", "train2017/000000000001.jpg"]
    assert [np.flatnonzero(t).tolist() for t in train.targets] == [[79], [0, 2]]  # crowd kept, ignored/empty dropped
    assert dm.read_split("test").targets.sum(1).tolist() == [2, 0]


def test_voc_annotation_errors_name_the_file(voc_root):
    xml = voc_root / "VOCdevkit/VOC2007/Annotations/000002.xml"
    _voc_xml(xml, [("potted plant", 0)])
    with pytest.raises(DataError, match=rf"{xml}: object name 'potted plant' is not a VOC class"):
        VOCLT(root=str(voc_root), source="annotations").read_split("test")
    xml.unlink()
    with pytest.raises(DataError, match=rf"VOC annotation missing: {xml}"):
        VOCLT(root=str(voc_root), source="annotations").read_split("test")


@pytest.mark.filterwarnings(UNKNOWN)
def test_coco_id_not_in_annotations(coco_root):
    (coco_root / "img_id.pkl").write_text("1\n77\n")
    with pytest.raises(DataError, match=r"instances_train2017.json has no image with id 77.*img_id.pkl"):
        COCOLT(root=str(coco_root), source="annotations").train_targets


# ---- items ----------------------------------------------------------------------------------------
@pytest.mark.filterwarnings(UNKNOWN)
@pytest.mark.parametrize("augment", ["cprfl", "dbloss", "flip", "none"])
def test_items_load(coco_root, augment):
    dm = COCOLT(root=str(coco_root), image_size=32, train_augment=augment, batch_size=2, pin_memory=False)
    dm.setup("fit")
    for split in ("train", "val", "test"):
        ds = dm.dataset(split)
        for i in range(len(ds)):
            img, target, index = ds[i]
            assert img.dtype == torch.uint8 and img.shape == (3, 32, 32)
            assert target.dtype == torch.float32 and target.shape == (80,) and index == i
    x, y, idx = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (2, 80)
    _, y, idx = next(iter(DataLoader(dm.dataset("test"), batch_size=2)))
    assert y.sum(1).tolist() == [2.0, 0.0] and idx.tolist() == [0, 1]


@pytest.mark.filterwarnings(UNKNOWN)
def test_unnormalised_option_feeds_x_over_255(voc_root):
    dm = VOCLT(root=str(voc_root), image_size=16, normalize=False, train_augment="none")
    img, target, _ = dm.dataset("test")[0]
    x, _, _ = dm.on_after_batch_transfer((img[None], target[None], torch.tensor([0])), 0)
    torch.testing.assert_close(x, img[None].float() / 255)
    assert VOCLT.mean != dm.mean and dm.protocol()["normalize"].startswith("none")


@pytest.mark.filterwarnings(UNKNOWN)
def test_missing_image_names_the_file(voc_root):
    path = voc_root / "VOCdevkit/VOC2007/JPEGImages/000002.jpg"
    path.unlink()
    ds = VOCLT(root=str(voc_root)).dataset("test")
    ds[0]
    with pytest.raises(DataError, match=rf"image missing: {path} \(entry 2 of .*voc_lt_test.txt\)"):
        ds[1]
    path.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=rf"image unreadable: {path}"):
        ds[1]


def test_cutout_fills_one_square():
    torch.manual_seed(0)
    img = torch.zeros(3, 40, 40, dtype=torch.uint8)
    for _ in range(20):
        out = Cutout(0.5)(img)
        changed = (out != img).any(0)
        assert img.eq(0).all() and changed.sum() <= 21 * 21
        if changed.any():
            ys, xs = torch.nonzero(changed, as_tuple=True)
            assert changed[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].all()


def test_labels_sha256_ignores_order():
    t = np.array([[1, 1, 0], [0, 0, 0]], dtype=np.uint8)
    assert labels_sha256(["a", "b"], t) == labels_sha256(["b", "a"], t[::-1])
    assert labels_sha256(["a", "b"], t) != labels_sha256(["a", "b"], t[:, ::-1])
