"""Datasets defined by list files of ``<relative image path> <label>`` lines (OLTR/Decoupling format).

ImageNet-LT, Places-LT and iNaturalist-2018 differ only in file names, class count and known
checksums, so one module reads them all. Lists are parsed with plain string operations (a
115k-line file in well under a second) and verified against published checksums, so a run records
exactly which split it used; images are opened only when an item is fetched.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from functools import cached_property
from contextlib import contextmanager
from typing import Any, Callable, ClassVar, Iterator, Literal, Optional, Sequence

import numpy as np
import torch
from ltbench.data.images import open_rgb
from torch.utils.data import Dataset
from torchvision.transforms import v2

from ltbench.data.base import LTDataModule, Split
from ltbench.data.device_loader import epoch_generator
from ltbench.data.jpeg import EncodedFileDataset, EncodedImages, collate_encoded, decode_augment
from ltbench.data.samplers import PASS_STREAM
from ltbench.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LINE_FORMAT = "'<relative image path> <integer label>' per line"
CLASSNAMES_FILE = "classnames.txt"


@dataclass(frozen=True)
class KnownList:
    """A published list file; any digest given identifies it."""

    name: str
    md5: Optional[str] = None
    sha256: Optional[str] = None
    git_blob: Optional[str] = None

    def matches(self, digests: dict[str, str]) -> bool:
        return any(getattr(self, k) is not None and getattr(self, k) == v for k, v in digests.items())


def file_digests(data: bytes) -> dict[str, str]:
    """MD5, SHA-256 and the git blob id (``sha1(b"blob <len>\\0" + data)``) of a file's bytes."""
    blob = hashlib.sha1(b"blob %d\0" % len(data))
    blob.update(data)
    return {
        "md5": hashlib.md5(data).hexdigest(),
        "sha256": hashlib.sha256(data).hexdigest(),
        "git_blob": blob.hexdigest(),
    }


def _nonblank_line_numbers(lines: Sequence[str]) -> list[int]:
    return [i + 1 for i, ln in enumerate(lines) if ln.strip()]


def split_rows(
    text: str, path: str, split: Callable[[str], list[str]], line_format: str, source: str = ""
) -> tuple[list[list[str]], Callable[[int, str], DataError]]:
    """The non-blank lines of a list file split into fields, and ``fail(k, why)``: the error for row k,
    naming its file and line number (worked out only then). An empty file is an error."""
    lines = text.splitlines()
    rows = [split(ln) for ln in lines if ln and not ln.isspace()]
    where = f" ({source})" if source else ""

    def fail(k: int, why: str) -> DataError:
        lineno = _nonblank_line_numbers(lines)[k]
        return DataError(f"{path}:{lineno}: {why} in {lines[lineno - 1]!r}; expected {line_format}{where}")

    if not rows:
        raise DataError(f"{path}: list file is empty; expected {line_format}{where}")
    return rows, fail


def parse_list(text: str, path: str, num_classes: Optional[int] = None, source: str = "") -> tuple[list[str], np.ndarray]:
    """Paths and int64 labels of a list file's text; blank lines are skipped.

    The fast path is list comprehensions over ``str.rsplit``; line numbers are only worked out
    when something is wrong, to name the offending line.
    """
    rows, fail = split_rows(text, path, lambda ln: ln.rsplit(None, 1), LINE_FORMAT, source)
    if any(len(r) != 2 for r in rows):
        raise fail(next(k for k, r in enumerate(rows) if len(r) != 2), "no label")
    try:
        labels = np.fromiter(map(int, (r[1] for r in rows)), dtype=np.int64, count=len(rows))
    except ValueError:
        k = next(k for k, r in enumerate(rows) if not _is_int(r[1]))
        raise fail(k, f"label {rows[k][1]!r} is not an integer") from None
    bad = labels < 0 if num_classes is None else (labels < 0) | (labels >= num_classes)
    if bad.any():
        k = int(np.argmax(bad))
        bound = "0 or more" if num_classes is None else f"in 0..{num_classes - 1}"
        raise fail(k, f"label {labels[k]} is not {bound}")
    return [r[0] for r in rows], labels


