"""The domain-generalisation targets of the CLIP prompt-learning papers: ImageNet-V2, -Sketch, -A and -R.

Test-only sets (no training split), scored with prompts trained on 16-shot ImageNet
(``configs/cdc_imagenet_xd.yaml``, then ``ltbench test ... --data configs/data/tv_imagenet_a.yaml``). The
images are read from each archive's own folder of class folders (``image_dir``, default ``root/<folder>``):

* ImageNet-V2 matched-frequency: ``imagenetv2-matched-frequency-format-val/<k>/<hash>.jpeg``, folder ``k``
  = the k-th ImageNet class (an integer, so "10" comes after "9", not after "1");
* ImageNet-Sketch: ``sketch/<wnid>/<file>.JPEG``, all 1000 classes;
* ImageNet-A and ImageNet-R: ``imagenet-a/<wnid>/...``, ``imagenet-r/<wnid>/...``, 200 classes each: the
  label space is the classes that have a folder, so the model scores only those names (as CoOp's
  ``imagenet_a.py`` / ``imagenet_r.py``).

ImageNet's class order is its sorted wnids (the source run's ``TorchvisionSet`` order; V2's folder k is
class k). Class names come from CoOp's ``classnames.txt`` (``<wnid> <name>`` lines, in any order,
``classnames``), or else from torchvision's ImageNet meta file (``meta.bin`` under ``imagenet_root``; the
first of its names per wnid, as ``TorchvisionSet(name="ImageNet")`` names them). A set with a folder per
ImageNet class (V2, Sketch) must have all of them. Give the file the source run named its classes with
(``ltbench.data.imagenet_classnames``): the names are in every prompt. Folder listing is torchvision's
``make_dataset``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
from torch.utils.data import Dataset

from ltbench.data.base import LTDataModule, Split
from ltbench.data.imagenet_classnames import meta_classnames, read_classnames
from ltbench.data.torchvision_sets import CLIP_MEAN, CLIP_STD, SourceItems, clip_eval_transform
from ltbench.errors import DataError, LTBenchError

Variant = Literal["ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR"]


@dataclass(frozen=True)
class Layout:
    """An archive's folder of class folders; whether they are named by ImageNet class index (V2) rather
    than wnid; whether they cover a subset of ImageNet's classes (A, R), which is then the label space."""

    folder: str
    by_index: bool = False
    subset: bool = False


LAYOUTS: dict[str, Layout] = {
    "ImageNetV2": Layout("imagenetv2-matched-frequency-format-val", by_index=True),
    "ImageNetSketch": Layout("sketch"),
    "ImageNetA": Layout("imagenet-a", subset=True),
    "ImageNetR": Layout("imagenet-r", subset=True),
}


