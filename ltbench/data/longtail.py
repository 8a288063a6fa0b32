"""Long-tail protocol: imbalance profiles, the LDAM subsampling protocol and shot groups.

These functions define which images a benchmark trains on and how classes are grouped, so they
are pure, deterministic and recorded with every run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from ltbench.errors import LTBenchError

Profile = Literal["exp", "step"]


def exp_profile(n_max: int, num_classes: int, imb_ratio: float) -> list[int]:
    """n_i = int(n_max * (1/rho)^(i/(C-1))), class 0 the head (Cao et al., LDAM-DRW)."""
    if num_classes == 1:
        return [int(n_max)]
    return [int(n_max * (1.0 / imb_ratio) ** (i / (num_classes - 1.0))) for i in range(num_classes)]


def step_profile(n_max: int, num_classes: int, imb_ratio: float) -> list[int]:
    """First half of the classes keep n_max, the rest n_max / rho (LDAM's step imbalance)."""
    half = num_classes // 2
    return [int(n_max)] * half + [int(n_max / imb_ratio)] * (num_classes - half)


def check_imb_ratio(imb_ratio: float) -> float:
    """``imb_ratio`` as a data module's config takes it, or the one-line error naming the key."""
    if not (isinstance(imb_ratio, (int, float)) and imb_ratio >= 1):  # NaN fails too
        raise LTBenchError(f"data.init_args.imb_ratio: expected a number >= 1 (rho = n_max / n_min; 1 keeps the set balanced), got {imb_ratio}")
    return imb_ratio


def imbalance_profile(profile: Profile, n_max: int, num_classes: int, imb_ratio: float) -> list[int]:
    if imb_ratio < 1:
        raise ValueError(f"imb_ratio must be >= 1 (rho = n_max / n_min), got {imb_ratio}")
    if profile == "exp":
        return exp_profile(n_max, num_classes, imb_ratio)
    if profile == "step":
        return step_profile(n_max, num_classes, imb_ratio)
    raise ValueError(f"unknown imbalance profile {profile!r}; expected 'exp' or 'step'")


def ldam_subsample(targets: Sequence[int] | np.ndarray, counts: Sequence[int], seed: int = 0) -> np.ndarray:
    """Indices of the long-tailed subset under the LDAM protocol, concatenated class by class.

    One ``RandomState(seed)`` stream; per class in label order: take that class's indices in
    ascending order, shuffle them, keep the first n_i. Every class draws from the same stream, so
    class c's subset depends on the shuffles of all earlier classes, exactly as in LDAM-DRW/BBN.
    """
    targets = np.asarray(targets)
    rng = np.random.RandomState(seed)
    chosen = []
    for c, n in enumerate(counts):
        idx = np.where(targets == c)[0]
        if n > len(idx):
            raise ValueError(f"class {c} has {len(idx)} images, cannot keep {n}")
        rng.shuffle(idx)
        chosen.append(idx[:n])
    return np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)


def indices_sha256(indices: Sequence[int] | np.ndarray) -> str:
    """SHA-256 of the chosen indices as little-endian int64, for the run record."""
    return hashlib.sha256(np.asarray(indices, dtype="<i8").tobytes()).hexdigest()


@dataclass(frozen=True)
class ShotRule:
    """Shot groups from training counts: many if n >= many_min, few if n <= few_max.

    Single-label papers use many > 100, few < 20 (``ShotRule(101, 19)``); the multi-label
    COCO-LT/VOC-LT split files encode head >= 100, tail < 20 (``ShotRule(100, 19)``).
    """

    many_min: int = 101
    few_max: int = 19

    def __post_init__(self) -> None:
        if self.few_max >= self.many_min:
            raise ValueError(f"few_max ({self.few_max}) must be below many_min ({self.many_min})")

    def describe(self) -> str:
        return f"many>={self.many_min},few<={self.few_max}"

    def groups(self, train_counts: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        """Boolean class masks for 'many', 'medium' and 'few'; each class is in exactly one."""
        n = np.asarray(train_counts)
        many = n >= self.many_min
        few = n <= self.few_max
        return {"many": many, "medium": ~(many | few), "few": few}


SINGLE_LABEL_RULE = ShotRule(many_min=101, few_max=19)
MULTI_LABEL_RULE = ShotRule(many_min=100, few_max=19)
