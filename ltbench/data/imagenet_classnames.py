"""ImageNet's class names by wnid: CoOp's ``classnames.txt`` or torchvision's ``meta.bin``.

The CLIP prompt-learning papers (CoOp, CoCoOp, MaPLe, CDC) prompt with CoOp's cleaned-up names
(``classnames.txt``, ``<wnid> <class name>`` lines, copied from CLIP's notebook): "tench", "great white
shark"... torchvision's meta file holds WordNet's synonym lists, of which ltbench takes the first.
A checkpoint's source run and its targets (``TorchvisionSet(name="ImageNet")``, ``ImageNetVariant``)
must name the classes from the same file: the names are in every prompt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ltbench.errors import DataError

CLASSNAMES_FORMAT = "'<wnid> <class name>' lines (CoOp's ImageNet classnames.txt)"
#: where CoOp links its ImageNet classnames.txt (not shipped with ltbench)
CLASSNAMES_FROM = "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md#imagenet"


def read_classnames(path: str | Path, wnids: Optional[Sequence[str]] = None) -> dict[str, str]:
    """CoOp's ``classnames.txt``: wnid -> class name, in the file's (ImageNet's) order.

    With ``wnids`` (a dataset's classes) the file must name exactly those: one line per wnid.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (FileNotFoundError, IsADirectoryError):
        raise DataError(f"classnames file {path} does not exist; expected {CLASSNAMES_FORMAT}, linked from {CLASSNAMES_FROM}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"classnames file {path} is not text ({e}); expected {CLASSNAMES_FORMAT}") from None
    known = set(wnids) if wnids is not None else None
    names: dict[str, str] = {}
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        wnid, _, name = line.strip().partition(" ")
        if not name.strip():
            raise DataError(f"{path}:{i}: {line!r}; expected {CLASSNAMES_FORMAT}")
        if wnid in names:
            raise DataError(f"{path}:{i}: wnid {wnid} is listed a second time")
        if known is not None and wnid not in known:
            raise DataError(f"{path}:{i}: wnid {wnid} is not a class of the dataset ({len(known)} classes); expected one line per class")
        names[wnid] = name.strip()
    if not names:
        raise DataError(f"classnames file {path} is empty; expected {CLASSNAMES_FORMAT}")
    if wnids is not None and (missing := [w for w in wnids if w not in names]):
        raise DataError(
            f"{path}: no line for wnid {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + f"; expected one line per class of the dataset ({len(wnids)} classes)"
        )
    return names


def meta_classnames(imagenet_root: str | Path) -> dict[str, str]:
    """torchvision's ImageNet meta file (``meta.bin``): wnid -> its first name, in sorted wnid (ImageNet's) order."""
    from torchvision.datasets.imagenet import META_FILE, load_meta_file

    try:
        wnid_to_classes, _ = load_meta_file(str(imagenet_root))
    except RuntimeError:
        raise DataError(
            f"no torchvision ImageNet meta file {Path(imagenet_root) / META_FILE} (torchvision writes it from the devkit the "
            f"first time it reads ImageNet); give imagenet_root, or classnames: CoOp's classnames.txt ({CLASSNAMES_FORMAT})"
        ) from None
    return {w: wnid_to_classes[w][0] for w in sorted(wnid_to_classes)}


__all__ = ["read_classnames", "meta_classnames", "CLASSNAMES_FORMAT", "CLASSNAMES_FROM"]
