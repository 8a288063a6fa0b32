"""Time to read the split files and build the small datasets, outside the test suite.

Wall-clock limits flake on a loaded machine, so the tests check what is read and this script says
how long it takes: median seconds over ``--repeat`` fresh reads of

- ``imagenet_lt``: the real ImageNet-LT val and test lists (``--shared``, 70,000 lines);
- ``list_120k``: a generated 120,000-line ImageNet-style train list (``--lines``), counted per class;
- ``coco_lt`` / ``voc_lt``: the real COCO-LT and VOC-LT lists, class counts, test split and protocol;
- ``digits_ml``: Digits-ML-LT composed from scikit-learn's digits.

Cases whose files are absent are listed as skipped.

    python benchmarks/loading.py                     # all cases, 3 repeats
    python benchmarks/loading.py --only digits_ml,list_120k --repeat 5 --json loading.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def _imagenet_lt(shared: Path, lines: int, tmp: Path) -> Optional[Callable[[], Any]]:
    from ltbench.data.lists import ImageNetLT

    lists = shared / "data" / "splits" / "imagenet_lt"
    if not (lists / "ImageNet_LT_val.txt").is_file():
        return None

    def read() -> Any:
        dm = ImageNetLT(root=str(tmp), list_dir=str(lists))
        return dm.read_list("val"), dm.read_list("test")

    return read


def _list_120k(shared: Path, lines: int, tmp: Path) -> Callable[[], Any]:
    from ltbench.data.lists import ImageListLT

    labels = np.random.default_rng(0).integers(0, 1000, size=lines)
    (tmp / "train.txt").write_text("".join(f"train/n{y:08d}/n{y:08d}_{i}.JPEG {y}\n" for i, y in enumerate(labels)))

    def read() -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*matches no published")
            return ImageListLT(root=str(tmp)).train_class_counts

    return read


def _multilabel(name: str) -> Callable[[Path, int, Path], Optional[Callable[[], Any]]]:
    def case(shared: Path, lines: int, tmp: Path) -> Optional[Callable[[], Any]]:
        from ltbench.data import COCOLT, VOCLT

        split_dir = shared / "data" / "splits" / name
        if not split_dir.is_dir():
            return None
        cls = COCOLT if name == "coco_lt" else VOCLT

        def read() -> Any:
            dm = cls(root=str(tmp), list_dir=str(split_dir))
            return dm.train_class_counts, dm.read_split("test"), dm.protocol()

        return read

    return case


def _digits_ml(shared: Path, lines: int, tmp: Path) -> Callable[[], Any]:
    from ltbench.data import DigitsMLLT

    seeds = iter(range(1, 1_000_000))
    return lambda: DigitsMLLT(subset_seed=next(seeds)).train_targets  # a new seed: nothing cached


CASES = {
    "imagenet_lt": _imagenet_lt,
    "list_120k": _list_120k,
    "coco_lt": _multilabel("coco_lt"),
    "voc_lt": _multilabel("voc_lt"),
    "digits_ml": _digits_ml,
}


def main(argv: Optional[list[str]] = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description="Median time to read ltbench's split files and small datasets.")
    p.add_argument("--only", default=",".join(CASES), help=f"comma-separated cases from {', '.join(CASES)}")
    p.add_argument("--repeat", type=int, default=3, help="fresh reads per case; the median is reported")
    p.add_argument("--lines", type=int, default=120_000, help="lines of the generated list (list_120k)")
    p.add_argument("--shared", type=Path, default=SHARED, help="the shared folder holding data/splits/")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the rows as JSON")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CASES))
    if unknown or args.repeat < 1:
        p.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}" if unknown else "--repeat must be >= 1")
    rows = []
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            read = CASES[name](args.shared, args.lines, Path(tmp))
            if read is None:
                rows.append({"case": name, "seconds": None, "repeat": 0, "note": f"skipped: files absent under {args.shared}"})
                continue
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                read()
                times.append(time.perf_counter() - t0)
        rows.append({"case": name, "seconds": round(statistics.median(times), 4), "repeat": args.repeat, "note": ""})
    print("| case | median s | repeats | note |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['seconds'] if r['seconds'] is not None else '—'} | {r['repeat']} | {r['note']} |")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    from ltbench.cli import exit_on_user_error

    exit_on_user_error(main, "loading")