class ImageNetVariant(LTDataModule):
    """ImageNet-V2, -Sketch, -A or -R (``name``), test-only, for the domain-generalisation protocol."""

    mean = CLIP_MEAN
    std = CLIP_STD

    def __init__(
        self,
        name: Variant = "ImageNetV2",
        root: str = "data",
        image_dir: Optional[str] = None,
        classnames: Optional[str] = None,
        imagenet_root: str = "data/imagenet",
        image_size: int = 224,
        batch_size: int = 64,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            name: the variant.
            root: where the archive's folder is (``imagenet-a/``, ``sketch/``...).
            image_dir: the folder of class folders itself (default: ``root/<the archive's folder>``).
            classnames: CoOp's ``classnames.txt`` (the source run's, if it gave one); null: torchvision's ImageNet
                meta under ``imagenet_root``.
            imagenet_root: torchvision's ImageNet root (its ``meta.bin``), read when ``classnames`` is null.
            image_size: input size (224 for ViT-B/16).
        """
        if name not in LAYOUTS:
            raise LTBenchError(f"ImageNetVariant: unknown variant {name!r}; expected one of {', '.join(LAYOUTS)}")
        super().__init__(batch_size=batch_size, **kwargs)
        self.name, self.root, self.classnames, self.imagenet_root = name, root, classnames, imagenet_root
        self._image_dir = image_dir
        self.image_size = image_size

    @property
    def image_dir(self) -> Path:
        return Path(self._image_dir) if self._image_dir else Path(self.root) / LAYOUTS[self.name].folder

    @cached_property
    def _imagenet(self) -> tuple[dict[str, str], str]:
        """ImageNet's class names by wnid in class order, and where they came from."""
        if self.classnames:
            return read_classnames(self.classnames), str(self.classnames)
        return meta_classnames(self.imagenet_root), str(Path(self.imagenet_root) / "meta.bin")

    @cached_property
    def _index(self) -> dict[str, Any]:
        """The label space (folders and class names, in ImageNet's order), the image paths and their labels."""
        from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

        layout, where = LAYOUTS[self.name], self.image_dir
        names, source = self._imagenet
        try:
            found = {e.name for e in os.scandir(where) if e.is_dir() and not e.name.startswith(".")}
        except (FileNotFoundError, NotADirectoryError):
            raise DataError(
                f"{self.name}: image folder {where} does not exist; expected <class folder>/<image> under it "
                "(give data.init_args.root or image_dir)"
            ) from None
        wnids = sorted(names)
        # folder name -> wnid, in ImageNet's class order (sorted wnids, whatever order the names file lists them in)
        folder_wnid = {str(k): w for k, w in enumerate(wnids)} if layout.by_index else {w: w for w in wnids}
        if unknown := sorted(found - folder_wnid.keys()):
            expected = f"class indices 0..{len(wnids) - 1}" if layout.by_index else f"wnids listed in {source}"
            raise DataError(f"{self.name}: {len(unknown)} folders of {where} are not ImageNet classes (first: {unknown[0]}); expected {expected}")
        folders = [f for f in folder_wnid if f in found]
        if not layout.subset and len(folders) < len(wnids):
            missing = next(f for f in folder_wnid if f not in found)
            raise DataError(
                f"{self.name}: {where} has no folder for {len(wnids) - len(folders)} of the {len(wnids)} ImageNet classes "
                f"(first: {missing}, {names[folder_wnid[missing]]!r}); expected one folder per class"
            )
        if not folders:
            raise DataError(f"{self.name}: {where} holds no class folder; expected <wnid>/<image> folders")
        try:
            samples = make_dataset(str(where), {f: k for k, f in enumerate(folders)}, extensions=IMG_EXTENSIONS)
        except FileNotFoundError as e:
            raise DataError(f"{self.name}: under {where}: {e}") from None
        return {
            "classes": [names[folder_wnid[f]] for f in folders],
            "items": [(None, path) for path, _ in samples],
            "targets": np.asarray([label for _, label in samples], dtype=np.int64),
            "imagenet_classes": len(wnids),
            "source": source,
        }

    # ---- the contract -------------------------------------------------------------------------------
    def load_class_names(self) -> list[str]:
        return list(self._index["classes"])

    def load_train_targets(self) -> np.ndarray:
        return np.zeros(0, dtype=np.int64)

    @cached_property
    def train_class_counts(self) -> list[int]:
        """A test-only set: no class has training images, by design (no warning about it)."""
        return [0] * self.num_classes

    @property
    def classes_without_training_images(self) -> list[str]:
        """None is missing from a training split that does not exist."""
        return []

    def make_dataset(self, split: Split) -> Dataset:
        if split == "train":
            raise DataError(
                f"{self.name} is a test-only set (no training split): train on ImageNet (configs/cdc_imagenet_xd.yaml), "
                f"then `ltbench test --config <that config> --data <this data config> --ckpt_path <its checkpoint>`"
            )
        index = self._index
        return SourceItems(index["items"], index["targets"], clip_eval_transform(self.image_size), f"{self.name} {split}",
                           expected=f"the images found under {self.image_dir}")  # fmt: skip

    def protocol_extras(self) -> dict[str, Any]:
        index = self._index
        space = f"{self.num_classes} of the {index['imagenet_classes']} ImageNet classes" if LAYOUTS[self.name].subset else "ImageNet's classes"
        return {
            "dataset": self.name,
            "split": f"test-only: all {len(index['items'])} images under {self.image_dir.name}/ ({space}); val = test",
            "class_names_from": index["source"],
        }


__all__ = ["ImageNetVariant", "LAYOUTS"]