def _is_int(s: str) -> bool:
    try:
        int(s)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class ListFile:
    """One parsed list file and how it was identified."""

    path: str
    paths: list[str]
    labels: np.ndarray
    digests: dict[str, str]
    verified_as: Optional[str]


class PathTable:
    """Relative paths packed into one byte buffer, so DataLoader workers share it copy-free."""

    def __init__(self, paths: Sequence[str]) -> None:
        encoded = [p.encode("utf-8") for p in paths]
        self.offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=self.offsets[1:])
        self.buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self.buffer[self.offsets[i] : self.offsets[i + 1]].tobytes().decode("utf-8")


class ImageListDataset(Dataset):
    """Images named by a list file, decoded with PIL to RGB; items are ``(uint8 CHW, label, index)``."""

    def __init__(self, root: str, lst: ListFile, transform: Any, title: str = "image list") -> None:
        self.root = root
        self.list_path = lst.path
        self.paths = PathTable(lst.paths)
        self.targets = lst.labels
        self.transform = transform
        self.title = title

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        path = os.path.join(self.root, self.paths[index])
        img = open_rgb(path, f"entry {index + 1} of {self.list_path}", f"the {self.title} images under root={self.root}")
        return self.transform(img), int(self.targets[index]), index


class ImageListLT(LTDataModule):
    """Any dataset given as train/val/test list files; subclasses only set defaults.

    Relative list names resolve against ``list_dir``; image paths in the lists resolve against
    ``root``. Class names come from ``<list_dir>/classnames.txt`` (one per line, in label order)
    when present, else ``class_<i>``.
    """

    mean: ClassVar[tuple[float, ...]] = IMAGENET_MEAN
    std: ClassVar[tuple[float, ...]] = IMAGENET_STD
    in_chans = 3

    title: ClassVar[str] = "image list"
    default_lists: ClassVar[dict[str, str]] = {"train": "train.txt", "val": "val.txt", "test": "test.txt"}
    known_lists: ClassVar[tuple[KnownList, ...]] = ()
    num_classes_expected: ClassVar[Optional[int]] = None
    source: ClassVar[str] = "your own list files"

    def __init__(
        self,
        root: str,
        list_dir: Optional[str] = None,
        train_list: Optional[str] = None,
        val_list: Optional[str] = None,
        test_list: Optional[str] = None,
        image_size: int = 224,
        decode: Literal["pil", "device"] = "pil",
        **kwargs: Any,
    ) -> None:
        """
        Args:
            root: image root; list paths are relative to it.
            list_dir: folder of the list files (and optional ``classnames.txt``); defaults to root.
            train_list: train list file name or path, overriding the dataset's default.
            val_list: val list file name or path, overriding the dataset's default.
            test_list: test list file name or path, overriding the dataset's default.
            image_size: training crop and evaluation centre-crop size.
            decode: ``pil`` decodes and augments training images in loader workers; ``device``
                has workers read file bytes only and decodes JPEGs with ``torchvision.io.decode_jpeg``
                on the training device (nvJPEG on CUDA), where the same RandomResizedCrop, flip and
                colour jitter run batched (``ltbench.data.jpeg``). Evaluation always uses PIL.
        """
        super().__init__(**kwargs)
        self.root = root
        self.list_dir = list_dir if list_dir is not None else root
        self.list_names = {
            "train": train_list or self.default_lists["train"],
            "val": val_list or self.default_lists["val"],
            "test": test_list or self.default_lists["test"],
        }
        self.image_size = image_size
        if decode not in ("pil", "device"):
            raise DataError(f"data.init_args.decode={decode!r}; expected 'pil' or 'device'")
        self.decode = decode
        self._lists: dict[str, ListFile] = {}
        self._pass_seed: Optional[int] = None

    # ---- list files ----------------------------------------------------------------------------
    def list_path(self, split: Split) -> str:
        return os.path.join(self.list_dir, self.list_names[split])

    def read_list(self, split: Split) -> ListFile:
        """The parsed list of ``split``, read and verified once (val and test may share a file)."""
        path = self.list_path(split)
        if path in self._lists:
            return self._lists[path]
        if not os.path.isfile(path):
            raise DataError(
                f"{self.title} {split} list missing: expected {path} ({LINE_FORMAT}, paths relative to "
                f"root={self.root}; from {self.source})"
            )
        with open(path, "rb") as f:
            data = f.read()
        try:
            text = data.decode("utf-8-sig")  # a byte-order mark is not part of the first path
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text (byte {e.start}); expected {LINE_FORMAT}") from None
        paths, labels = parse_list(text, path, self.num_classes_expected, self.source)
        digests = file_digests(data)
        known = next((k for k in self.known_lists if k.matches(digests)), None)
        if known is None:
            warnings.warn(
                f"{path} matches no published {self.title} list checksum; using it as given "
                f"({len(labels)} lines, sha256 {digests['sha256'][:12]})",
                stacklevel=2,
            )
        lst = ListFile(path, paths, labels, digests, known.name if known else None)
        self._lists[path] = lst
        return lst

    # ---- contract ------------------------------------------------------------------------------
    def load_class_names(self) -> list[str]:
        names_path = os.path.join(self.list_dir, CLASSNAMES_FILE)
        if os.path.isfile(names_path):
            with open(names_path, encoding="utf-8-sig") as f:
                names = [ln.strip() for ln in f if ln.strip()]
            expected = self.num_classes_expected
            if expected is not None and len(names) != expected:
                raise DataError(f"{names_path} lists {len(names)} class names, expected {expected} (one per line)")
            return names
        n = self.num_classes_expected
        if n is None:
            n = int(self.read_list("train").labels.max()) + 1
        return [f"class_{i}" for i in range(n)]

    def load_train_targets(self) -> np.ndarray:
        return self._checked("train").labels

    def _checked(self, split: Split) -> ListFile:
        lst = self.read_list(split)
        c = self.num_classes
        if len(lst.labels) and int(lst.labels.max()) >= c:
            k = int(np.argmax(lst.labels >= c))
            raise DataError(
                f"{lst.path}: label {lst.labels[k]} (entry {k + 1}) is out of range; expected 0..{c - 1} "
                f"for the {c} classes"
            )
        return lst

    @cached_property
    def train_transform(self) -> v2.Compose:
        return v2.Compose(
            [
                v2.RandomResizedCrop(self.image_size, antialias=True),
                v2.RandomHorizontalFlip(),
                v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0),
                v2.PILToTensor(),
            ]
        )

    @cached_property
    def eval_transform(self) -> v2.Compose:
        resize = int(round(self.image_size * 256 / 224))
        return v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(self.image_size), v2.PILToTensor()])

    def make_dataset(self, split: Split) -> Dataset:
        if split not in ("train", "val", "test"):
            raise ValueError(f"unknown split {split!r}; expected 'train', 'val' or 'test'")
        if split == "train" and self.decode == "device":
            lst = self._checked(split)
            return EncodedFileDataset(self.root, PathTable(lst.paths), lst.labels, lst.path)
        transform = self.train_transform if split == "train" else self.eval_transform
        return ImageListDataset(self.root, self._checked(split), transform, self.title)

    def train_collate_fn(self) -> Optional[Any]:
        return collate_encoded if self.decode == "device" else None

    def _jpeg_generators(self, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
        """Device and host generators of the current epoch, seeded from (seed, epoch, rank); in a
        ``keyed_pass``, from the pass's seed alone."""
        trainer = self.trainer
        epoch = trainer.current_epoch if trainer is not None else 0
        rank = trainer.global_rank if trainer is not None else 0
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        if self._pass_seed is not None:
            seed, epoch, rank = self._pass_seed, PASS_STREAM, 0
        key = (device, seed, epoch, rank)
        cached = self.__dict__.get("_jpeg_gens")
        if cached is None or cached[0] != key:
            cached = (key, epoch_generator(device, seed, epoch, rank), epoch_generator(torch.device("cpu"), seed, epoch, rank + 2**16))
            self.__dict__["_jpeg_gens"] = cached
        return cached[1], cached[2]

    @contextmanager
    def keyed_pass(self, seed: int) -> Iterator[None]:
        """Device-decoded crops inside the block come from generators seeded by ``seed`` alone; the
        current epoch's generators are put back after."""
        saved, self._pass_seed = self.__dict__.pop("_jpeg_gens", None), int(seed)
        try:
            yield
        finally:
            self._pass_seed = None
            self.__dict__.pop("_jpeg_gens", None)
            if saved is not None:
                self.__dict__["_jpeg_gens"] = saved

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch[0], EncodedImages):
            device = batch[1].device
            x = decode_augment(batch[0], device, self.image_size, *self._jpeg_generators(device))
            batch = (x, batch[1], batch[2])
        return super().on_after_batch_transfer(batch, dataloader_idx)

    def protocol_extras(self) -> dict[str, Any]:
        lists = {}
        for split in ("train", "val", "test"):
            lst = self.read_list(split)
            lists[split] = {
                "file": self.list_names[split],
                "sha256": lst.digests["sha256"],
                "lines": int(len(lst.labels)),
                "verified": lst.verified_as is not None,
                "known_as": lst.verified_as,
            }
        return {
            "root": self.root,
            "list_dir": self.list_dir,
            "lists": lists,
            "val_split": self.list_names["val"],
            "test_split": self.list_names["test"],
            "eval_transform": f"Resize({int(round(self.image_size * 256 / 224))})+CenterCrop({self.image_size})",
        }


