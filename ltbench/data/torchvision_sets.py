"""The few-shot / base-to-new datasets of the CLIP prompt-learning papers, through torchvision's own dataset classes.

``TorchvisionSet(name=...)`` reads DTD, EuroSAT, Flowers102, OxfordIIITPet, Food101, FGVCAircraft,
StanfordCars, Caltech101, SUN397 or ImageNet from torchvision's on-disk layout under ``root``
(``download: true`` is torchvision's own downloader, where it has one), and UCF101 as CoOp ships it
(``ucf101/UCF-101-midframes/<Class_Name>/<video>.jpg``, one middle frame per video), which no
torchvision class reads (torchvision's ``UCF101`` is for the videos): its split file is required. Splits:

* ``split_file`` given: CoOp's split JSON (``split_zhou_<Name>.json``: ``{"train"|"val"|"test":
  [[relative image path, label, class name], ...]}``), images under ``image_dir`` (default: the
  torchvision image folder of the dataset), class names from the file. This is the split the
  papers' tables use.
* otherwise torchvision's official splits: train / val / test where the dataset has them; where it
  has no validation split, 20% of train drawn with ``split_seed`` (CoOp's ``split_trainval``); where
  it has no split at all (EuroSAT, Caltech101, SUN397), a stratified 50 / 20 / 30 draw with
  ``split_seed`` (CoOp's proportions, not CoOp's files). ImageNet validates on its val set, which is
  also the test set (as CoOp). The record says which (``split``). UCF101 has no draw: its frames come
  in groups of clips from one video session (``v_<Action>_g08_c01``...), so a per-image draw would put
  near-duplicates of a test frame in train; CoOp's split file keeps UCF101's official train/test
  groups apart.

Labels and class names come from the dataset objects' indices (no image is opened for the facts).
ImageNet's class names are torchvision's (the first name per wnid in ``meta.bin``) unless ``classnames``
gives CoOp's ``classnames.txt``, the names the papers prompt with (``ltbench.data.imagenet_classnames``).
Images are decoded to uint8 at ``image_size``: CoOp's random-resized crop (scale 0.08-1, bicubic) and
flip for training, resize + centre crop for evaluation; CLIP's mean/std on the device.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode, v2

from ltbench.data.base import LTDataModule, Split
from ltbench.data.imagenet_classnames import read_classnames
from ltbench.data.images import open_rgb
from ltbench.errors import DataError, LTBenchError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
COOP_DATASETS = "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md"
Name = Literal[
    "DTD", "EuroSAT", "Flowers102", "OxfordIIITPet", "Food101", "FGVCAircraft", "StanfordCars", "Caltech101", "SUN397", "ImageNet", "UCF101"
]


@dataclass(frozen=True)
class Spec:
    """How torchvision lays a dataset out: its official split names (None: no split), the folder of its
    images (CoOp's relative paths start there), and how to read labels and class names from an object.

    ``downloadable``: torchvision's class takes ``download`` (ImageNet's does not). ``val_is_test``:
    without a val split, validate on the test split (CoOp's ImageNet) rather than on a draw from train.
    ``split_file_from``: no torchvision class reads the dataset (UCF101's frames), so CoOp's split file
    is required; where it is published.
    """

    splits: Optional[dict[str, str]]
    image_dir: str
    labels: Optional[Callable[[Any], list[int]]] = None
    classes: Optional[Callable[[Any], list[str]]] = None
    kwargs: Callable[[str], dict[str, Any]] = lambda split: {"split": split}
    downloadable: bool = True
    val_is_test: bool = False
    split_file_from: Optional[str] = None


def _attr(name: str) -> Callable[[Any], list[int]]:
    return lambda ds: list(getattr(ds, name))


SPECS: dict[str, Spec] = {
    "DTD": Spec({"train": "train", "val": "val", "test": "test"}, "dtd/dtd/images", _attr("_labels"), _attr("classes")),
    "EuroSAT": Spec(None, "eurosat/2750", _attr("targets"), _attr("classes"), lambda split: {}),
    "Flowers102": Spec({"train": "train", "val": "val", "test": "test"}, "flowers-102/jpg", _attr("_labels"), _attr("classes")),
    "OxfordIIITPet": Spec({"train": "trainval", "test": "test"}, "oxford-iiit-pet/images", _attr("_labels"), _attr("classes")),
    "Food101": Spec({"train": "train", "test": "test"}, "food-101/images", _attr("_labels"), _attr("classes")),
    "FGVCAircraft": Spec({"train": "train", "val": "val", "test": "test"}, "fgvc-aircraft-2013b/data/images", _attr("_labels"), _attr("classes")),
    "StanfordCars": Spec({"train": "train", "test": "test"}, "stanford_cars", lambda ds: [y for _, y in ds._samples], _attr("classes")),
    "Caltech101": Spec(None, "caltech101/101_ObjectCategories", _attr("y"), _attr("categories"), lambda split: {"target_type": "category"}),
    "SUN397": Spec(None, "SUN397", _attr("_labels"), _attr("classes"), lambda split: {}),
    "ImageNet": Spec(
        {"train": "train", "test": "val"}, "", _attr("targets"), lambda ds: [c[0] for c in ds.classes], downloadable=False, val_is_test=True
    ),
    "UCF101": Spec(None, "ucf101/UCF-101-midframes", split_file_from=COOP_DATASETS + "#ucf101"),
}
TRAIN_VAL_FRACTION = 0.2
NO_SPLIT_FRACTIONS = (0.5, 0.2, 0.3)


class SourceItems(Dataset):
    """Items of torchvision dataset objects (``(object, index)`` pairs) or of image files (``(None, path)``),
    with their labels; ``expected`` says where a missing file was expected to be."""

    def __init__(
        self, items: list[tuple[Any, Any]], targets: np.ndarray, transform: Callable, title: str,
        expected: str = "the split file's paths under image_dir",
    ) -> None:  # fmt: skip
        self.items, self.targets, self.transform, self.title, self.expected = items, targets, transform, title, expected

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        source, key = self.items[i]
        if source is None:
            image = open_rgb(key, f"{self.title} item {i}", self.expected)
        else:
            image = source[key][0]
            image = image.convert("RGB") if hasattr(image, "convert") else image
        return self.transform(image), int(self.targets[i]), i


class TorchvisionSet(LTDataModule):
    """One of the CLIP prompt-learning papers' datasets (single-label), via torchvision; wrap it in
    ``BaseToNew`` for the base-to-new protocol."""

    mean = CLIP_MEAN
    std = CLIP_STD

    def __init__(
        self,
        name: Name = "DTD",
        root: str = "data",
        split_file: Optional[str] = None,
        image_dir: Optional[str] = None,
        download: bool = False,
        split_seed: int = 1,
        image_size: int = 224,
        batch_size: int = 32,
        classnames: Optional[str] = None,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            name: the dataset (torchvision class name).
            root: torchvision's ``root`` for it.
            split_file: CoOp's split JSON (``split_zhou_*.json``); null: torchvision's official splits.
            image_dir: where the split file's relative paths start (default: the torchvision image folder under root).
            download: let torchvision download it (where torchvision can).
            split_seed: seed of the validation / no-split draws (without a split file).
            image_size: input size (224 for ViT-B/16).
            classnames: ImageNet only: CoOp's ``classnames.txt`` (``<wnid> <class name>`` lines, one per class) to
                name the classes; null: torchvision's names. Give the same file to the targets tested with the checkpoint.
        """
        if name not in SPECS:
            raise LTBenchError(f"TorchvisionSet: unknown dataset {name!r}; expected one of {', '.join(SPECS)}")
        if classnames and name != "ImageNet":
            raise LTBenchError(f"data.init_args.classnames: only ImageNet's classes are named from a classnames file; {name} names its own")
        if classnames and split_file:
            raise LTBenchError("data.init_args.classnames and split_file both name the classes; give one of them")
        super().__init__(batch_size=batch_size, **kwargs)
        self.name, self.root, self.split_file, self.download = name, root, split_file, download
        self._image_dir = image_dir
        self.split_seed = split_seed
        self.image_size = image_size
        self.classnames = classnames

    @property
    def image_dir(self) -> Path:
        return Path(self._image_dir) if self._image_dir else Path(self.root) / SPECS[self.name].image_dir

    # ---- torchvision objects ------------------------------------------------------------------------
    def _tv(self, split: Optional[str]) -> Any:
        import torchvision.datasets as tvd

        spec = SPECS[self.name]
        kwargs = spec.kwargs(split) if split is not None else spec.kwargs("")
        if self.download and spec.downloadable:
            kwargs["download"] = True
        try:
            return getattr(tvd, self.name)(self.root, **kwargs)
        except (RuntimeError, FileNotFoundError) as e:
            raise DataError(
                f"{self.name}: not found under {self.root} in torchvision's layout ({e}); give data.init_args.root, "
                "set download: true where torchvision can download it, or give CoOp's split_file with image_dir"
            ) from None

    @cached_property
    def _parts(self) -> dict[str, Any]:
        """{"classes", "train"/"val"/"test": (items, targets), "split": description}."""
        if self.split_file:
            return self._from_split_file()
        spec = SPECS[self.name]
        if spec.split_file_from:
            raise DataError(
                f"{self.name}: no torchvision class reads it, so CoOp's split file is required: give split_file "
                f"(split_zhou_{self.name}.json, published at {spec.split_file_from}), with the images under image_dir ({self.image_dir})"
            )
        rng = np.random.RandomState(self.split_seed)
        if spec.splits is None:
            ds = self._tv(None)
            targets = np.asarray(spec.labels(ds))
            chosen = _stratified(targets, NO_SPLIT_FRACTIONS, rng)
            parts = {k: ([(ds, int(i)) for i in idx], targets[idx]) for k, idx in zip(("train", "val", "test"), chosen)}
            how = f"torchvision {self.name}, no official split: stratified 50/20/30 draw (split_seed={self.split_seed})"
            return {"classes": spec.classes(ds), "split": how, **parts}
        objs = {k: self._tv(v) for k, v in spec.splits.items()}
        parts = {}
        for k, ds in objs.items():
            t = np.asarray(spec.labels(ds))
            parts[k] = ([(ds, i) for i in range(len(t))], t)
        if "val" not in parts and spec.val_is_test:
            parts["val"] = parts["test"]
            how = f"torchvision {self.name}: train; val = test = the official {spec.splits['test']} set"
        elif "val" not in parts:
            items, t = parts["train"]
            tr, va = _stratified(t, (1 - TRAIN_VAL_FRACTION, TRAIN_VAL_FRACTION), rng)
            parts["train"], parts["val"] = ([items[i] for i in tr], t[tr]), ([items[i] for i in va], t[va])
            how = f"torchvision {self.name} official {'/'.join(spec.splits.values())}; val = 20% of train (split_seed={self.split_seed})"
        else:
            how = f"torchvision {self.name} official train/val/test"
        return {"classes": self._class_names(objs["train"]), "split": how, **parts}

    def _class_names(self, ds: Any) -> list[str]:
        """The torchvision object's class names, or ImageNet's from ``classnames`` by the object's wnids."""
        if not self.classnames:
            return SPECS[self.name].classes(ds)
        names = read_classnames(self.classnames, ds.wnids)
        return [names[w] for w in ds.wnids]

    def _from_split_file(self) -> dict[str, Any]:
        path = Path(self.split_file)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError(f"{self.name}: split file {path} does not exist (CoOp's split_zhou_*.json expected)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{self.name}: split file {path} is not JSON ({e})") from None
        if not isinstance(raw, dict) or not all(isinstance(raw.get(k), list) for k in ("train", "val", "test")):
            raise DataError(f"{path}: expected an object with train, val and test lists of [image path, label, class name]")
        names: dict[int, str] = {}
        parts: dict[str, Any] = {}
        for split in ("train", "val", "test"):
            items, targets = [], []
            for i, row in enumerate(raw[split]):
                if not (isinstance(row, list) and len(row) == 3 and isinstance(row[0], str) and isinstance(row[1], int)):
                    raise DataError(f"{path}: {split}[{i}] = {row!r}; expected [relative image path, integer label, class name]")
                impath, label, cname = row
                if names.setdefault(label, cname) != cname:
                    raise DataError(f"{path}: {split}[{i}]: label {label} is named {cname!r} here and {names[label]!r} before")
                items.append((None, os.path.join(self.image_dir, impath)))
                targets.append(label)
            parts[split] = (items, np.asarray(targets, dtype=np.int64))
        if sorted(names) != list(range(len(names))):
            raise DataError(f"{path}: labels must be 0..C-1; found {len(names)} labels from {min(names)} to {max(names)}")
        return {"classes": [names[i] for i in range(len(names))], "split": f"CoOp split file {path.name}", **parts}

    # ---- the contract -------------------------------------------------------------------------------
    def load_class_names(self) -> list[str]:
        return list(self._parts["classes"])

    def load_train_targets(self) -> np.ndarray:
        return self._parts["train"][1]

    def make_dataset(self, split: Split) -> Dataset:
        items, targets = self._parts[split]
        transform = coop_train_transform(self.image_size) if split == "train" else clip_eval_transform(self.image_size)
        return SourceItems(items, targets, transform, f"{self.name} {split}")

    def protocol_extras(self) -> dict[str, Any]:
        extras = {"dataset": self.name, "split": self._parts["split"], "split_seed": None if self.split_file else self.split_seed}
        if self.name == "ImageNet" and not self.split_file:
            extras["class_names_from"] = str(self.classnames or Path(self.root) / "meta.bin")
        return extras


def coop_train_transform(size: int) -> v2.Compose:
    """CoOp's training view: random-resized crop (scale 0.08-1, bicubic) and flip, uint8 out."""
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(0.08, 1.0), interpolation=InterpolationMode.BICUBIC, antialias=True),
        v2.RandomHorizontalFlip(), v2.PILToTensor(),
    ])  # fmt: skip


def clip_eval_transform(size: int) -> v2.Compose:
    """CLIP's evaluation view: bicubic resize of the short side and centre crop, uint8 out."""
    return v2.Compose([
        v2.Resize(size, interpolation=InterpolationMode.BICUBIC, antialias=True),
        v2.CenterCrop(size), v2.PILToTensor(),
    ])  # fmt: skip


def _stratified(targets: np.ndarray, fractions: tuple[float, ...], rng: np.random.RandomState) -> list[np.ndarray]:
    """Per class, a shuffled partition by ``fractions`` (rounded; every part keeps at least one item when it can)."""
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for c in np.unique(targets):  # once at set-up
        idx = rng.permutation(np.flatnonzero(targets == c))
        cuts = np.round(np.cumsum(fractions)[:-1] * len(idx)).astype(int)
        for k, piece in enumerate(np.split(idx, cuts)):
            parts[k].append(piece)
    return [np.sort(np.concatenate(p)) for p in parts]


__all__ = ["TorchvisionSet", "SPECS", "SourceItems", "CLIP_MEAN", "CLIP_STD", "coop_train_transform", "clip_eval_transform"]
