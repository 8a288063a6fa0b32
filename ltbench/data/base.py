"""The data contract every dataset family implements.

A data module states the facts a method needs (task, classes, per-class training counts, shot
groups, input channels and size), computed from labels or split files without opening an image,
so they are available as soon as the module is constructed and LightningCLI can link them into the
model. Items are ``(image, target, index)``; the index lets metrics drop the duplicates that a
distributed evaluation sampler pads in.
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import Any, ClassVar, Literal, Optional, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ltbench.data.longtail import MULTI_LABEL_RULE, SINGLE_LABEL_RULE, ShotRule
from ltbench.data.samplers import LTSampler, SamplerName

Task = Literal["multiclass", "multilabel"]
Split = Literal["train", "val", "test"]


class LTDataModule(L.LightningDataModule):
    """Base of all ltbench data modules; subclasses say how to read labels and build datasets."""

    task: ClassVar[Task] = "multiclass"
    #: channel mean/std applied on the device after transfer; images arrive as uint8 or float.
    mean: ClassVar[Sequence[float]] = (0.5, 0.5, 0.5)
    std: ClassVar[Sequence[float]] = (0.5, 0.5, 0.5)

    def __init__(
        self,
        batch_size: int = 128,
        eval_batch_size: Optional[int] = None,
        num_workers: int = 0,
        sampler: SamplerName = "instance",
        shot_rule: Optional[ShotRule] = None,
        drop_last: bool = False,
        pin_memory: bool = True,
        epoch_samples: Optional[int] = None,
        class_aware_samples: int = 1,
    ) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.sampler = sampler
        self.shot_rule = shot_rule or (SINGLE_LABEL_RULE if self.task == "multiclass" else MULTI_LABEL_RULE)
        self.drop_last = drop_last
        self.pin_memory = pin_memory
        self.epoch_samples = epoch_samples
        self.class_aware_samples = class_aware_samples
        self.sampler_schedule: list[tuple[int, str]] = [(0, sampler)]
        self._datasets: dict[str, Dataset] = {}

    # ---- what a subclass provides -------------------------------------------------------------
    def load_class_names(self) -> list[str]:
        raise NotImplementedError

    def load_train_targets(self) -> np.ndarray:
        """Training labels: (N,) ints for single-label, an (N, C) 0/1 array for multi-label."""
        raise NotImplementedError

    def make_dataset(self, split: Split) -> Dataset:
        """The dataset of ``split``, yielding ``(image, target, index)``."""
        raise NotImplementedError

    def protocol_extras(self) -> dict[str, Any]:
        """Dataset-specific protocol facts for the run record (split files, ratio, seeds...)."""
        return {}

    in_chans: int = 3
    image_size: int = 224

    # ---- facts ---------------------------------------------------------------------------------
    @cached_property
    def class_names(self) -> list[str]:
        return list(self.load_class_names())

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @cached_property
    def train_targets(self) -> np.ndarray:
        return np.asarray(self.load_train_targets())

    @property
    def num_train(self) -> int:
        """Training images (for multi-label data not the sum of class counts)."""
        return int(len(self.train_targets))

    @cached_property
    def train_class_counts(self) -> list[int]:
        t = self.train_targets
        counts = t.sum(0) if t.ndim == 2 else np.bincount(t, minlength=self.num_classes)
        return [int(c) for c in counts]

    @property
    def groups(self) -> dict[str, np.ndarray]:
        return self.shot_rule.groups(self.train_class_counts)

    def protocol(self) -> dict[str, Any]:
        groups = self.groups
        return {
            "dataset": type(self).__name__,
            "task": self.task,
            "num_classes": self.num_classes,
            "num_train": self.num_train,
            "input_size": self.image_size,
            "in_chans": self.in_chans,
            "group_rule": self.shot_rule.describe(),
            "group_sizes": {k: int(v.sum()) for k, v in groups.items()},
            "sampler": self.sampler,
            "epoch_samples": self.epoch_samples or self.num_train,
            **self.protocol_extras(),
        }

    # ---- loaders -------------------------------------------------------------------------------
    def set_sampler_schedule(self, schedule: Sequence[tuple[int, Optional[str]]]) -> None:
        """Per-stage samplers from the method; ``None`` keeps this module's configured sampler."""
        self.sampler_schedule = [(int(e), m or self.sampler) for e, m in schedule]

    def dataset(self, split: Split) -> Dataset:
        if split not in self._datasets:
            self._datasets[split] = self.make_dataset(split)
        return self._datasets[split]

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.dataset("train")
            self.dataset("val")
        elif stage == "validate":
            self.dataset("val")
        elif stage in ("test", "predict"):
            self.dataset("test")

    def _loader(self, dataset: Dataset, batch_size: int, **kwargs: Any) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        sampler = LTSampler(
            self.train_targets,
            self.num_classes,
            schedule=self.sampler_schedule,
            num_replicas=trainer.world_size if trainer else 1,
            rank=trainer.global_rank if trainer else 0,
            seed=int(os.environ.get("PL_GLOBAL_SEED", 0)),
            epoch_samples=self.epoch_samples,
            samples_per_class=self.class_aware_samples,
        )
        return self._loader(self.dataset("train"), self.batch_size, sampler=sampler, drop_last=self.drop_last)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"), self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"), self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    # ---- on the device -------------------------------------------------------------------------
    def normalization(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Channel mean/std on ``device``, made once per device rather than copied every batch."""
        cache = self.__dict__.setdefault("_norm_cache", {})
        if device not in cache:
            c = self.in_chans
            mean = torch.tensor(list(self.mean)[:c], dtype=torch.float32).view(1, c, 1, 1)
            std = torch.tensor(list(self.std)[:c], dtype=torch.float32).view(1, c, 1, 1)
            cache[device] = (mean.to(device), std.to(device))
        return cache[device]

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """uint8 crosses to the device (4x less traffic) and is normalised there."""
        x, y, idx = batch
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        mean, std = self.normalization(x.device)
        x = (x - mean) / std
        return x, y, idx
