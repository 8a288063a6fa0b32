"""Few-shot training and base-to-new generalisation (CoOp/CoCoOp protocols) as wrappers over any
single-label data module.

``FewShot``: K shots per class drawn with the seed from the wrapped module's training split, tested on
its test split (the source side of CoOp's cross-dataset protocol: train on 16-shot ImageNet, then
``ltbench test`` the prompts on other datasets, whose classes the model takes from their data module).

``BaseToNew``: classes sorted by label: the first ceil(C / 2) are *base*, the rest *new* (CoOp's ``subsample_classes``).
The model trains on K shots per base class, drawn with ``shot_seed`` from the wrapped module's
training split (all of a class's images when it has fewer than K). It is tested on the base classes
and on the new classes separately, each set labelled 0..n-1 among its own classes, and the record
reports Base, New and their harmonic mean. Validation is the wrapped module's validation split,
base classes only. The wrapped dataset keeps its own images, transforms and normalisation.

The facts linked into the model are the base classes' (names, K-shot counts); the test class sets
(``test_class_sets``) say which names each test loader scores, so an open-vocabulary method computes
its text embeddings per set and a closed-set one refuses the protocol.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Optional

import numpy as np
from torch.utils.data import DataLoader, Dataset

from ltbench.data.base import LTDataModule, Split
from ltbench.data.keyed import draws_randomly
from ltbench.data.longtail import indices_sha256
from ltbench.errors import LTBenchError


@dataclass(frozen=True)
class ClassSet:
    """A named set of classes one test loader scores, with its training counts and shot groups."""

    name: str
    class_names: list[str]
    train_counts: list[int]
    groups: dict[str, list[bool]]


class Relabelled(Dataset):
    """Items ``positions`` of a dataset with labels mapped to ``mapping[label]``; the index is the position here."""

    def __init__(self, dataset: Dataset, positions: np.ndarray, labels: np.ndarray) -> None:
        self.dataset, self.positions, self.labels = dataset, positions, labels
        self.draws_randomly = draws_randomly(dataset)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int):
        image, _, _ = self.dataset[int(self.positions[i])]
        return image, int(self.labels[i]), i


def kshot_indices(targets: np.ndarray, classes: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Sorted positions of ``shots`` samples of each class in ``classes`` (all when fewer), drawn with ``seed``
    independently of the other classes' draws."""
    rng = np.random.RandomState(seed)
    chosen = []
    for c in classes:  # once per protocol set-up, not per step
        idx = np.flatnonzero(targets == c)
        chosen.append(idx if len(idx) <= shots else rng.choice(idx, shots, replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def harmonic_mean(a: float, b: float) -> float:
    return 2 * a * b / (a + b) if a + b > 0 else 0.0


class FewShot(LTDataModule):
    """K shots per class of a wrapped single-label data module (``data``); its val and test splits as they are."""

    protocol_name: ClassVar[str] = "few_shot"
    #: appended to the wrapped dataset's name in the record (a protocol that changes the test classes says so)
    dataset_suffix: ClassVar[str] = ""

    def __init__(
        self,
        data: LTDataModule,
        shots: Optional[int] = 16,
        shot_seed: Optional[int] = None,
        batch_size: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            data: the wrapped single-label data module (its batch size and loaders are not used).
            shots: K training images per (base) class (16 in the papers); null keeps every image.
            shot_seed: seed of the K-shot draw; null: the run's seed (so 3 seeds are 3 draws, as CoOp's protocol).
            batch_size: training batch size (default: the wrapped module's).
        """
        if data.task != "multiclass":
            raise LTBenchError(f"{type(self).__name__} wraps single-label data; {type(data).__name__} is {data.task}")
        super().__init__(batch_size=batch_size or data.batch_size, **kwargs)
        self.data = data
        self.shots = shots
        self._shot_seed = shot_seed
        self.in_chans, self.image_size = data.in_chans, data.image_size
        self.mean, self.std = data.mean, data.std

    @property
    def shot_seed(self) -> int:
        if self._shot_seed is not None:
            return int(self._shot_seed)
        return int(os.environ.get("PL_GLOBAL_SEED", 0))

    # ---- the split -------------------------------------------------------------------------------
    @cached_property
    def _classes(self) -> tuple[np.ndarray, np.ndarray]:
        """The trained classes and the held-out ones (none here)."""
        return np.arange(self.data.num_classes), np.zeros(0, dtype=np.int64)

    @cached_property
    def _train_positions(self) -> np.ndarray:
        targets = self.data.train_targets
        base, _ = self._classes
        if self.shots is None:
            return np.flatnonzero(np.isin(targets, base))
        if self.shots < 1:
            raise LTBenchError(f"{type(self).__name__}: shots={self.shots}; expected a positive number of images per class, or null for all")
        return kshot_indices(targets, base, self.shots, self.shot_seed)

    def load_class_names(self) -> list[str]:
        base, _ = self._classes
        return [self.data.class_names[c] for c in base]

    def load_train_targets(self) -> np.ndarray:
        return self.data.train_targets[self._train_positions]

    def item_texts(self, split: Split) -> Optional[list[list[str]]]:
        """The wrapped module's per-item texts of the kept training items, indexed as ``Relabelled`` indexes
        them (per-item texts are training targets only)."""
        inner = self.data.item_texts("train") if split == "train" else None
        return None if inner is None else [inner[int(p)] for p in self._train_positions]

    def _subset(self, split: Split, classes: np.ndarray) -> Relabelled:
        targets = np.asarray(self.data.split_targets(split))
        positions = np.flatnonzero(np.isin(targets, classes))
        mapping = np.full(self.data.num_classes, -1, dtype=np.int64)
        mapping[classes] = np.arange(len(classes))
        return Relabelled(self.data.dataset(split), positions, mapping[targets[positions]])

    def make_dataset(self, split: Split) -> Dataset:
        base, _ = self._classes
        if split == "train":
            return Relabelled(self.data.dataset("train"), self._train_positions, self.load_train_targets())
        return self._subset(split, base)

    def protocol(self) -> dict[str, Any]:
        inner = self.data.protocol()
        base, new = self._classes
        proto = super().protocol()
        proto.update(
            {
                "dataset": inner["dataset"] + self.dataset_suffix,
                "eval_protocol": self.protocol_name,
                "wrapped": inner,
                "trained_classes": len(base),
                "held_out_classes": len(new),
                "shots": self.shots,
                "shot_seed": self.shot_seed,
                "shots_sha256": indices_sha256(self._train_positions),
                "val": "wrapped module's val split" + (", base classes" if len(new) else ""),
            }
        )
        return proto


class BaseToNew(FewShot):
    """CoOp's base-to-new protocol over a wrapped single-label data module (``data``)."""

    protocol_name: ClassVar[str] = "base_to_new"
    dataset_suffix: ClassVar[str] = " base-to-new"

    @cached_property
    def _classes(self) -> tuple[np.ndarray, np.ndarray]:
        n = self.data.num_classes
        if n < 2:
            raise LTBenchError(f"BaseToNew: {type(self.data).__name__} has {n} class; base-to-new needs at least 2")
        m = math.ceil(n / 2)
        return np.arange(m), np.arange(m, n)

    # ---- test sets -------------------------------------------------------------------------------
    def test_class_sets(self) -> list[ClassSet]:
        base, new = self._classes
        names = self.data.class_names
        new_counts = [0] * len(new)
        as_lists = lambda g: {k: [bool(b) for b in v] for k, v in g.items()}  # noqa: E731
        return [
            ClassSet("base", self.class_names, self.train_class_counts, as_lists(self.groups)),
            ClassSet("new", [names[c] for c in new], new_counts, as_lists(self.shot_rule.groups(new_counts))),
        ]

    def summarize_test_sets(self, accuracy: dict[str, float]) -> dict[str, float]:
        """The harmonic mean of base and new accuracy (the protocol's headline)."""
        return {"hm": harmonic_mean(accuracy["base"], accuracy["new"])}

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage in ("test", "predict"):
            _, new = self._classes
            self._datasets.setdefault("test_new", self._subset("test", new))

    def test_dataloader(self) -> list[DataLoader]:
        _, new = self._classes
        if "test_new" not in self._datasets:
            self._datasets["test_new"] = self._subset("test", new)
        return [self._loader(self.dataset("test"), self.eval_batch_size, shuffle=False),
                self._loader(self._datasets["test_new"], self.eval_batch_size, shuffle=False)]  # fmt: skip

    def predict_dataloader(self) -> list[DataLoader]:
        return self.test_dataloader()


__all__ = ["FewShot", "BaseToNew", "ClassSet", "Relabelled", "kshot_indices", "harmonic_mean"]
