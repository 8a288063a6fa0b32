"""The data contract every dataset family implements.

A data module states the facts a method needs (task, classes, per-class training counts, shot
groups, input channels and size), computed from labels or split files without opening an image,
so they are available as soon as the module is constructed and LightningCLI can link them into the
model. Items are ``(image, target, index)``; the index lets metrics drop the duplicates that a
distributed evaluation sampler pads in.
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from functools import cached_property
from typing import Any, ClassVar, Iterator, Literal, Optional, Sequence, Union

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ltbench.data.device_loader import DeviceBatches
from ltbench.data.keyed import KeyedItems, draws_randomly
from ltbench.data.longtail import MULTI_LABEL_RULE, SINGLE_LABEL_RULE, ShotRule
from ltbench.data.samplers import KeyedPass, LTSampler, SamplerName
from ltbench.errors import LTBenchError

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
        num_workers: Union[int, Literal["auto"]] = 0,
        sampler: SamplerName = "instance",
        shot_rule: Optional[ShotRule] = None,
        drop_last: bool = False,
        pin_memory: bool = True,
        epoch_samples: Optional[int] = None,
        class_aware_samples: int = 1,
        device_cache: Optional[bool] = None,
    ) -> None:
        """
        Args:
            num_workers: loader processes; ``auto`` takes the cores per local device (at most 16).
            device_cache: hold the whole split on the accelerator and batch there (modules with
                ``device_split``: CIFAR-LT, Digits); ``None`` turns it on when training on CUDA.
        """
        super().__init__()
        for key, value, least in (("batch_size", batch_size, 1), ("eval_batch_size", eval_batch_size, 1), ("num_workers", num_workers, 0),
                                  ("epoch_samples", epoch_samples, 1), ("class_aware_samples", class_aware_samples, 1)):  # fmt: skip
            if key == "num_workers" and value == "auto":
                continue
            if value is not None and not (isinstance(value, int) and value >= least):
                raise LTBenchError(f"data.init_args.{key}: expected an integer >= {least}, got {value!r}")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.device_cache = device_cache
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
        counts = [int(c) for c in (t.sum(0) if t.ndim == 2 else np.bincount(t, minlength=self.num_classes))]
        if empty := [self.class_names[i] for i, c in enumerate(counts) if c == 0]:
            # e.g. labels shifted by one: such a class would silently count as "few" and score n/a
            shown = ", ".join(empty[:10]) + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
            warnings.warn(
                f"{type(self).__name__}: {len(empty)} of {self.num_classes} classes have no training image ({shown}); "
                "check the training labels",
                stacklevel=2,
            )
        return counts

    @property
    def classes_without_training_images(self) -> list[str]:
        return [self.class_names[i] for i, c in enumerate(self.train_class_counts) if c == 0]

    @property
    def groups(self) -> dict[str, np.ndarray]:
        return self.shot_rule.groups(self.train_class_counts)

    def split_targets(self, split: Split) -> np.ndarray:
        """Labels of a split's items in dataset order, without opening an image (protocols that wrap a
        module select by them): the training targets, or the split dataset's ``targets``."""
        if split == "train":
            return self.train_targets
        targets = getattr(self.dataset(split), "targets", None)
        if targets is None:
            raise LTBenchError(f"{type(self).__name__}: its {split} dataset states no targets (a `targets` attribute, in item order)")
        return np.asarray(targets)

    def item_texts(self, split: Split) -> Optional[list[list[str]]]:
        """Per-item texts of ``split`` (e.g. an image's captions), one list per item in the order of the
        ``index`` its batches carry; ``None``: no per-item text (the default). Training-time privileged
        information: a method may read it for training targets, never at evaluation."""
        return None

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
            "classes_without_training_images": self.classes_without_training_images,
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

    def _workers(self) -> int:
        if self.num_workers != "auto":
            return int(self.num_workers)
        trainer = self.trainer
        local = max(int(getattr(trainer, "num_devices", 1) or 1), 1) if trainer is not None else 1
        return auto_workers(local)

    def _loader(self, dataset: Dataset, batch_size: int, key_seed: Optional[int] = None, **kwargs: Any) -> DataLoader:
        """A loader of ``dataset``; with ``key_seed``, one ordered pass whose host-side random transforms are
        keyed by (key_seed, position) (``KeyedPass``): the same views whatever ``num_workers`` or earlier draws."""
        workers = self._workers()
        if key_seed is not None and draws_randomly(dataset):
            kwargs.pop("shuffle", None)
            kwargs["sampler"] = KeyedPass(len(dataset), key_seed)  # type: ignore[arg-type]
            dataset = KeyedItems(dataset)
        # in-memory datasets fetch a batch at once (``__getitems__``) and bring their own collate
        if kwargs.get("collate_fn") is None:
            kwargs["collate_fn"] = getattr(dataset, "collate_fn", None)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            **kwargs,
        )

    def train_collate_fn(self) -> Optional[Any]:
        """The training loader's collate function; ``None`` is PyTorch's default."""
        return None

    @contextmanager
    def keyed_pass(self, seed: int) -> Iterator[None]:
        """Inside the block, augmentation drawn on the device (``on_after_batch_transfer``) comes from
        generators seeded by ``seed`` alone, for a pass outside the epochs (with ``_loader(key_seed=)`` for
        the host side); the epochs' generators are left as they were. None here: nothing draws there."""
        yield

    # ---- the split held on the device ----------------------------------------------------------
    def device_split(self, split: Split) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """Images (N, C, H, W) in their stored dtype and targets of ``split``, for ``device_cache``;
        ``None`` where the split does not fit in memory (file datasets)."""
        return None

    def device_augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The training augmentation of a batch on the device; none by default."""
        return x

    def _device(self) -> Optional[torch.device]:
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else None

    def uses_device_cache(self) -> bool:
        device = self._device()
        if self.device_cache is False or device is None:
            return False
        if self.device_cache is None and device.type != "cuda":
            return False
        if type(self).device_split is LTDataModule.device_split:
            if self.device_cache:
                raise LTBenchError(
                    f"data.init_args.device_cache: {type(self).__name__} cannot hold its images on the device "
                    "(only in-memory datasets such as CIFAR-LT and Digits can); set it to false"
                )
            return False
        return True

    def _device_batches(self, split: Split, batch_size: int, sampler: Optional[LTSampler] = None) -> DeviceBatches:
        cache = self.__dict__.setdefault("_device_split_cache", {})
        device = self._device()
        if (split, device) not in cache:
            images, targets = self.device_split(split)
            cache[(split, device)] = (images.to(device), targets.to(device))
        images, targets = cache[(split, device)]
        trainer = self.trainer
        return DeviceBatches(
            images,
            targets,
            batch_size,
            device,
            sampler=sampler,
            drop_last=self.drop_last if sampler is not None else False,
            augment=self.device_augment if sampler is not None else None,
            seed=int(os.environ.get("PL_GLOBAL_SEED", 0)),
            rank=trainer.global_rank if trainer else 0,
            num_replicas=trainer.world_size if trainer else 1,
        )

    def train_dataloader(self) -> Union[DataLoader, DeviceBatches]:
        trainer = self.trainer
        device_batches = self.uses_device_cache()
        # an item's host-side random transforms are seeded by its position's key: the same crops
        # whatever num_workers, and after a resume (ltbench.data.keyed)
        keyed = not device_batches and draws_randomly(self.dataset("train"))
        sampler = LTSampler(
            self.train_targets,
            self.num_classes,
            schedule=self.sampler_schedule,
            num_replicas=trainer.world_size if trainer else 1,
            rank=trainer.global_rank if trainer else 0,
            seed=int(os.environ.get("PL_GLOBAL_SEED", 0)),
            epoch_samples=self.epoch_samples,
            samples_per_class=self.class_aware_samples,
            keyed=keyed,
        )
        # Lightning sets the epoch (its count of epochs begun) only after it has made the loader's first
        # iterator, and worker processes draw their indices as they start: a run resumed at epoch k
        # would otherwise train epoch k on epoch 0's draw
        sampler.set_epoch(trainer.fit_loop.epoch_progress.current.processed if trainer else 0)
        if device_batches:
            return self._device_batches("train", self.batch_size, sampler)
        dataset = KeyedItems(self.dataset("train")) if keyed else self.dataset("train")
        return self._loader(dataset, self.batch_size, sampler=sampler, drop_last=self.drop_last, collate_fn=self.train_collate_fn())

    def val_dataloader(self) -> Union[DataLoader, DeviceBatches]:
        if self.uses_device_cache():
            return self._device_batches("val", self.eval_batch_size)
        return self._loader(self.dataset("val"), self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> Union[DataLoader, DeviceBatches]:
        if self.uses_device_cache():
            return self._device_batches("test", self.eval_batch_size)
        return self._loader(self.dataset("test"), self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"), self.eval_batch_size, shuffle=False)

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


def auto_workers(local_devices: int = 1, cap: int = 16) -> int:
    """Loader workers per device process: the cores it can use, one left for the main process."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(0, min(cap, cores // max(local_devices, 1) - 1))
