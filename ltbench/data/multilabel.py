"""COCO-LT and VOC-LT (DB-Loss's COCO-MLT / VOC-MLT), multi-label long-tailed benchmarks.

Two routes give the same label sets. ``source="lists"`` reads the published LMPT/CPRFL list files
(``<relative path> <label> <label> ...``, 0-indexed), verified by MD5. ``source="annotations"``
rebuilds them from the raw COCO 2017 json / VOC XML the user has, with DB-Loss's semantics: COCO
positive if the image has at least one usable annotation of the category (``ignore``, area <= 0 and
w or h < 1 skipped, ``iscrowd`` kept), label = position in the sorted category ids; VOC counts every
``<object>``, ``difficult`` included, classes in alphabetical order. Facts (class counts, groups)
come from labels only; images are opened when an item is fetched.

There is no official validation split (CPRFL and DB-Loss select on test), so ``val`` is the test
split, as recorded in the protocol.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, Literal, Optional, Sequence

import numpy as np
import torch
from ltbench.data.images import open_rgb
from torch.utils.data import Dataset
from torchvision.transforms import v2

from ltbench.data.base import LTDataModule, Split
from ltbench.data.lists import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    KnownList,
    PathTable,
    _is_int,
    _nonblank_line_numbers,
    split_rows,
    file_digests,
)
from ltbench.errors import DataError

LINE_FORMAT = "'<relative image path> <label> <label> ...' per line (0-indexed labels, none for an unlabelled image)"
NAMES_FORMAT = "'<class name> <index>' per line (names may contain spaces)"
Source = Literal["lists", "annotations"]
Augment = Literal["cprfl", "dbloss", "flip", "none"]

COCO_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)  # fmt: skip
VOC_NAMES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


# ---- parsing ------------------------------------------------------------------------------------
def parse_multilabel_list(
    text: str, path: str, num_classes: int, source: str = ""
) -> tuple[list[str], np.ndarray]:
    """Paths and an (N, C) uint8 0/1 matrix from a list file's text.

    Blank lines are skipped, trailing spaces and a missing final newline are harmless, a line with
    only a path is an image without labels, repeated labels count once. Line numbers are worked out
    only to name a bad line.
    """
    rows, fail = split_rows(text, path, str.split, LINE_FORMAT, source)
    lengths = np.fromiter((len(r) - 1 for r in rows), dtype=np.int64, count=len(rows))
    tokens = [t for r in rows for t in r[1:]]
    owner = np.repeat(np.arange(len(rows)), lengths)
    try:
        labels = np.fromiter(map(int, tokens), dtype=np.int64, count=len(tokens))
    except ValueError:
        j = next(j for j, t in enumerate(tokens) if not _is_int(t))
        raise fail(int(owner[j]), f"label {tokens[j]!r} is not an integer") from None
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        j = int(np.argmax(bad))
        raise fail(int(owner[j]), f"label {labels[j]} is not in 0..{num_classes - 1}")
    targets = np.zeros((len(rows), num_classes), dtype=np.uint8)
    targets[owner, labels] = 1
    return [r[0] for r in rows], targets


def parse_label_names(text: str, path: str, num_classes: Optional[int] = None) -> list[str]:
    """Class names in index order from ``name index`` lines, splitting on the last space."""
    named: dict[int, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.strip().rsplit(None, 1)
        if not parts:
            continue
        if len(parts) != 2 or not _is_int(parts[1]):
            raise DataError(f"{path}:{lineno}: no class index in {line!r}; expected {NAMES_FORMAT}")
        idx = int(parts[1])
        if idx in named:
            raise DataError(
                f"{path}:{lineno}: index {idx} given twice ({named[idx]!r}, {parts[0]!r}); expected {NAMES_FORMAT}"
            )
        named[idx] = parts[0]
    n = len(named)
    if sorted(named) != list(range(n)):
        raise DataError(f"{path}: class indices are not 0..{n - 1} each once; expected {NAMES_FORMAT}")
    if num_classes is not None and n != num_classes:
        raise DataError(f"{path} lists {n} class names, expected {num_classes}; {NAMES_FORMAT}")
    return [named[i] for i in range(n)]


def parse_ids(text: str, path: str, integer: bool = False) -> list[str]:
    """Image ids, one per line (DB-Loss ``img_id.pkl``/``img_id.txt``, VOC ImageSets), blanks skipped."""
    ids = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not ids:
        raise DataError(f"{path}: id file is empty; expected one image id per line")
    if integer:
        for k, s in enumerate(ids):
            if not s.isdigit():
                lineno = _nonblank_line_numbers(text.splitlines())[k]
                raise DataError(f"{path}:{lineno}: {s!r} is not a COCO image id; expected one integer id per line")
    return ids


def coco_targets(
    json_path: str, folder: str, ids: Optional[Sequence[int]] = None, ids_from: str = ""
) -> tuple[list[str], np.ndarray]:
    """Paths ``<folder>/<file_name>`` and 0/1 labels of ``ids`` (all images, in json order, if None).

    DB-Loss ``CocoDataset._parse_ann_info``: skip annotations with ``ignore``, ``area <= 0`` or a
    box side < 1; ``iscrowd`` annotations count; label = position in the sorted category ids.
    """
    if not os.path.isfile(json_path):
        raise DataError(
            f"COCO annotations missing: expected {json_path} (annotations_trainval2017.zip from cocodataset.org)"
        )
    try:
        with open(json_path, "rb") as f:
            data = json.load(f)
        images, anns, cats = data["images"], data["annotations"], data["categories"]
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"COCO annotations unreadable: {json_path} ({type(e).__name__}: {e}); expected a COCO "
                        "instances json with 'images', 'annotations' and 'categories'") from None
    cat_ids = sorted(int(c["id"]) for c in cats)
    if len(cat_ids) != len(COCO_NAMES):
        raise DataError(
            f"{json_path} has {len(cat_ids)} categories, expected {len(COCO_NAMES)} (COCO 2017 instances)"
        )
    cat2label = {c: i for i, c in enumerate(cat_ids)}
    file_of = {int(im["id"]): im["file_name"] for im in images}
    if ids is None:
        ids = [int(im["id"]) for im in images]
    missing = [i for i in ids if int(i) not in file_of]
    if missing:
        raise DataError(
            f"{json_path} has no image with id {missing[0]} ({len(missing)} ids of {ids_from or 'the split'} "
            "missing); expected the COCO 2017 instances json of that split"
        )
    row_of = {int(i): r for r, i in enumerate(ids)}
    targets = np.zeros((len(ids), len(cat_ids)), dtype=np.uint8)
    for ann in anns:
        r = row_of.get(ann["image_id"])
        if r is None or ann.get("ignore", False):
            continue
        w, h = ann["bbox"][2:4]
        if ann["area"] <= 0 or w < 1 or h < 1:
            continue
        label = cat2label.get(ann["category_id"])
        if label is None:
            raise DataError(
                f"{json_path}: annotation {ann.get('id')} has category {ann['category_id']}, not in 'categories'"
            )
        targets[r, label] = 1
    return [f"{folder}/{file_of[int(i)]}" for i in ids], targets


def voc_targets(devkit: str, year: str, ids: Sequence[str], names: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Paths ``VOCdevkit/VOC<year>/JPEGImages/<id>.jpg`` and 0/1 labels from each id's XML.

    Every ``<object>`` counts, ``difficult`` included (DB-Loss ``XMLDataset``; mmpretrain would mark
    difficult-only labels as ignored instead).
    """
    index = {n: i for i, n in enumerate(names)}
    targets = np.zeros((len(ids), len(names)), dtype=np.uint8)
    ann_dir = os.path.join(devkit, f"VOC{year}", "Annotations")
    for r, img_id in enumerate(ids):
        xml_path = os.path.join(ann_dir, f"{img_id}.xml")
        try:
            tree = ET.parse(xml_path)
        except FileNotFoundError:
            raise DataError(f"VOC annotation missing: {xml_path}; expected VOCdevkit/VOC{year}/Annotations/<id>.xml "
                            f"under the VOC root (VOC{year} trainval/test tars)") from None
        except ET.ParseError as e:
            raise DataError(f"VOC annotation unreadable: {xml_path} is not valid XML ({e})") from None
        for obj in tree.getroot().findall("object"):
            name = (obj.findtext("name") or "").strip()
            if name not in index:
                raise DataError(
                    f"{xml_path}: object name {name!r} is not a VOC class; expected one of {', '.join(names)}"
                )
            targets[r, index[name]] = 1
    return [f"VOCdevkit/VOC{year}/JPEGImages/{i}.jpg" for i in ids], targets