class ImageNetLT(ImageListLT):
    """ImageNet-LT (Liu et al. 2019): 1,000 classes over ILSVRC-2012; tune on val, report on test."""

    title = "ImageNet-LT"
    default_lists = {"train": "ImageNet_LT_train.txt", "val": "ImageNet_LT_val.txt", "test": "ImageNet_LT_test.txt"}
    num_classes_expected = 1000
    source = (
        "facebookresearch/classifier-balancing data/ImageNet_LT/ or the OLTR Google Drive "
        "(github.com/zhmiao/OpenLongTailRecognition-OLTR); images from ILSVRC-2012"
    )
    known_lists = (
        KnownList("ImageNet_LT_train.txt", git_blob="a063f095fcd475db4cf8b0658c4b73955535bbf9"),
        KnownList(
            "ImageNet_LT_val.txt",
            md5="ef44f8e43fbc904809a77216042e7498",
            sha256="9af7ba688acf9532ff5845a8fb14a1e97fdc4c51ac48bc72c08ea9c3f7ff142e",
            git_blob="3ed3188b2f44829ce2dec1cc27040d8d40984088",
        ),
        KnownList(
            "ImageNet_LT_test.txt",
            md5="5f5f97c738923e877c5c78accce6744f",
            sha256="d1590191cf8a71fada7b1aaedaa2d139a2aea93ff2f1b755319d0bd8dbaa55d5",
            git_blob="76a2fb9749d6cd29e765cc4f8c270f2504131e2f",
        ),
    )


