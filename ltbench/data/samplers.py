"""Training samplers for long-tailed data, selectable by name and stage.

Each epoch's index list is drawn once, vectorised with NumPy, from a generator seeded by
(seed, epoch), so every DDP rank draws the same list and keeps its own stride of it. The sampler
is itself a ``DistributedSampler``, so Lightning does not wrap it. A keyed sampler yields
``(index, key)`` pairs: the key of a position in the epoch's (pre-stride) draw is a function of
(seed, epoch, position) only, and seeds that item's random transforms (``ltbench.data.keyed``).
``KeyedPass`` keys a one-off ordered pass over a split the same way, by (seed, position).
"""

from __future__ import annotations

import bisect
from typing import Iterator, Literal, Optional, Sequence, Union

import numpy as np
from torch.utils.data import DistributedSampler, Sampler

SamplerName = Literal["instance", "class_balanced", "square_root", "class_aware", "effective_number"]
SAMPLERS: tuple[str, ...] = ("instance", "class_balanced", "square_root", "class_aware", "effective_number")
#: a third seed word for the augmentation keys, so their stream is not the index draw's (seeded (seed, epoch))
KEY_STREAM = 0x6B657973
#: the seed word of a one-off pass's keys (``KeyedPass``), apart from every epoch's
PASS_STREAM = 0x70617373
#: beta of the effective-number weights (Cui et al., CVPR'19), the value TSCNet's ``cb_resample`` uses
EFFECTIVE_NUMBER_BETA = 0.9999


