"""Synthetic data in the real on-disk formats, for tests and for benchmarks of the full pipeline.

Random pixels with the real layout and label counts: they exercise every line of the loaders and
data pipeline, never a result. Their checksums are returned, since they are not the published ones.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
from pathlib import Path
from typing import Optional

import numpy as np

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)


def _split(rng: np.random.Generator, num_classes: int, per_class: int) -> tuple[np.ndarray, list[int]]:
    labels = rng.permutation(np.repeat(np.arange(num_classes), per_class))
    data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
    return data, labels.tolist()


def _md5s(root: Path, folder: str) -> dict[str, str]:
    return {f"{folder}/{p.name}": hashlib.md5(p.read_bytes()).hexdigest() for p in sorted((root / folder).iterdir())}


def write_fake_cifar(
    root: str | Path, seed: int = 0, datasets: tuple[str, ...] = ("cifar10", "cifar100"), cifar100_per_class: int = 500
) -> dict[str, str]:
    """torchvision's CIFAR-10 and CIFAR-100 python layouts under ``root``; returns the files' MD5s
    keyed as ``ltbench.data.cifar.MD5S`` keys them.

    ``datasets`` picks which to write; ``cifar100_per_class`` shrinks CIFAR-100's training set
    (500 per class is the real size; the LDAM subset scales with it) for quick tests.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    md5s: dict[str, str] = {}
    if "cifar10" in datasets:
        c10 = root / "cifar-10-batches-py"
        c10.mkdir(parents=True, exist_ok=True)
        data, labels = _split(rng, 10, 5000)
        for b in range(5):
            sl = slice(b * 10000, (b + 1) * 10000)
            _dump(c10 / f"data_batch_{b + 1}", {"batch_label": f"training batch {b + 1} of 5", "labels": labels[sl],
                                                "data": data[sl], "filenames": [f"{i}.png" for i in range(10000)]})
        data, labels = _split(rng, 10, 1000)
        _dump(c10 / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": labels, "data": data})
        _dump(c10 / "batches.meta", {"label_names": CIFAR10_NAMES, "num_cases_per_batch": 10000})
        md5s.update(_md5s(root, "cifar-10-batches-py"))
    if "cifar100" in datasets:
        c100 = root / "cifar-100-python"
        c100.mkdir(parents=True, exist_ok=True)
        for name, per_class in (("train", cifar100_per_class), ("test", 100)):
            data, labels = _split(rng, 100, per_class)
            _dump(c100 / name, {"fine_labels": labels, "coarse_labels": [x // 5 for x in labels], "data": data})
        _dump(c100 / "meta", {"fine_label_names": [f"fine{i}" for i in range(100)],
                              "coarse_label_names": [f"coarse{i}" for i in range(20)]})
        md5s.update(_md5s(root, "cifar-100-python"))
    return md5s


def _write_jpeg(path: Path, rng: np.random.Generator, size: int = 24) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)).save(path, format="JPEG")


def write_fake_dtd(root: str | Path, classes: list[str], per_split: int = 2, seed: int = 0) -> Path:
    """torchvision's DTD layout under ``root``: ``dtd/dtd/images/<class>/<class>_<n>.jpg`` and
    ``dtd/dtd/labels/{train,val,test}1.txt`` (``<class>/<file>`` lines); returns the images folder."""
    rng = np.random.default_rng(seed)
    base = Path(root) / "dtd" / "dtd"
    (base / "labels").mkdir(parents=True, exist_ok=True)
    n = 0
    for split in ("train", "val", "test"):
        lines = []
        for c in classes:
            for _ in range(per_split):
                name = f"{c}_{n:04d}.jpg"
                _write_jpeg(base / "images" / c / name, rng)
                lines.append(f"{c}/{name}")
                n += 1
        (base / "labels" / f"{split}1.txt").write_text("\n".join(lines) + "\n")
    return base / "images"


def write_fake_eurosat(root: str | Path, classes: list[str], per_class: int = 10, seed: int = 0) -> Path:
    """torchvision's EuroSAT layout under ``root``: ``eurosat/2750/<Class>/<Class>_<n>.jpg``; returns that folder."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "eurosat" / "2750"
    for c in classes:
        for i in range(1, per_class + 1):
            _write_jpeg(folder / c / f"{c}_{i}.jpg", rng)
    return folder


def write_coop_split(path: str | Path, image_dir: str | Path, names: list[str], per_split: int = 2) -> Path:
    """CoOp's ``split_zhou_*.json`` for images already under ``image_dir/<class>/``: the first files of each
    class, ``per_split`` for each of train, val, test, labels in ``names`` order, class names as the folders
    (CoOp's files keep underscores: ``Apply_Eye_Makeup``, ``american_bulldog``)."""
    image_dir = Path(image_dir)
    out: dict[str, list] = {"train": [], "val": [], "test": []}
    for label, name in enumerate(names):
        files = sorted((image_dir / name).iterdir())
        for k, split in enumerate(out):
            for f in files[k * per_split : (k + 1) * per_split]:
                out[split].append([f"{name}/{f.name}", label, name])
    Path(path).write_text(json.dumps(out))
    return Path(path)


def write_fake_ucf101(root: str | Path, actions: list[str], groups: int = 3, clips: int = 2, seed: int = 0) -> Path:
    """CoOp's UCF101 frames under ``root``: ``ucf101/UCF-101-midframes/<Action_Name>/v_<ActionName>_g<gg>_c<cc>.jpg``
    (``groups`` x ``clips`` videos per action, one middle frame each; folders split at capitals as CoOp
    renames them); returns the frames folder."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "ucf101" / "UCF-101-midframes"
    for action in actions:
        renamed = "_".join(re.findall("[A-Z][^A-Z]*", action))
        for g in range(1, groups + 1):
            for c in range(1, clips + 1):
                _write_jpeg(folder / renamed / f"v_{action}_g{g:02d}_c{c:02d}.jpg", rng)
    return folder


def write_fake_image_folders(folder: str | Path, class_folders: list[str], per_class: int = 2, ext: str = "jpg", seed: int = 0) -> Path:
    """``folder/<class folder>/<n>.<ext>``, the layout of ImageNet-V2 (folders ``0``..``999``), -Sketch, -A
    and -R (wnid folders); returns ``folder``."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    for k, name in enumerate(class_folders):
        for i in range(per_class):
            _write_jpeg(folder / name / f"{k:04d}_{i}.{ext}", rng)
    return folder


def write_fake_imagenet(root: str | Path, wnids: list[str], names: list[str], per_class: int = 2, seed: int = 0) -> Path:
    """torchvision's ImageNet layout under ``root`` once it has parsed the archives: ``meta.bin`` (wnid ->
    names, val wnids), ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG``; returns ``root``."""
    import torch

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    torch.save(({w: (n,) for w, n in zip(wnids, names)}, [w for w in wnids for _ in range(per_class)]), root / "meta.bin")
    for split in ("train", "val"):
        write_fake_image_folders(root / split, wnids, per_class=per_class, ext="JPEG", seed=seed + (split == "val"))
    return root


def write_imagenet_classnames(path: str | Path, wnids: list[str], names: list[str]) -> Path:
    """CoOp's ImageNet ``classnames.txt``: ``<wnid> <class name>`` lines in ImageNet's class order."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("".join(f"{w} {n}\n" for w, n in zip(wnids, names)))
    return Path(path)


#: typical ImageNet image shapes (H, W); the mean file is about 400 x 350
IMAGENET_SHAPES = ((375, 500), (500, 375), (333, 500), (500, 333), (500, 500), (281, 500))


def write_fake_image_list(
    root: str | Path,
    class_counts: list[int],
    prefix: str = "ImageNet_LT",
    shapes: tuple[tuple[int, int], ...] = IMAGENET_SHAPES,
    eval_per_class: int = 1,
    quality: int = 90,
    seed: int = 0,
    distinct: Optional[int] = None,
) -> Path:
    """A JPEG tree in the ImageNet-LT list layout under ``root``: ``train/n<class>/<i>.JPEG`` and
    ``val/...`` images, ``<prefix>_{train,val,test}.txt`` lists; returns the list folder (``root``).

    Images are smooth random fields plus noise (natural-image-like JPEG sizes and decode cost), of
    the given shapes in turn; ``class_counts`` gives the training images per class. With ``distinct``
    only that many images are encoded and later files repeat their bytes (a large tree written fast;
    decoding costs the same).
    """
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    k = 0

    encoded: list[bytes] = []

    def image(path: Path) -> None:
        nonlocal k
        path.parent.mkdir(parents=True, exist_ok=True)
        if distinct is not None and k >= distinct:
            path.write_bytes(encoded[k % distinct])
            k += 1
            return
        h, w = shapes[k % len(shapes)]
        k += 1
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR), dtype=np.int16)
        pixels = np.clip(smooth + rng.integers(-12, 13, smooth.shape, dtype=np.int16), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
        encoded.append(buf.getvalue())
        path.write_bytes(encoded[-1])

    rows: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for c, n in enumerate(class_counts):
        wnid = f"n{c:08d}"
        for i in range(n):
            rel = f"train/{wnid}/{wnid}_{i}.JPEG"
            image(root / rel)
            rows["train"].append(f"{rel} {c}")
        for split in ("val", "test"):
            for i in range(eval_per_class):
                rel = f"val/{wnid}/{split}_{i}.JPEG"
                image(root / rel)
                rows[split].append(f"{rel} {c}")
    for split, lines in rows.items():
        (root / f"{prefix}_{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def write_fake_coco_lt(
    root: str | Path,
    train_labels: list[list[int]],
    test_labels: list[list[int]],
    captions: Optional[list[list[str]]] = None,
    seed: int = 0,
) -> Path:
    """A COCO 2017 root in COCO-LT's list layout under ``root``: ``train2017/`` and ``val2017/`` JPEGs named
    ``%012d.jpg`` by image id, ``coco_lt_{train,test}.txt`` lists (0-indexed labels) and, with ``captions``
    (one list per training item), ``annotations/captions_train2017.json`` in COCO's captions format,
    its ``images`` in another order than the list (reversed) so matching by file name is exercised.
    Returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    rows: dict[str, list[str]] = {}
    train_ids = [1000 + 7 * i for i in range(len(train_labels))]
    for split, folder, ids, labels in (("train", "train2017", train_ids, train_labels),
                                       ("test", "val2017", [5000 + i for i in range(len(test_labels))], test_labels)):  # fmt: skip
        rows[split] = []
        for image_id, labs in zip(ids, labels):
            rel = f"{folder}/{image_id:012d}.jpg"
            _write_jpeg(root / rel, rng)
            rows[split].append(" ".join([rel, *map(str, labs)]))
        (root / f"coco_lt_{split}.txt").write_text("\n".join(rows[split]) + "\n")
    if captions is not None:
        images = [{"id": i, "file_name": f"{i:012d}.jpg", "height": 24, "width": 24} for i in train_ids][::-1]
        pairs = [(i, c) for i, texts in zip(train_ids, captions) for c in texts]
        anns = [{"id": k + 1, "image_id": i, "caption": c} for k, (i, c) in enumerate(pairs)]
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / "captions_train2017.json").write_text(json.dumps({"info": {}, "licenses": [], "images": images, "annotations": anns}))
    return root
