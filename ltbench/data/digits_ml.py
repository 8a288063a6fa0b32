"""Digits-ML-LT: the embedded multi-label default, composed from scikit-learn's 8x8 digits (no download).

Each image is a ``grid x grid`` canvas of 8x8 cells (16x16 for the default 2x2), each cell a digit
or blank; its labels are the digits present. Training label counts follow the LDAM exponential
profile over classes (digit 0 the head), exactly, so the many/medium/few groups under the
multi-label rule (>= 100 / < 20) are fixed by the parameters, not by chance. The test split is
label-balanced and drawn from digit images held out of training, so no training pixel is tested.
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from typing import Any, Literal, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ltbench.data.base import LTDataModule, Split
from ltbench.data.digits import TensorItems, load_digits_arrays
from ltbench.data.longtail import check_imb_ratio, imbalance_profile

NUM_DIGITS = 10
CELL = 8


def label_sets(counts: Sequence[int], num_images: int, capacity: int, rng: np.random.Generator) -> np.ndarray:
    """An (N, C) bool matrix with column sums exactly ``counts``, 1 to ``capacity`` labels per row.

    The label tokens are shuffled and the first N become each image's first label, so no image is
    empty; every remaining token of class c goes to a distinct image that lacks c and has room.
    """
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if counts.max() > num_images or not num_images <= total <= capacity * num_images:
        raise ValueError(
            f"cannot place label counts {counts.tolist()} (total {total}) on {num_images} images with "
            f"1..{capacity} labels each; need max count <= images <= total <= {capacity} x images"
        )
    tokens = rng.permutation(np.repeat(np.arange(len(counts)), counts))
    sets = np.zeros((num_images, len(counts)), dtype=bool)
    sets[np.arange(num_images), tokens[:num_images]] = True
    rest = np.bincount(tokens[num_images:], minlength=len(counts))
    for c in np.argsort(-rest, kind="stable"):
        free = np.flatnonzero(~sets[:, c] & (sets.sum(1) < capacity))
        if len(free) < rest[c]:
            raise ValueError(f"no room for {rest[c]} more images of class {c}; lower the counts or add images")
        sets[rng.choice(free, size=rest[c], replace=False), c] = True
    return sets


def compose(
    sets: np.ndarray, digits: np.ndarray, pools: Sequence[np.ndarray], grid: int, rng: np.random.Generator
) -> np.ndarray:
    """(N, 1, grid*8, grid*8) uint8 canvases: each label of a row in its own random cell, as a random
    digit image of that class drawn from ``pools[c]``; the other cells stay blank."""
    n = len(sets)
    img, cls = np.nonzero(sets)
    first = np.searchsorted(img, np.arange(n))
    rank = np.arange(len(img)) - first[img]
    cells = np.argsort(rng.random((n, grid * grid)), axis=1)[img, rank]
    sizes = np.array([len(p) for p in pools])
    flat, starts = np.concatenate(pools), np.concatenate([[0], np.cumsum(sizes)[:-1]])
    src = flat[starts[cls] + (rng.random(len(cls)) * sizes[cls]).astype(np.int64)]
    canvas = np.zeros((n, grid, CELL, grid, CELL), dtype=np.uint8)
    canvas[img, cells // grid, :, cells % grid, :] = digits[src]
    return canvas.reshape(n, 1, grid * CELL, grid * CELL)


class DigitsMLLT(LTDataModule):
    """Multi-label long-tailed digits: ~1k 16x16 training canvases, trains in seconds on a CPU.

    Defaults give training counts 700, 419, 251, 150, 90, 54, 32, 19, 11, 7 (4 many, 3 medium,
    3 few) over 1,000 images, and a test split of 1,000 images with 200 positives per digit.
    """

    task = "multilabel"
    in_chans = 1
    mean = (0.5,)
    std = (0.5,)

    def __init__(
        self,
        imb_ratio: float = 100.0,
        imb_profile: Literal["exp", "step"] = "exp",
        n_max: int = 700,
        train_images: int = 1000,
        test_images: int = 1000,
        test_positives: int = 200,
        test_per_class: int = 50,
        grid: int = 2,
        split_seed: int = 0,
        subset_seed: int = 0,
        batch_size: int = 64,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            imb_ratio: rho = n_max / n_min of the training label counts.
            imb_profile: ``exp`` or ``step`` profile of the training label counts.
            n_max: training images containing digit 0 (the head).
            train_images: training images; every one has at least one digit.
            test_images: test images.
            test_positives: test images containing each digit (balanced).
            test_per_class: digit images per class held out for the test canvases.
            grid: cells per side; the image is ``grid * 8`` pixels square and holds up to grid^2 digits.
            split_seed: which digit images are held out, and the test canvases.
            subset_seed: the training label sets and which digit images fill them.
        """
        super().__init__(batch_size=batch_size, **kwargs)
        self.imb_ratio = check_imb_ratio(imb_ratio)
        self.imb_profile = imb_profile
        self.n_max = n_max
        self.train_images = train_images
        self.test_images = test_images
        self.test_positives = test_positives
        self.test_per_class = test_per_class
        self.grid = grid
        self.image_size = grid * CELL
        self.split_seed = split_seed
        self.subset_seed = subset_seed

    @cached_property
    def train_counts(self) -> list[int]:
        return imbalance_profile(self.imb_profile, self.n_max, NUM_DIGITS, self.imb_ratio)

    @cached_property
    def _splits(self) -> dict[str, Any]:
        raw, targets = load_digits_arrays()
        images = np.rint(raw * (255.0 / 16.0)).astype(np.uint8)
        rng = np.random.default_rng([self.split_seed, 0])
        train_pools, test_pools = [], []
        for c in range(NUM_DIGITS):
            idx = rng.permutation(np.flatnonzero(targets == c))
            test_pools.append(np.sort(idx[: self.test_per_class]))
            train_pools.append(np.sort(idx[self.test_per_class :]))
        cells = self.grid * self.grid
        test_rng = np.random.default_rng([self.split_seed, 1])
        test_sets = label_sets([self.test_positives] * NUM_DIGITS, self.test_images, cells, test_rng)
        train_rng = np.random.default_rng([self.split_seed, self.subset_seed, 2])
        train_sets = label_sets(self.train_counts, self.train_images, cells, train_rng)
        return {
            "train": (compose(train_sets, images, train_pools, self.grid, train_rng), train_sets),
            "test": (compose(test_sets, images, test_pools, self.grid, test_rng), test_sets),
            "train_digits": np.concatenate(train_pools),
            "test_digits": np.concatenate(test_pools),
        }

    def load_class_names(self) -> list[str]:
        return [str(d) for d in range(NUM_DIGITS)]

    def load_train_targets(self) -> np.ndarray:
        return self._splits["train"][1].astype(np.int64)

    def make_dataset(self, split: Split) -> Dataset:
        images, sets = self._splits["train" if split == "train" else "test"]
        return TensorItems(torch.from_numpy(images), torch.from_numpy(sets.astype(np.float32)))

    def protocol_extras(self) -> dict[str, Any]:
        digest = hashlib.sha256()
        for split in ("train", "test"):
            images, sets = self._splits[split]
            digest.update(images.tobytes())
            digest.update(np.packbits(sets, axis=1).tobytes())
        return {
            "split": (
                f"sklearn digits, {self.test_per_class}/class held out (split_seed={self.split_seed}); "
                f"{self.test_images} test canvases with {self.test_positives} positives per digit; val = test"
            ),
            "composition": f"{self.grid}x{self.grid} cells of 8x8, labels = digits present",
            "imb_ratio": self.imb_ratio,
            "imb_profile": self.imb_profile,
            "train_counts": list(self.train_counts),
            "subset_seed": self.subset_seed,
            "data_sha256": digest.hexdigest(),
        }
