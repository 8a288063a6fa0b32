"""CIFAR-10/100-LT: the LDAM subset, its sizes, file verification and items.

Fixtures are fake pickles in torchvision's exact layout with random pixels and the real label
distribution (5,000 / 500 train and 1,000 / 100 test images per class); the MD5 table is pointed at
the fixtures' own digests so verification stays switched on.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ltbench.data import cifar
from ltbench.data.cifar import CIFAR10LT, CIFAR100LT
from ltbench.data.longtail import indices_sha256
from ltbench.data.synthetic import write_fake_cifar
from ltbench.errors import DataError


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Fake CIFAR-10 and CIFAR-100 under one root, and the MD5s of their files."""
    root = tmp_path_factory.mktemp("cifar")
    return root, write_fake_cifar(root)


@pytest.fixture
def root(cifar_root, monkeypatch) -> Path:
    path, md5s = cifar_root
    monkeypatch.setattr(cifar, "MD5S", md5s)
    return path


def _raw(path: Path, files: list[str], key: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for name in files:
        with open(path / name, "rb") as f:
            d = pickle.load(f, encoding="latin1")
        xs.append(d["data"])
        ys.append(np.asarray(d[key]))
    return np.concatenate(xs), np.concatenate(ys)


def _reference_subset(targets: np.ndarray, num_classes: int, imb_ratio: float, seed: int) -> np.ndarray:
    """LDAM-DRW's ``gen_imbalanced_data`` written out with the legacy global NumPy RNG."""
    state = np.random.get_state()
    try:
        n_max = len(targets) / num_classes
        counts = [int(n_max * (1.0 / imb_ratio) ** (i / (num_classes - 1.0))) for i in range(num_classes)]
        np.random.seed(seed)
        kept = []
        for c, n in enumerate(counts):
            idx = np.where(targets == c)[0]
            np.random.shuffle(idx)
            kept.append(idx[:n])
        return np.concatenate(kept)
    finally:
        np.random.set_state(state)


C10_TRAIN = [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)]


def test_cifar10_rho100_per_class_counts(root):
    dm = CIFAR10LT(root=str(root))
    assert dm.train_class_counts == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert len(dm.train_targets) == 12406
    assert dm.class_names[0] == "airplane" and dm.num_classes == 10


@pytest.mark.parametrize(
    "cls, rho, total, groups",
    [
        (CIFAR10LT, 100, 12406, (8, 2, 0)),
        (CIFAR10LT, 50, 13996, (9, 1, 0)),
        (CIFAR10LT, 10, 20431, (10, 0, 0)),
        (CIFAR100LT, 100, 10847, (35, 35, 30)),
        (CIFAR100LT, 50, 12608, (41, 41, 18)),
        (CIFAR100LT, 10, 19573, (69, 31, 0)),
        (CIFAR100LT, 200, 9502, (30, 31, 39)),
    ],
)
def test_sizes_and_groups_match_spec_table(root, cls, rho, total, groups):
    dm = cls(root=str(root), imb_ratio=rho)
    counts = dm.train_class_counts
    assert sum(counts) == total
    assert counts[0] == (5000 if cls is CIFAR10LT else 500)
    assert counts == sorted(counts, reverse=True)
    g = dm.groups
    assert (int(g["many"].sum()), int(g["medium"].sum()), int(g["few"].sum())) == groups


def test_cifar100_rho100_head_and_tail(root):
    counts = CIFAR100LT(root=str(root)).train_class_counts
    assert counts[:3] == [500, 477, 455] and counts[-1] == 5


def test_step_profile(root):
    counts = CIFAR10LT(root=str(root), imb_ratio=10, imb_profile="step").train_class_counts
    assert counts == [5000] * 5 + [500] * 5