def labels_sha256(paths: Sequence[str], targets: np.ndarray) -> str:
    """SHA-256 of the sorted ``path label label ...`` lines: equal whenever two routes give the same sets."""
    lines = sorted(f"{p} {' '.join(map(str, np.flatnonzero(t)))}".rstrip() for p, t in zip(paths, targets))
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


# ---- items --------------------------------------------------------------------------------------
class Cutout:
    """ASL/CPRFL ``CutoutPIL(0.5)``: a square of side ``factor * size`` at a uniform random centre,
    clipped to the image, filled with one random colour; on a uint8 CHW tensor, torch RNG."""

    def __init__(self, factor: float = 0.5) -> None:
        self.factor = factor

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        _, h, w = img.shape
        hc, wc = int(self.factor * h + 0.5), int(self.factor * w + 0.5)
        yc, xc = int(torch.randint(h, ())), int(torch.randint(w, ()))
        y1, y2 = max(yc - hc // 2, 0), min(yc + hc // 2, h)
        x1, x2 = max(xc - wc // 2, 0), min(xc + wc // 2, w)
        colour = torch.randint(0, 256, (img.shape[0], 1, 1), dtype=img.dtype)
        img = img.clone()
        img[:, y1 : y2 + 1, x1 : x2 + 1] = colour  # PIL rectangles include both corners
        return img

    def __repr__(self) -> str:
        return f"Cutout(factor={self.factor})"


class MultiLabelImageDataset(Dataset):
    """Images named by relative paths, decoded with PIL to RGB; items are ``(uint8 CHW, float (C,), index)``."""

    def __init__(
        self, root: str, paths: Sequence[str], targets: np.ndarray, transform: Any, origin: str, layout: str
    ) -> None:
        self.root = root
        self.paths = PathTable(paths)
        self.targets = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.uint8))
        self.transform = transform
        self.origin = origin
        self.layout = layout

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        path = os.path.join(self.root, self.paths[index])
        img = open_rgb(path, f"entry {index + 1} of {self.origin}", f"{self.layout} at root={self.root}")
        return self.transform(img), self.targets[index].float(), index