def effective_number_weights(counts: np.ndarray, beta: float = EFFECTIVE_NUMBER_BETA) -> np.ndarray:
    """Per-image weight of each class, (1 - beta) / (1 - beta^n_c); 0 for an empty class."""
    counts = np.asarray(counts, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(counts > 0, (1.0 - beta) / (1.0 - np.power(beta, counts)), 0.0)


def class_index_lists(targets: np.ndarray, num_classes: int) -> list[np.ndarray]:
    """Images of each class: labels (N,) for single-label, a 0/1 matrix (N, C) for multi-label."""
    targets = np.asarray(targets)
    if targets.ndim == 1:
        order = np.argsort(targets, kind="stable")
        bounds = np.searchsorted(targets[order], np.arange(num_classes + 1))
        return [order[bounds[c] : bounds[c + 1]] for c in range(num_classes)]
    return [np.flatnonzero(targets[:, c]) for c in range(num_classes)]


def draw_epoch(
    mode: str,
    class_indices: Sequence[np.ndarray],
    num_samples: int,
    rng: np.random.Generator,
    dataset_size: Optional[int] = None,
    samples_per_class: int = 1,
) -> np.ndarray:
    """``num_samples`` dataset indices under ``mode``; class-based modes pick a class, then an image of it.

    ``instance`` walks random permutations of the ``dataset_size`` images. ``class_aware`` takes
    ``samples_per_class`` consecutive images of each class it visits (DB-Loss uses 3).
    ``effective_number`` draws images with replacement, each with its class's effective-number
    weight, so class c is drawn with probability proportional to n_c (1 - beta) / (1 - beta^n_c).
    """
    counts = np.array([len(ix) for ix in class_indices])
    if mode == "instance":
        n = dataset_size or num_samples
        reps = -(-num_samples // n)
        return np.concatenate([rng.permutation(n) for _ in range(reps)])[:num_samples]
    present = np.flatnonzero(counts)
    if len(present) == 0:
        raise ValueError("no class has a training image")
    flat = np.concatenate([class_indices[c] for c in present])
    starts = np.concatenate([[0], np.cumsum(counts[present])[:-1]])
    if mode in ("class_balanced", "square_root", "effective_number"):
        if mode == "class_balanced":
            weights = np.ones(len(present))
        elif mode == "square_root":
            weights = np.sqrt(counts[present])
        else:
            weights = counts[present] * effective_number_weights(counts[present])
        cls = rng.choice(len(present), size=num_samples, p=weights / weights.sum())
        offsets = (rng.random(num_samples) * counts[present][cls]).astype(np.int64)
        return flat[starts[cls] + offsets]
    if mode == "class_aware":
        # Round robin: shuffled class order each cycle; each class walks its own shuffled list.
        n_cls = len(present)
        visits = -(-num_samples // samples_per_class)
        cycles = -(-visits // n_cls)
        order = np.concatenate([rng.permutation(n_cls) for _ in range(cycles)])[:visits]
        cls = np.repeat(order, samples_per_class)[:num_samples]
        out = np.empty(num_samples, dtype=np.int64)
        for k in range(n_cls):
            pos = np.flatnonzero(cls == k)
            n_k = counts[present[k]]
            reps = -(-len(pos) // n_k)
            walk = np.concatenate([rng.permutation(n_k) for _ in range(reps)])[: len(pos)]
            out[pos] = flat[starts[k] + walk]
        return out
    raise ValueError(f"unknown sampler {mode!r}; expected one of {SAMPLERS}")


class LTSampler(DistributedSampler):
    """Stage-aware long-tail sampler; ``schedule`` maps a start epoch to a sampler name.

    An epoch has ``epoch_samples`` draws (default: the training-set size) over all ranks. ``keyed``:
    iterate ``(index, key)`` pairs (``epoch_keys``) instead of indices.
    """

    def __init__(
        self,
        targets: np.ndarray,
        num_classes: int,
        schedule: Sequence[tuple[int, str]] = ((0, "instance"),),
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        drop_last: bool = False,
        epoch_samples: Optional[int] = None,
        samples_per_class: int = 1,
        keyed: bool = False,
    ) -> None:
        self.keyed = keyed
        self.dataset_size = len(targets)
        self.num_samples_total = epoch_samples or len(targets)
        self.samples_per_class = samples_per_class
        self.class_indices = class_index_lists(np.asarray(targets), num_classes)
        self.schedule = sorted((int(e), str(m)) for e, m in schedule)
        for _, mode in self.schedule:
            if mode not in SAMPLERS:
                raise ValueError(f"unknown sampler {mode!r}; expected one of {SAMPLERS}")
        super().__init__(
            dataset=range(self.num_samples_total),  # only its length is used
            num_replicas=num_replicas,
            rank=rank,
            shuffle=True,
            seed=seed,
            drop_last=drop_last,
        )

    def mode_at(self, epoch: int) -> str:
        starts = [e for e, _ in self.schedule]
        return self.schedule[max(bisect.bisect_right(starts, epoch) - 1, 0)][1]

    def __iter__(self) -> Iterator[Union[int, tuple[int, int]]]:
        indices = self.epoch_indices().tolist()
        if self.keyed:
            return zip(indices, self.epoch_keys().tolist())
        return iter(indices)

    def epoch_keys(self) -> np.ndarray:
        """Keys (uint64) of this rank's positions: raw words of a stream seeded by (seed, epoch), one per
        position of the padded global draw, so a rank's keys are its stride of the single-process keys."""
        words = np.random.default_rng([self.seed, self.epoch, KEY_STREAM]).bit_generator.random_raw(self.total_size)
        return words[self.rank : self.total_size : self.num_replicas]

    def epoch_indices(self) -> np.ndarray:
        """This rank's dataset indices for the current epoch (its stride of the shared draw)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        indices = draw_epoch(
            self.mode_at(self.epoch), self.class_indices, self.num_samples_total, rng, self.dataset_size, self.samples_per_class
        )
        if self.drop_last:
            indices = indices[: self.total_size]
        else:
            pad = self.total_size - len(indices)
            if pad > 0:
                indices = np.concatenate([indices, indices[:pad]])
        return indices[self.rank : self.total_size : self.num_replicas]


class KeyedPass(Sampler):
    """Every index of a ``size``-item dataset once, in order, each paired with a key from a stream seeded by
    ``seed`` alone: a pass over the training split outside the epochs (TSCNet's dictionary) whose random
    transforms draw the same views whatever ``num_workers`` and whatever the generators drew before."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed = int(size), int(seed)

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        keys = np.random.default_rng([self.seed, PASS_STREAM]).bit_generator.random_raw(self.size)
        return zip(range(self.size), keys.tolist())