@pytest.mark.parametrize("cls, seed", [(CIFAR10LT, 0), (CIFAR10LT, 7), (CIFAR100LT, 0)])
def test_subset_matches_independent_ldam_reference(root, cls, seed):
    dm = cls(root=str(root), subset_seed=seed)
    if cls is CIFAR10LT:
        x, y = _raw(root, C10_TRAIN, "labels")
    else:
        x, y = _raw(root, ["cifar-100-python/train"], "fine_labels")
    ref = _reference_subset(y, dm.num_classes, 100.0, seed)
    np.testing.assert_array_equal(dm.subset_indices, ref)
    np.testing.assert_array_equal(dm.train_targets, y[ref])
    ds = dm.dataset("train")
    ds.transform = None
    for i in (0, len(ref) // 2, len(ref) - 1):
        img, target, index = ds[i]
        assert torch.equal(img, torch.from_numpy(x[ref[i]].reshape(3, 32, 32)))
        assert target == y[ref[i]] and index == i
    extras = dm.protocol()
    assert extras["subset_sha256"] == indices_sha256(ref)
    assert extras["num_train"] == len(ref) and extras["subset_seed"] == seed


def test_seed_changes_subset(root):
    a = CIFAR10LT(root=str(root), subset_seed=0).subset_indices
    b = CIFAR10LT(root=str(root), subset_seed=1).subset_indices
    assert len(a) == len(b) and not np.array_equal(a, b)


def test_items_and_splits(root):
    dm = CIFAR10LT(root=str(root))
    img, target, index = dm.dataset("train")[5]
    assert img.dtype == torch.uint8 and img.shape == (3, 32, 32)
    assert isinstance(target, int) and index == 5
    x, y = _raw(root, ["cifar-10-batches-py/test_batch"], "labels")
    test = dm.dataset("test")
    assert len(test) == 10000 and len(dm.dataset("val")) == 10000
    img, target, index = test[123]
    assert torch.equal(img, torch.from_numpy(x[123].reshape(3, 32, 32)))
    assert (target, index) == (int(y[123]), 123)
    assert np.bincount(test.targets).tolist() == [1000] * 10
    assert (dm.in_chans, dm.image_size) == (3, 32)
    proto = dm.protocol()
    assert proto["val_split"] == "test" and proto["imb_ratio"] == 100.0 and proto["imb_profile"] == "exp"


def test_batches_normalise_on_device(root):
    dm = CIFAR100LT(root=str(root), batch_size=16, pin_memory=False)
    dm.setup("fit")
    x, y, idx = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32
    assert y.shape == (16,) and idx.shape == (16,)


def test_batches_resize_on_device_after_normalising(root):
    """ViT recipes: 32 px crop and flip on the host, bilinear resize on the device; the record says so."""
    dm = CIFAR100LT(root=str(root), batch_size=4, pin_memory=False, image_size=64)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    x, _, _ = dm.on_after_batch_transfer(batch, 0)
    small = CIFAR100LT(root=str(root), pin_memory=False).on_after_batch_transfer(batch, 0)[0]
    assert x.shape == (4, 3, 64, 64)
    assert torch.allclose(x, torch.nn.functional.interpolate(small, size=(64, 64), mode="bilinear", align_corners=False))
    proto = dm.protocol()
    assert proto["input_size"] == 64 and "32 -> 64" in proto["resize"]


def test_files_are_read_once(root, monkeypatch):
    monkeypatch.setattr(cifar, "_SPLIT_CACHE", {})
    calls = []
    read = cifar._CIFARLT._read
    monkeypatch.setattr(cifar._CIFARLT, "_read", lambda self, name: calls.append(name) or read(self, name))
    for seed in (0, 1):
        dm = CIFAR10LT(root=str(root), subset_seed=seed)
        dm.train_targets, dm.train_class_counts, dm.dataset("train"), dm.protocol()
    assert sorted(calls) == sorted([*CIFAR10LT.train_files, "batches.meta", "batches.meta"])


def test_real_md5_table_rejects_fixture(cifar_root):
    path, _ = cifar_root
    with pytest.raises(DataError, match=r"data_batch_1 has MD5 .* expected c99cafc152244af753f735de768cd75f"):
        CIFAR10LT(root=str(path)).train_targets


def test_md5_table_is_torchvisions_published_one():
    """Every file's MD5 and both archives' against torchvision's CIFAR10/CIFAR100 constants (an independent copy)."""
    from torchvision.datasets import CIFAR10, CIFAR100

    published = {}
    for tv, ours in ((CIFAR10, CIFAR10LT), (CIFAR100, CIFAR100LT)):
        assert tv.base_folder == ours.folder
        assert (tv.tgz_md5, tv.url) == (ours.archive_md5, ours.archive_url)
        assert [n for n, _ in tv.train_list] == list(ours.train_files) and [n for n, _ in tv.test_list] == list(ours.test_files)
        assert tv.meta["filename"] == ours.meta_file
        for name, md5 in [*tv.train_list, *tv.test_list, (tv.meta["filename"], tv.meta["md5"])]:
            published[f"{tv.base_folder}/{name}"] = md5
    assert cifar.MD5S == published


def test_corrupted_file_names_it(cifar_root, monkeypatch, tmp_path):
    path, md5s = cifar_root
    monkeypatch.setattr(cifar, "MD5S", md5s)
    shutil.copytree(path / "cifar-100-python", tmp_path / "cifar-100-python")
    bad = tmp_path / "cifar-100-python" / "train"
    raw = bytearray(bad.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    bad.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=f"corrupt: {bad}"):
        CIFAR100LT(root=str(tmp_path)).train_targets


def test_missing_folder_names_expected_path(tmp_path):
    with pytest.raises(DataError) as e:
        CIFAR10LT(root=str(tmp_path / "nowhere")).train_class_counts
    msg = str(e.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in msg
    assert "cs.toronto.edu" in msg and "download=True" in msg and "\n" not in msg


def test_missing_file_names_it(cifar_root, monkeypatch, tmp_path):
    path, md5s = cifar_root
    monkeypatch.setattr(cifar, "MD5S", md5s)
    shutil.copytree(path / "cifar-10-batches-py", tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DataError, match="expected .*data_batch_4 \\(CIFAR-10 python version"):
        CIFAR10LT(root=str(tmp_path)).train_targets