# ---- data modules -------------------------------------------------------------------------------
@dataclass(frozen=True)
class MultiLabelSplit:
    """One split's image paths and (N, C) 0/1 labels, and the files it was built from."""

    origin: str
    paths: list[str]
    targets: np.ndarray
    files: dict[str, dict[str, Any]] = field(default_factory=dict)


class MultiLabelLT(LTDataModule):
    """A multi-label benchmark from list files or raw annotations; subclasses name files and readers.

    Default transforms follow CPRFL's released code (methods_tde_cprfl.md §B.3): train
    ``Resize((s, s))`` -> Cutout(0.5) -> RandAugment, test ``Resize((s, s))``, s = 448, no crop.
    CPRFL uses pip ``randaugment==1.0.2`` (two ops, random magnitudes); torchvision's
    ``RandAugment()`` stands in for it. CPRFL also skips mean/std normalisation; ``normalize=False``
    reproduces that, the default applies ImageNet statistics as ImageNet-pretrained backbones expect.
    """

    task = "multilabel"
    mean: ClassVar[tuple[float, ...]] = IMAGENET_MEAN
    std: ClassVar[tuple[float, ...]] = IMAGENET_STD
    in_chans = 3

    title: ClassVar[str]
    num_classes_expected: ClassVar[int]
    builtin_names: ClassVar[tuple[str, ...]]
    default_lists: ClassVar[dict[str, str]]
    labels_file: ClassVar[str]
    default_id_file: ClassVar[str]
    known_files: ClassVar[tuple[KnownList, ...]] = ()
    list_source: ClassVar[str]
    image_layout: ClassVar[str]

    def __init__(
        self,
        root: str,
        list_dir: Optional[str] = None,
        image_size: int = 448,
        source: Source = "lists",
        train_list: Optional[str] = None,
        test_list: Optional[str] = None,
        id_file: Optional[str] = None,
        train_augment: Augment = "cprfl",
        normalize: bool = True,
        batch_size: int = 16,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            root: image root (list paths are relative to it); also where raw annotations live.
            list_dir: folder of the split lists, the labels file and the id file; defaults to root.
            image_size: side of the square resize for training and evaluation (448 in CPRFL/ASL).
            source: ``lists`` (published split lists) or ``annotations`` (raw COCO json / VOC XML).
            train_list: train list file name or path, overriding the default.
            test_list: test list file name or path, overriding the default.
            id_file: training image id file for ``source="annotations"``, overriding the default.
            train_augment: ``cprfl`` (Cutout + RandAugment), ``dbloss`` (DB-Loss's photometric
                distortion + random crop of at least 0.8 of each side + flip), ``flip`` or ``none``.
            normalize: apply ImageNet mean/std on the device; False feeds x / 255 as CPRFL does.
            batch_size: 16 as in CPRFL.
        """
        super().__init__(batch_size=batch_size, **kwargs)
        if source not in ("lists", "annotations"):
            raise ValueError(f"unknown source {source!r}; expected 'lists' or 'annotations'")
        if train_augment not in ("cprfl", "dbloss", "flip", "none"):
            raise ValueError(f"unknown train_augment {train_augment!r}; expected 'cprfl', 'dbloss', 'flip' or 'none'")
        self.root = root
        self.list_dir = list_dir if list_dir is not None else root
        self.image_size = image_size
        self.source = source
        self.list_names = {
            "train": train_list or self.default_lists["train"],
            "test": test_list or self.default_lists["test"],
        }
        self.id_file = id_file or self.default_id_file
        self.train_augment = train_augment
        self.normalize = normalize
        if not normalize:
            self.mean, self.std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        self._splits: dict[str, MultiLabelSplit] = {}
        self._records: dict[str, dict[str, Any]] = {}

    # ---- files ---------------------------------------------------------------------------------
    def _in_list_dir(self, name: str) -> str:
        return os.path.join(self.list_dir, name)

    def read_verified(self, path: str, missing: str) -> str:
        """A text file, recorded for the protocol; warns (and accepts it) when no published checksum matches."""
        if not os.path.isfile(path):
            raise DataError(missing)
        with open(path, "rb") as f:
            data = f.read()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text (byte {e.start})") from None
        digests = file_digests(data)
        known = next((k for k in self.known_files if k.matches(digests)), None)
        if known is None:
            warnings.warn(
                f"{path} matches no published {self.title} file checksum; using it as given (md5 {digests['md5']})",
                stacklevel=3,
            )
        self._records[os.path.basename(path)] = {
            "sha256": digests["sha256"], "md5": digests["md5"], "verified": known is not None,
            "known_as": known.name if known else None,
        }
        return text

    def _read_list(self, split: Literal["train", "test"]) -> MultiLabelSplit:
        path = self._in_list_dir(self.list_names[split])
        missing = (
            f"{self.title} {split} list missing: expected {path} ({LINE_FORMAT}, paths relative to "
            f"root={self.root}; from {self.list_source}); or pass source='annotations' to build it from "
            f"{self.annotation_hint}"
        )
        text = self.read_verified(path, missing)
        paths, targets = parse_multilabel_list(text, path, self.num_classes, self.list_source)
        return MultiLabelSplit(path, paths, targets)

    def _read_ids(self, integer: bool) -> tuple[list[str], str]:
        path = self._in_list_dir(self.id_file)
        missing = (
            f"{self.title} training id file missing: expected {path} (one image id per line, "
            f"DB-Loss appendix; from {self.list_source})"
        )
        return parse_ids(self.read_verified(path, missing), path, integer), path

    @property
    def annotation_hint(self) -> str:
        raise NotImplementedError

    def _from_annotations(self, split: Literal["train", "test"]) -> MultiLabelSplit:
        raise NotImplementedError

    def read_split(self, split: Split) -> MultiLabelSplit:
        """The split's paths and labels, built once; ``val`` is the test split."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"unknown split {split!r}; expected 'train', 'val' or 'test'")
        key: Literal["train", "test"] = "train" if split == "train" else "test"
        if key not in self._splits:
            self._splits[key] = self._read_list(key) if self.source == "lists" else self._from_annotations(key)
        return self._splits[key]

    # ---- contract ------------------------------------------------------------------------------
    def load_class_names(self) -> list[str]:
        """From the labels file in ``list_dir`` when present, else the standard names in label order."""
        path = self._in_list_dir(self.labels_file)
        if not os.path.isfile(path):
            return list(self.builtin_names)
        return parse_label_names(self.read_verified(path, ""), path, self.num_classes_expected)

    def load_train_targets(self) -> np.ndarray:
        return self.read_split("train").targets.astype(np.int64)

    @cached_property
    def train_transform(self) -> v2.Compose:
        s = self.image_size
        if self.train_augment == "dbloss":
            # mmdet-style PhotoMetricDistortion (brightness +-32/255, contrast and saturation 0.5-1.5,
            # hue +-18 of OpenCV's 180) and a crop of 0.8-1 of each side, resized without keeping
            # the ratio, then a flip: DB-Loss's configs/{coco,voc}/LT_resnet50_pfc_DB.py. ColorJitter
            # scales brightness where mmdet adds a delta: an approximation.
            return v2.Compose([
                v2.PILToTensor(),
                v2.ColorJitter(brightness=32 / 255, contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue=0.1),
                v2.RandomResizedCrop((s, s), scale=(0.64, 1.0), ratio=(0.8, 1.25), antialias=True),
                v2.RandomHorizontalFlip(),
            ])
        steps: list[Any] = [v2.Resize((s, s), antialias=True), v2.PILToTensor()]
        if self.train_augment == "cprfl":
            steps += [Cutout(0.5), v2.RandAugment()]
        elif self.train_augment == "flip":
            steps += [v2.RandomHorizontalFlip()]
        return v2.Compose(steps)

    def describe_train_transform(self) -> str:
        if self.train_augment == "dbloss":
            return f"ColorJitter(32/255, 0.5-1.5, 0.5-1.5, 0.1) + RandomResizedCrop({self.image_size}, scale 0.64-1, ratio 0.8-1.25) + RandomHorizontalFlip()"
        extra = {"cprfl": " + Cutout(0.5) + RandAugment()", "flip": " + RandomHorizontalFlip()", "none": ""}
        return f"Resize(({self.image_size}, {self.image_size})){extra[self.train_augment]}"

    @cached_property
    def eval_transform(self) -> v2.Compose:
        s = self.image_size
        return v2.Compose([v2.Resize((s, s), antialias=True), v2.PILToTensor()])

    def make_dataset(self, split: Split) -> Dataset:
        data = self.read_split(split)
        transform = self.train_transform if split == "train" else self.eval_transform
        return MultiLabelImageDataset(self.root, data.paths, data.targets, transform, data.origin, self.image_layout)

    def protocol_extras(self) -> dict[str, Any]:
        self.class_names  # noqa: B018 - reads and records the labels file
        train, test = self.read_split("train"), self.read_split("test")
        files = {**self._records, **train.files, **test.files}
        return {
            "root": self.root,
            "list_dir": self.list_dir,
            "source": self.source,
            "files": files,
            "image_size": self.image_size,
            "num_test": len(test.paths),
            "train_labels_sha256": labels_sha256(train.paths, train.targets),
            "test_labels_sha256": labels_sha256(test.paths, test.targets),
            "val_split": "test (no official validation split; CPRFL and DB-Loss select on test)",
            "test_split": os.path.basename(test.origin),
            "train_transform": self.describe_train_transform(),
            "eval_transform": f"Resize(({self.image_size}, {self.image_size}))",
            "normalize": "ImageNet mean/std" if self.normalize else "none (x / 255)",
        }


class COCOLT(MultiLabelLT):
    """COCO-LT: 80 classes, 1,909 COCO-2017 train images, tested on all 5,000 val2017 images.

    ``root`` holds ``train2017/``, ``val2017/`` (and ``annotations/instances_{train,val}2017.json``
    for ``source="annotations"``, with the training ids from ``img_id.pkl``, plain text). That route
    parses the whole ~450 MB ``instances_train2017.json`` once per module: tens of seconds and a few
    GB of memory, so prefer the lists when you have them.
    """

    title = "COCO-LT"
    num_classes_expected = 80
    builtin_names = COCO_NAMES
    default_lists = {"train": "coco_lt_train.txt", "test": "coco_lt_test.txt"}
    labels_file = "coco_labels.txt"
    default_id_file = "img_id.pkl"
    list_source = (
        "LMPT/CPRFL data/coco/ (github.com/jiexuanyan/CPRFL), ids from DB-Loss appendix/coco/longtail2017/; "
        "images from COCO 2017"
    )
    image_layout = "a COCO 2017 root with train2017/ and val2017/"
    known_files = (
        KnownList("coco_lt_train.txt", md5="7872e50c08dac0a812095ad7fb1e1978",
                  sha256="8e0c354ae2214d7ced46f4a5ae24236149296be4dcd2df74f00eba2abe6be0ce"),
        KnownList("coco_lt_test.txt", md5="178973e70d9a6630833e3ca92648d00f",
                  sha256="4dda722463b0ed3aada172ce1c75f46f1391e4d2bee7643760549f916a8022e5"),
        KnownList("coco_labels.txt", md5="98f2f52c69099f15378d8187994090d6",
                  sha256="a16d52dc65d8bc2b7abe5875199d802e951b7af142b327f8c85b496116a87f45"),
        KnownList("img_id.pkl", md5="283706e3e3f6ce2ca177cfea77dd0970",
                  sha256="f31e853d2c7b69512c62b65ff1db067a49b3ab86a62f685c7da86b7c3dd04768"),
    )

    def __init__(self, root: str, captions: Optional[str] = None, **kwargs: Any) -> None:
        """
        Args:
            root: the COCO 2017 root (see ``MultiLabelLT``).
            captions: COCO's ``captions_train2017.json`` (annotations_trainval2017.zip from cocodataset.org):
                each training image's captions become its per-item texts (``item_texts``), matched by file
                name through the json's ``images``; null: no per-item text.
        """
        super().__init__(root=root, **kwargs)
        self.captions = captions

    @cached_property
    def _train_captions(self) -> tuple[list[list[str]], dict[str, Any]]:
        path = str(self.captions)
        if not os.path.isfile(path):
            raise DataError(f"COCO captions missing: expected {path} (data.init_args.captions; captions_train2017.json "
                            "from annotations_trainval2017.zip at cocodataset.org)")  # fmt: skip
        with open(path, "rb") as f:
            raw = f.read()
        try:
            data = json.loads(raw)
            id_of = {str(im["file_name"]): int(im["id"]) for im in data["images"]}
            texts: dict[int, list[str]] = {}
            for ann in data["annotations"]:
                texts.setdefault(int(ann["image_id"]), []).append(str(ann["caption"]).strip())
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"COCO captions unreadable: {path} ({type(e).__name__}: {e}); expected a COCO captions json "
                            "with 'images' (id, file_name) and 'annotations' (image_id, caption)") from None  # fmt: skip
        split = self.read_split("train")
        out = []
        for k, rel in enumerate(split.paths):
            name = os.path.basename(rel)
            if name not in id_of:
                raise DataError(f"{path}: no image {name} (item {k + 1} of {split.origin}); expected the captions json of COCO 2017 train")
            image_id = id_of[name]
            if not texts.get(image_id):
                raise DataError(f"{path}: image {image_id} ({name}, item {k + 1} of {split.origin}) has no caption")
            out.append(texts[image_id])
        facts = {
            "source": "COCO 2017 captions, matched by file name",
            "file": path,
            "sha256": hashlib.sha256(raw).hexdigest(),
            "texts": sum(len(t) for t in out),
            "items": len(out),
        }
        return out, facts

    def item_texts(self, split: Split) -> Optional[list[list[str]]]:
        """Each training image's COCO captions (``captions``); none for the test split (val2017 captions are
        not read: per-item text is for training only)."""
        if self.captions is None or split != "train":
            return None
        return self._train_captions[0]

    def protocol_extras(self) -> dict[str, Any]:
        extras = super().protocol_extras()
        if self.captions is not None:  # the file's facts once training read it; a test run reads no caption
            extras["item_texts"] = self._train_captions[1] if "_train_captions" in self.__dict__ else {"captions": self.captions, "read": False}
        return extras

    @property
    def annotation_hint(self) -> str:
        return f"{os.path.join(self.root, 'annotations')}/instances_{{train,val}}2017.json and {self.id_file}"

    def _from_annotations(self, split: Literal["train", "test"]) -> MultiLabelSplit:
        ann_dir = os.path.join(self.root, "annotations")
        if split == "train":
            ids, id_path = self._read_ids(integer=True)
            json_path = os.path.join(ann_dir, "instances_train2017.json")
            paths, targets = coco_targets(json_path, "train2017", [int(i) for i in ids], id_path)
        else:
            json_path = os.path.join(ann_dir, "instances_val2017.json")
            paths, targets = coco_targets(json_path, "val2017")
        files = {f"annotations/{os.path.basename(json_path)}": {"bytes": os.path.getsize(json_path)}}
        return MultiLabelSplit(json_path, paths, targets, files)


