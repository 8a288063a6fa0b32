"""CIFAR-10-LT and CIFAR-100-LT under the LDAM protocol, read from torchvision's pickle layout.

The pickles are parsed here rather than through ``torchvision.datasets.CIFAR*`` so every file is
verified against its published MD5 and read exactly once per module; the long-tailed subset is
defined by indices into the train batches concatenated in order 1 to 5, as torchvision and every
LDAM-protocol repository build them.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from functools import cached_property
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision.transforms import v2

from ltbench.data.base import LTDataModule, Split
from ltbench.data.device_loader import random_crop_flip
from ltbench.data.longtail import check_imb_ratio, imbalance_profile, indices_sha256, ldam_subsample
from ltbench.errors import DataError
from ltbench.network import reachable

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"

#: Published MD5 of every file, keyed by its path under ``root`` (torchvision's constants).
MD5S: dict[str, str] = {
    "cifar-10-batches-py/data_batch_1": "c99cafc152244af753f735de768cd75f",
    "cifar-10-batches-py/data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "cifar-10-batches-py/data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "cifar-10-batches-py/data_batch_4": "634d18415352ddfa80567beed471001a",
    "cifar-10-batches-py/data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "cifar-10-batches-py/test_batch": "40351d587109b95175f43aff81a1287e",
    "cifar-10-batches-py/batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    "cifar-100-python/train": "16019d7e3df5f24257cddd939b257f8d",
    "cifar-100-python/test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "cifar-100-python/meta": "7973b15100ade9c7d40fb424638fde48",
}


_SPLIT_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
_SPLIT_CACHE_SIZE = 4


class CIFARTensorDataset(Dataset):
    """uint8 CHW images held in memory; items are ``(image, target, index)``."""

    def __init__(self, images: np.ndarray, targets: np.ndarray, transform: Any = None) -> None:
        self.images = torch.from_numpy(np.require(images, np.uint8, ["C", "W"]))
        self.targets = np.asarray(targets, dtype=np.int64)
        self.transform = transform
        self.draws_randomly = transform is not None

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        img = self.images[index]
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[index]), index


class _CIFARLT(LTDataModule):
    """Shared CIFAR-LT implementation; subclasses name the files, keys and archive."""

    mean: ClassVar[tuple[float, ...]] = (0.4914, 0.4822, 0.4465)
    std: ClassVar[tuple[float, ...]] = (0.2023, 0.1994, 0.2010)
    in_chans = 3
    image_size = 32

    title: ClassVar[str]
    folder: ClassVar[str]
    train_files: ClassVar[tuple[str, ...]]
    test_files: ClassVar[tuple[str, ...]]
    meta_file: ClassVar[str]
    label_key: ClassVar[str]
    names_key: ClassVar[str]
    num_classes_expected: ClassVar[int]
    archive_url: ClassVar[str]
    archive_md5: ClassVar[str]

    def __init__(
        self,
        root: str = "data",
        imb_ratio: float = 100.0,
        imb_profile: Literal["exp", "step"] = "exp",
        subset_seed: int = 0,
        download: bool = False,
        image_size: int = 32,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            root: folder holding the extracted ``cifar-10-batches-py/`` or ``cifar-100-python/``.
            imb_ratio: rho = n_max / n_min of the training subset (1 keeps the full balanced set).
            imb_profile: ``exp`` (LDAM/BBN default) or ``step`` (half the classes at n_max / rho).
            subset_seed: seed of the LDAM subsampling stream (0 in LDAM-DRW, BBN, LIFT).
            download: fetch and extract the official archive when files are missing or corrupt.
            image_size: input size; other than 32, batches are resized bilinearly on the device after
                the 32 px augmentation (crop, flip), as ViT recipes resize CIFAR to 224.
        """
        super().__init__(**kwargs)
        self.image_size = image_size
        self.root = root
        self.imb_ratio = check_imb_ratio(imb_ratio)
        self.imb_profile = imb_profile
        self.subset_seed = subset_seed
        self.download = download

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Normalise, then resize to ``image_size``: bilinear resizing is linear and keeps constants, so
        the order does not matter, and 32 px images cross to the device (49x less than 224 px)."""
        x, y, idx = super().on_after_batch_transfer(batch, dataloader_idx)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return x, y, idx

    # ---- files ---------------------------------------------------------------------------------
    def _path(self, name: str) -> str:
        return os.path.join(self.root, self.folder, name)

    def _expected(self, path: str) -> str:
        return f"expected {path} ({self.title} python version, from {CIFAR_URL} or download=True)"

    def _all_files(self) -> list[str]:
        return [*self.train_files, *self.test_files, self.meta_file]

    def _file_intact(self, name: str) -> bool:
        path = self._path(name)
        if not os.path.isfile(path):
            return False
        expected = MD5S.get(f"{self.folder}/{name}")
        if expected is None:
            return True
        with open(path, "rb") as f:
            return hashlib.md5(f.read()).hexdigest() == expected

    def _intact(self) -> bool:
        return all(self._file_intact(name) for name in self._all_files())

    def prepare_data(self) -> None:
        if self.download and not self._intact():
            from torchvision.datasets.utils import download_and_extract_archive

            where = f"without a network, extract {os.path.basename(self.archive_url)} under root={self.root} and set data.init_args.download=false"
            if not reachable(self.archive_url):
                raise DataError(f"{self.title}: data.init_args.download=true but {self.archive_url} cannot be reached; {where}")
            try:
                download_and_extract_archive(
                    self.archive_url, download_root=self.root, filename=os.path.basename(self.archive_url), md5=self.archive_md5
                )
            except (OSError, RuntimeError) as e:  # URLError, a dropped connection, an MD5 mismatch of the archive
                raise DataError(f"{self.title}: downloading {self.archive_url} failed ({e}); {where}") from None

    def _read(self, name: str) -> dict[str, Any]:
        """Unpickle one file after checking its MD5; both come from one read of its bytes.

        With ``download`` a missing or corrupt file is fetched again (the archive re-extracted) first.
        """
        path = self._path(name)
        if self.download and not self._file_intact(name):
            self.prepare_data()
        folder = os.path.join(self.root, self.folder)
        if not os.path.isdir(folder):
            raise DataError(f"{self.title} folder missing: {self._expected(folder + os.sep)}")
        if not os.path.isfile(path):
            raise DataError(f"{self.title} file missing: {self._expected(path)}")
        with open(path, "rb") as f:
            raw = f.read()
        expected = MD5S.get(f"{self.folder}/{name}")
        if expected is not None:
            got = hashlib.md5(raw).hexdigest()
            if got != expected:
                raise DataError(
                    f"{self.title} file corrupt: {path} has MD5 {got}, expected {expected}; extract it again from "
                    f"{os.path.basename(self.archive_url)} ({CIFAR_URL}), or set data.init_args.download=true to fetch it again"
                )
        try:
            obj = pickle.loads(raw, encoding="latin1")
        except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
            raise DataError(f"{self.title} file unreadable: {path} is not a Python pickle ({e}); {self._expected(path)}") from e
        if not isinstance(obj, dict):
            raise DataError(f"{self.title} file malformed: {path} holds a {type(obj).__name__}, expected a dict")
        return obj

    def _load_split(self, files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Images (N, 3, 32, 32) uint8 and labels of ``files`` in order, shared process-wide.

        Keyed by each file's path, size, mtime and expected MD5, so modules built in one process
        (a sweep, a test session) read and verify each pickle once; arrays are read-only.
        """
        key = [self.label_key]
        for name in files:
            path = self._path(name)
            try:
                st = os.stat(path)
            except OSError:
                return self._read_split(files)
            key.append((os.path.realpath(path), st.st_size, st.st_mtime_ns, MD5S.get(f"{self.folder}/{name}")))
        cache_key = tuple(key)
        if cache_key not in _SPLIT_CACHE:
            while len(_SPLIT_CACHE) >= _SPLIT_CACHE_SIZE:
                _SPLIT_CACHE.pop(next(iter(_SPLIT_CACHE)))
            _SPLIT_CACHE[cache_key] = self._read_split(files)
        return _SPLIT_CACHE[cache_key]

    def _read_split(self, files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        data, labels = [], []
        for name in files:
            d = self._read(name)
            if "data" not in d or self.label_key not in d:
                raise DataError(
                    f"{self.title} file malformed: {self._path(name)} lacks keys 'data' and '{self.label_key}'"
                )
            x = np.asarray(d["data"], dtype=np.uint8)
            y = np.asarray(d[self.label_key], dtype=np.int64)
            if x.ndim != 2 or x.shape[1] != 3072 or len(x) != len(y):
                raise DataError(
                    f"{self.title} file malformed: {self._path(name)} has data {x.shape} and {len(y)} labels, "
                    "expected (N, 3072) uint8 and N labels"
                )
            data.append(x)
            labels.append(y)
        images, targets = np.concatenate(data).reshape(-1, 3, 32, 32), np.concatenate(labels)
        images.flags.writeable = False
        targets.flags.writeable = False
        return images, targets

    @cached_property
    def _train_full(self) -> tuple[np.ndarray, np.ndarray]:
        return self._load_split(self.train_files)

    @cached_property
    def _test_full(self) -> tuple[np.ndarray, np.ndarray]:
        return self._load_split(self.test_files)

    # ---- the long-tailed subset ----------------------------------------------------------------
    @cached_property
    def subset_counts(self) -> list[int]:
        targets = self._train_full[1]
        n_max = len(targets) // self.num_classes_expected
        return imbalance_profile(self.imb_profile, n_max, self.num_classes_expected, self.imb_ratio)

    @cached_property
    def subset_indices(self) -> np.ndarray:
        """Indices into the concatenated train batches, sorted by class (the LDAM order)."""
        targets = self._train_full[1]
        bad = (targets < 0) | (targets >= self.num_classes_expected)
        if bad.any():
            raise DataError(
                f"{self.title} labels out of range in {self._path(self.train_files[0])}...: "
                f"expected 0..{self.num_classes_expected - 1}"
            )
        return ldam_subsample(targets, self.subset_counts, self.subset_seed)

    # ---- contract ------------------------------------------------------------------------------
    def load_class_names(self) -> list[str]:
        meta = self._read(self.meta_file)
        if self.names_key not in meta:
            raise DataError(f"{self.title} file malformed: {self._path(self.meta_file)} lacks key '{self.names_key}'")
        names = [str(n) for n in meta[self.names_key]]
        if len(names) != self.num_classes_expected:
            raise DataError(
                f"{self.title} file malformed: {self._path(self.meta_file)} lists {len(names)} class names, "
                f"expected {self.num_classes_expected}"
            )
        return names

    def load_train_targets(self) -> np.ndarray:
        return self._train_full[1][self.subset_indices]

    def make_dataset(self, split: Split) -> Dataset:
        if split == "train":
            images, targets = self._train_full
            idx = self.subset_indices
            transform = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()])
            return CIFARTensorDataset(images[idx], targets[idx], transform)
        if split in ("val", "test"):
            images, targets = self._test_full
            return CIFARTensorDataset(images, targets)
        raise ValueError(f"unknown split {split!r}; expected 'train', 'val' or 'test'")

    def device_split(self, split: Split) -> tuple[torch.Tensor, torch.Tensor]:
        images, targets = self._train_full if split == "train" else self._test_full
        if split == "train":
            images, targets = images[self.subset_indices], targets[self.subset_indices]
        return torch.from_numpy(np.array(images)), torch.from_numpy(np.array(targets))  # writable copies

    def device_augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The loader path's RandomCrop(32, padding=4) + RandomHorizontalFlip, batched on the device."""
        return random_crop_flip(x, generator, padding=4)

    def protocol_extras(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "imb_ratio": self.imb_ratio,
            "imb_profile": self.imb_profile,
            "subset_seed": self.subset_seed,
            "subset_protocol": "LDAM (Cao et al. 2019): RandomState(seed), per class in label order shuffle "
            "its ascending indices and keep the first n_i",
            "subset_sha256": indices_sha256(self.subset_indices),
            "num_train": int(len(self.subset_indices)),
            "num_train_full": int(len(self._train_full[1])),
            "train_split": f"{self.title} train ({'+'.join(self.train_files)}), LT subset",
            "val_split": "test",
            "test_split": f"{self.title} {'+'.join(self.test_files)} (the full balanced test set)",
            **({"resize": f"bilinear 32 -> {self.image_size} on the device, after crop and flip"} if self.image_size != 32 else {}),
        }


class CIFAR10LT(_CIFARLT):
    """CIFAR-10-LT: 10 classes, 5,000 train images per class before subsampling."""

    title = "CIFAR-10"
    folder = "cifar-10-batches-py"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files = ("test_batch",)
    meta_file = "batches.meta"
    label_key = "labels"
    names_key = "label_names"
    num_classes_expected = 10
    archive_url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    archive_md5 = "c58f30108f718f92721af3b95e74349a"


class CIFAR100LT(_CIFARLT):
    """CIFAR-100-LT: 100 fine classes, 500 train images per class before subsampling."""

    title = "CIFAR-100"
    folder = "cifar-100-python"
    train_files = ("train",)
    test_files = ("test",)
    meta_file = "meta"
    label_key = "fine_labels"
    names_key = "fine_label_names"
    num_classes_expected = 100
    archive_url = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    archive_md5 = "eb9058c3a382ffc7106e4002c42a8d85"
