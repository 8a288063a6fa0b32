"""Digits-ML-LT: determinism, disjoint splits, labels = digits drawn, long-tailed counts, samplers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ltbench.data import DigitsMLLT
from ltbench.data.digits_ml import label_sets
from ltbench.data.samplers import LTSampler


@pytest.fixture(scope="module")
def dm() -> DigitsMLLT:
    return DigitsMLLT()


def _cells(images: np.ndarray, grid: int) -> np.ndarray:
    """(N, grid*grid, 64) cell contents, row-major."""
    n = len(images)
    return images.reshape(n, grid, 8, grid, 8).transpose(0, 1, 3, 2, 4).reshape(n, grid * grid, 64)


def test_facts_and_items(dm):
    assert dm.task == "multilabel" and dm.in_chans == 1 and dm.image_size == 16 and dm.num_classes == 10
    assert dm.train_targets.shape == (1000, 10) and len(dm.dataset("test")) == 1000
    img, target, index = dm.dataset("train")[5]
    assert img.dtype == torch.uint8 and img.shape == (1, 16, 16)
    assert target.dtype == torch.float32 and target.shape == (10,) and index == 5
    labels_per_image = dm.train_targets.sum(1)
    assert labels_per_image.min() >= 1 and labels_per_image.max() <= 4
    assert DigitsMLLT(grid=3).dataset("test")[0][0].shape == (1, 24, 24)


def test_long_tailed_train_balanced_test(dm):
    counts = dm.train_class_counts
    assert counts == [700, 419, 251, 150, 90, 54, 32, 19, 11, 7]
    assert all(a > b for a, b in zip(counts, counts[1:])) and counts[0] / counts[-1] == 100
    assert {k: int(v.sum()) for k, v in dm.groups.items()} == {"many": 4, "medium": 3, "few": 3}
    test_counts = dm.dataset("test").targets.sum(0)
    assert test_counts.tolist() == [200.0] * 10


def test_deterministic_by_seed(dm):
    again, other = DigitsMLLT(), DigitsMLLT(subset_seed=1)
    for split in ("train", "test"):
        assert torch.equal(dm.dataset(split).images, again.dataset(split).images)
        assert torch.equal(dm.dataset(split).targets, again.dataset(split).targets)
    assert not torch.equal(dm.dataset("train").images, other.dataset("train").images)
    assert torch.equal(dm.dataset("test").images, other.dataset("test").images)  # test fixed by split_seed
    assert other.train_class_counts == dm.train_class_counts
    assert not torch.equal(DigitsMLLT(split_seed=1).dataset("test").images, dm.dataset("test").images)
    assert dm.protocol()["data_sha256"] == again.protocol()["data_sha256"] != other.protocol()["data_sha256"]


def test_labels_are_the_digits_drawn_from_disjoint_pools(dm):
    from sklearn.datasets import load_digits

    digits = load_digits()
    glyphs = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 64)
    s = dm._splits
    assert not set(s["train_digits"].tolist()) & set(s["test_digits"].tolist())
    for split, pool in (("train", s["train_digits"]), ("test", s["test_digits"])):
        images, sets = s[split]
        lookup = {glyphs[i].tobytes(): int(digits.target[i]) for i in pool}
        cells = _cells(images[:, 0], 2)
        filled = cells.any(-1)
        assert (filled.sum(1) == sets.sum(1)).all()
        for n, k in zip(*np.nonzero(filled)):
            assert sets[n, lookup[cells[n, k].tobytes()]]  # KeyError if a cell came from the other pool


def test_class_aware_and_balanced_samplers_oversample_the_rarest(dm):
    targets = dm.train_targets
    rare = int(np.argmin(dm.train_class_counts))
    natural = targets[:, rare].mean()
    for mode in ("class_aware", "class_balanced"):
        drawn = np.array(list(LTSampler(targets, 10, schedule=[(0, mode)], seed=0)))
        share = targets[drawn, rare].mean()
        assert share > 0.09 > 10 * natural, (mode, share, natural)
    drawn = np.array(list(LTSampler(targets, 10, schedule=[(0, "instance")], seed=0)))
    assert targets[drawn, rare].mean() == pytest.approx(natural)


def test_infeasible_counts_are_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="cannot place label counts"):
        label_sets([50, 5], 40, 4, rng)  # a class in more images than there are
    with pytest.raises(ValueError, match="cannot place label counts"):
        label_sets([3, 3], 10, 4, rng)  # fewer labels than images: some image would be empty
    sets = label_sets([20, 15, 10], 25, 3, rng)
    assert sets.sum(0).tolist() == [20, 15, 10] and sets.sum(1).min() >= 1 and sets.sum(1).max() <= 3