class VOCLT(MultiLabelLT):
    """VOC-LT: 20 classes, 1,142 VOC2012 trainval images, tested on the 4,952 VOC2007 test images.

    ``root`` contains ``VOCdevkit/VOC2012`` and ``VOCdevkit/VOC2007`` (JPEGImages/, and for
    ``source="annotations"`` Annotations/ and VOC2007 ImageSets/Main/test.txt; training ids from
    ``img_id.txt``).
    """

    title = "VOC-LT"
    num_classes_expected = 20
    builtin_names = VOC_NAMES
    default_lists = {"train": "voc_lt_train.txt", "test": "voc_lt_test.txt"}
    labels_file = "voc_labels.txt"
    default_id_file = "img_id.txt"
    list_source = (
        "LMPT/CPRFL data/voc/ (github.com/jiexuanyan/CPRFL), ids from DB-Loss appendix/VOCdevkit/longtail2012/; "
        "images from PASCAL VOC 2012 trainval and VOC 2007 test"
    )
    image_layout = "a VOC root containing VOCdevkit/VOC2012/ and VOCdevkit/VOC2007/"
    known_files = (
        KnownList("voc_lt_train.txt", md5="f430a45dced2950237f186c1794d9485",
                  sha256="2111a5e58ae8b67a112a2b2c8aa98fe8fa926ac3e1d73e2e4e0e4844c90cc047"),
        KnownList("voc_lt_test.txt", md5="2de09a037ce41c4d5ef152325b3b79f0",
                  sha256="43b2929a86e9fe685cdf3b6b72fb90b6838ff9f9f427807e8b9502111e73750a"),
        KnownList("voc_labels.txt", md5="98fa3ed2bb1cae7502aa40198d5306a0",
                  sha256="59e82ce7a1fa096b8a80c22cc72e6c86e54c598b2e1cfe08a211f1c82a0dcb2c"),
        KnownList("img_id.txt", md5="b9bc309c68500f8806f49ebcd027131d",
                  sha256="6e49185d5421236718f7393e952f5790e5c0cfeb1694892b1b971f59725d5ebc"),
    )

    @property
    def annotation_hint(self) -> str:
        return f"VOC XML under {os.path.join(self.root, 'VOCdevkit')} and {self.id_file}"

    def _from_annotations(self, split: Literal["train", "test"]) -> MultiLabelSplit:
        devkit = os.path.join(self.root, "VOCdevkit")
        if split == "train":
            ids, origin = self._read_ids(integer=False)
            year = "2012"
        else:
            origin = os.path.join(devkit, "VOC2007", "ImageSets", "Main", "test.txt")
            if not os.path.isfile(origin):
                raise DataError(f"VOC2007 test id list missing: expected {origin} (VOCtest_06-Nov-2007.tar)")
            with open(origin, encoding="utf-8-sig") as f:
                ids = parse_ids(f.read(), origin)
            year = "2007"
        paths, targets = voc_targets(devkit, year, ids, self.class_names)
        return MultiLabelSplit(origin, paths, targets)
