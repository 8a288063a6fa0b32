"""List-file datasets: the real ImageNet-LT val/test lists, parsing speed, errors and image items."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ltbench.data.lists import ImageListLT, ImageNetLT, INat2018, KnownList, PlacesLT, file_digests
from ltbench.errors import DataError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
IMAGENET_LT_SPLITS = SHARED / "data" / "splits" / "imagenet_lt"


@pytest.fixture
def imagenet_lt_lists() -> Path:
    if not (IMAGENET_LT_SPLITS / "ImageNet_LT_val.txt").is_file():
        pytest.skip(f"real ImageNet-LT lists not present at {IMAGENET_LT_SPLITS} (shared data dir absent)")
    return IMAGENET_LT_SPLITS


def _write_list(path: Path, rows) -> Path:
    path.write_text("".join(f"{p} {y}\n" for p, y in rows))
    return path


def test_real_imagenet_lt_val_and_test(imagenet_lt_lists, tmp_path):
    dm = ImageNetLT(root=str(tmp_path), list_dir=str(imagenet_lt_lists))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        val, test = dm.read_list("val"), dm.read_list("test")
    assert dm.num_classes == 1000
    assert np.bincount(val.labels, minlength=1000).tolist() == [20] * 1000
    assert np.bincount(test.labels, minlength=1000).tolist() == [50] * 1000
    assert val.verified_as == "ImageNet_LT_val.txt" and test.verified_as == "ImageNet_LT_test.txt"
    assert val.digests["git_blob"].startswith("3ed3188b") and test.digests["git_blob"].startswith("76a2fb97")
    assert val.paths[0] == "train/n01440764/n01440764_762.JPEG"
    assert all(p.startswith("val/") for p in test.paths[:100])
    assert len(dm.dataset("test")) == 50000


def test_missing_train_list_names_path_and_source(imagenet_lt_lists, tmp_path):
    dm = ImageNetLT(root=str(tmp_path), list_dir=str(imagenet_lt_lists))
    with pytest.raises(DataError) as e:
        dm.train_class_counts
    msg = str(e.value)
    assert str(imagenet_lt_lists / "ImageNet_LT_train.txt") in msg
    assert "classifier-balancing" in msg and "OLTR" in msg and "\n" not in msg


def test_git_blob_id_verifies_a_list(tmp_path):
    """A file known only by its git blob id (as the ImageNet-LT train list is) counts as verified."""
    data = b"a/0.jpg 0\nb/1.jpg 1\n"
    (tmp_path / "train.txt").write_bytes(data)

    class Mine(ImageListLT):
        known_lists = (KnownList("mine_train", git_blob=file_digests(data)["git_blob"]),)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lst = Mine(root=str(tmp_path)).read_list("train")
    assert lst.verified_as == "mine_train"


def test_large_list_counts_every_line(tmp_path):
    """120,000 lines (its speed: benchmarks/loading.py, case list_120k)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 1000, size=120_000)
    _write_list(tmp_path / "train.txt", ((f"train/n{y:08d}/n{y:08d}_{i}.JPEG", y) for i, y in enumerate(labels)))
    dm = ImageListLT(root=str(tmp_path))
    with pytest.warns(UserWarning, match="train.txt matches no published"):
        counts = dm.train_class_counts
    assert counts == np.bincount(labels, minlength=1000).tolist()
    assert dm.num_classes == int(labels.max()) + 1