class PlacesLT(ImageListLT):
    """Places-LT (Liu et al. 2019): 365 classes over Places365-Standard; 62,500 / 7,300 / 36,500 images."""

    title = "Places-LT"
    default_lists = {"train": "Places_LT_train.txt", "val": "Places_LT_val.txt", "test": "Places_LT_test.txt"}
    num_classes_expected = 365
    source = (
        "facebookresearch/classifier-balancing data/Places_LT/ or the OLTR Google Drive; "
        "images from Places365-Standard (small, 256x256)"
    )
    known_lists = (
        KnownList("Places_LT_train.txt", sha256="726c4871dcbf07ce2f857703bfe32e9a83ffbf52d704239f6d95c4f4f4c247f7"),
        KnownList("Places_LT_val.txt", sha256="719e3cf3766c09134ea28f56f1036c78def511ac1ed2c2532a6beef78f2439ba"),
        KnownList("Places_LT_test.txt", sha256="44eee8441c8098c59195465abede425721bc35525d75209f9433b161a6eb37bc"),
    )


class INat2018(ImageListLT):
    """iNaturalist 2018: 8,142 classes; no separate test labels, so val is also the reported split."""

    title = "iNaturalist-2018"
    default_lists = {"train": "iNaturalist18_train.txt", "val": "iNaturalist18_val.txt", "test": "iNaturalist18_val.txt"}
    num_classes_expected = 8142
    source = (
        "facebookresearch/classifier-balancing data/iNaturalist18/ (gen_lists.py from train2018.json/val2018.json); "
        "images from the iNaturalist 2018 competition"
    )
    known_lists = (KnownList("iNaturalist18_val.txt", sha256="efaeff65f80641b60864470e6f255aa69453406ef5717eec8c6681748f3a61f3"),)
