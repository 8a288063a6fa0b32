"""Digits-LT: the embedded default, built from scikit-learn's bundled 8x8 digits (no download).

A fixed balanced test split (``test_per_class`` images of each digit, chosen by ``split_seed``),
and a long-tailed training split from the rest by the LDAM protocol (class 0 the head).
"""

from __future__ import annotations

import gzip
import importlib.util
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from ltbench.data.base import LTDataModule, Split
from ltbench.data.longtail import check_imb_ratio, imbalance_profile, indices_sha256, ldam_subsample


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 digits: images (N, 8, 8) float64 in 0..16 and targets (N,) int64.

    The same numbers as ``sklearn.datasets.load_digits``, read from the CSV scikit-learn ships,
    because importing ``sklearn.datasets`` takes longer than a whole Digits run. Read once per
    process (a suite runs many configs); callers get their own copies.
    """
    images, targets = _read_digits()
    return images.copy(), targets.copy()


@lru_cache(maxsize=1)
def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    spec = importlib.util.find_spec("sklearn")
    locations = spec.submodule_search_locations if spec else None
    csv = Path(locations[0]) / "datasets" / "data" / "digits.csv.gz" if locations else None
    if csv is None or not csv.is_file():
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.images, digits.target.astype(np.int64)
    with gzip.open(csv, "rt", encoding="utf-8") as f:
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)


class TensorItems(Dataset):
    """In-memory images with their targets and dataset indices."""

    draws_randomly = False  # no host-side transform: the train loader need not key its items

    def __init__(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        self.images, self.targets = images, targets

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], self.targets[i], i

    def __getitems__(self, indices: list[int]):
        """A whole batch by one tensor index: the DataLoader calls this instead of ``__getitem__`` per
        sample, and ``collate_fn`` passes the batch through."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return self.images[idx], self.targets[idx], idx

    @staticmethod
    def collate_fn(batch):
        return batch


class DigitsLT(LTDataModule):
    """scikit-learn digits as a 10-class long-tailed benchmark that trains in seconds on a CPU."""

    in_chans = 1
    image_size = 8
    mean = (0.5,)
    std = (0.5,)

    def __init__(
        self,
        imb_ratio: float = 100.0,
        imb_profile: Literal["exp", "step"] = "exp",
        n_max: int = 120,
        test_per_class: int = 50,
        split_seed: int = 0,
        subset_seed: int = 0,
        batch_size: int = 64,
        **kwargs: Any,
    ) -> None:
        super().__init__(batch_size=batch_size, **kwargs)
        self.imb_ratio = check_imb_ratio(imb_ratio)
        self.imb_profile = imb_profile
        self.n_max = n_max
        self.test_per_class = test_per_class
        self.split_seed = split_seed
        self.subset_seed = subset_seed

    @cached_property
    def _splits(self) -> dict[str, np.ndarray]:
        raw, targets = load_digits_arrays()
        images = (raw / 16.0).astype(np.float32)
        rng = np.random.RandomState(self.split_seed)
        test_idx, pool_idx = [], []
        for c in range(10):
            idx = np.where(targets == c)[0]
            rng.shuffle(idx)
            test_idx.append(idx[: self.test_per_class])
            pool_idx.append(np.sort(idx[self.test_per_class :]))
        pool = np.concatenate(pool_idx)
        counts = imbalance_profile(self.imb_profile, self.n_max, 10, self.imb_ratio)
        chosen = pool[ldam_subsample(targets[pool], counts, self.subset_seed)]
        return {
            "images": images,
            "targets": targets,
            "train": chosen,
            "test": np.sort(np.concatenate(test_idx)),
        }

    def load_class_names(self) -> list[str]:
        return [str(d) for d in range(10)]

    def load_train_targets(self) -> np.ndarray:
        s = self._splits
        return s["targets"][s["train"]]

    def make_dataset(self, split: Split) -> Dataset:
        s = self._splits
        idx = s["train"] if split == "train" else s["test"]
        images = torch.from_numpy(s["images"][idx]).unsqueeze(1)
        return TensorItems(images, torch.from_numpy(s["targets"][idx]))

    def device_split(self, split: Split) -> tuple[torch.Tensor, torch.Tensor]:
        ds = self.dataset(split)
        return ds.images, ds.targets

    def protocol_extras(self) -> dict[str, Any]:
        return {
            "split": f"sklearn digits, {self.test_per_class}/class test (split_seed={self.split_seed}), val = test",
            "imb_ratio": self.imb_ratio,
            "imb_profile": self.imb_profile,
            "subset_seed": self.subset_seed,
            "subset_sha256": indices_sha256(self._splits["train"]),
        }