@pytest.mark.parametrize(
    "lines, lineno, what",
    [
        (["a.jpg 0", "b.jpg 1", "c.jpg"], 3, "no label"),
        (["a.jpg 0", "", "b.jpg one"], 3, "not an integer"),
        (["a.jpg -1"], 1, "not 0 or more"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, lines, lineno, what):
    path = tmp_path / "train.txt"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=f"{path}:{lineno}: .*{what}.*expected '<relative image path> <integer label>'"):
        ImageListLT(root=str(tmp_path)).train_targets


def test_label_out_of_range_for_known_class_count(tmp_path):
    _write_list(tmp_path / "Places_LT_train.txt", [("a.jpg", 0), ("b.jpg", 365)])
    with pytest.raises(DataError, match=r"Places_LT_train.txt:2: label 365 is not in 0..364"):
        PlacesLT(root=str(tmp_path)).train_targets


def test_user_list_warns_naming_file(tmp_path):
    path = _write_list(tmp_path / "ImageNet_LT_val.txt", [("x.JPEG", 0), ("y.JPEG", 999)])
    with pytest.warns(UserWarning, match=f"{path} matches no published ImageNet-LT list checksum"):
        lst = ImageNetLT(root=str(tmp_path)).read_list("val")
    assert lst.verified_as is None and lst.labels.tolist() == [0, 999]


@pytest.fixture
def tiny_images(tmp_path) -> Path:
    """Six small JPEGs in two classes (one grayscale, one odd-sized) with train/val/test lists."""
    rng = np.random.default_rng(0)
    rows = []
    for i, (c, size, mode) in enumerate(
        [(0, (40, 30), "RGB"), (0, (33, 50), "L"), (0, (64, 64), "RGB"), (1, (20, 20), "RGB"), (1, (48, 36), "RGB"),
         (1, (36, 48), "RGB")]
    ):
        rel = f"imgs/c{c}/{i}.jpg"
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(tmp_path / rel, quality=90)
        rows.append((rel, c))
    lists = tmp_path / "lists"
    lists.mkdir()
    _write_list(lists / "train.txt", rows)
    _write_list(lists / "val.txt", rows[::2])
    _write_list(lists / "test.txt", rows[1::2])
    (lists / "classnames.txt").write_text("cat\ndog\n")
    return tmp_path


@pytest.mark.filterwarnings("ignore:.*matches no published")
def test_images_load_through_datamodule(tiny_images):
    dm = ImageListLT(root=str(tiny_images), list_dir=str(tiny_images / "lists"), image_size=32, batch_size=3,
                     pin_memory=False)
    assert dm.class_names == ["cat", "dog"] and dm.train_class_counts == [3, 3]
    dm.setup("fit")
    for split in ("train", "val", "test"):
        ds = dm.dataset(split)
        for i in range(len(ds)):
            img, target, index = ds[i]
            assert img.dtype == torch.uint8 and img.shape == (3, 32, 32)
            assert isinstance(target, int) and index == i
    x, y, idx = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.float32
    x, y, idx = next(iter(DataLoader(dm.dataset("test"), batch_size=3)))
    assert y.tolist() == [0, 1, 1] and idx.tolist() == [0, 1, 2]
    proto = dm.protocol()
    assert proto["lists"]["train"]["verified"] is False and len(proto["lists"]["val"]["sha256"]) == 64
    assert proto["test_split"] == "test.txt"


@pytest.mark.filterwarnings("ignore:.*matches no published")
def test_missing_image_names_file(tiny_images):
    (tiny_images / "imgs" / "c1" / "4.jpg").unlink()
    ds = ImageListLT(root=str(tiny_images), list_dir=str(tiny_images / "lists")).dataset("train")
    ds[3]
    with pytest.raises(DataError, match=f"image missing: {tiny_images / 'imgs/c1/4.jpg'}.*train.txt"):
        ds[4]


@pytest.mark.filterwarnings("ignore:.*matches no published")
def test_inat_reports_on_val_and_reads_it_once(tmp_path):
    _write_list(tmp_path / "iNaturalist18_train.txt", [("a.jpg", 0), ("b.jpg", 8141)])
    _write_list(tmp_path / "iNaturalist18_val.txt", [("c.jpg", 3)])
    dm = INat2018(root=str(tmp_path))
    assert dm.num_classes == 8142 and dm.read_list("test") is dm.read_list("val")
    assert dm.protocol()["test_split"] == "iNaturalist18_val.txt"


def test_missing_places_list_is_one_line(tmp_path):
    with pytest.raises(DataError) as e:
        PlacesLT(root=str(tmp_path / "places"), list_dir=str(tmp_path)).read_list("val")
    assert str(tmp_path / "Places_LT_val.txt") in str(e.value) and "\n" not in str(e.value)


def test_published_places_and_inat_checksums_are_known():
    """The lists as shipped with classifier-balancing / the TDE repository verify (SHA-256 from issue 12)."""
    published = {
        (PlacesLT, "train"): "726c4871dcbf07ce2f857703bfe32e9a83ffbf52d704239f6d95c4f4f4c247f7",
        (PlacesLT, "val"): "719e3cf3766c09134ea28f56f1036c78def511ac1ed2c2532a6beef78f2439ba",
        (PlacesLT, "test"): "44eee8441c8098c59195465abede425721bc35525d75209f9433b161a6eb37bc",
        (INat2018, "val"): "efaeff65f80641b60864470e6f255aa69453406ef5717eec8c6681748f3a61f3",
    }
    for (cls, split), sha in published.items():
        known = [k.name for k in cls.known_lists if k.matches({"sha256": sha})]
        assert known == [cls.default_lists[split]], (cls.__name__, split)
    assert not any(k.matches({"sha256": "0" * 64}) for k in PlacesLT.known_lists)


@pytest.mark.filterwarnings("ignore:.*matches no published")
def test_byte_order_mark_is_not_part_of_the_first_path(tmp_path):
    (tmp_path / "train.txt").write_bytes(b"\xef\xbb\xbfa.jpg 0\nb.jpg 1\n")
    (tmp_path / "classnames.txt").write_bytes(b"\xef\xbb\xbfcat\ndog\n")
    dm = ImageListLT(root=str(tmp_path))
    assert dm.read_list("train").paths == ["a.jpg", "b.jpg"] and dm.class_names == ["cat", "dog"]


@pytest.mark.filterwarnings("ignore:.*matches no published")
def test_class_without_training_image_is_warned_and_recorded(tmp_path):
    """Labels shifted by one leave class 0 empty: said once, naming it, and kept in the protocol."""
    _write_list(tmp_path / "train.txt", [("a.jpg", 1), ("b.jpg", 2), ("c.jpg", 2)])
    (tmp_path / "classnames.txt").write_text("cat\ndog\nemu\n")
    for split in ("val", "test"):
        _write_list(tmp_path / f"{split}.txt", [("a.jpg", 0)])
    dm = ImageListLT(root=str(tmp_path))
    with pytest.warns(UserWarning, match=r"1 of 3 classes have no training image \(cat\)"):
        assert dm.train_class_counts == [0, 1, 2]
    assert dm.protocol()["classes_without_training_images"] == ["cat"]
