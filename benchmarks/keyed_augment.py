"""What keying host-side augmentation costs per training item (``ltbench.data.keyed``).

Each case times fetching training items of a real dataset class on synthetic files, plain (the
worker's own generator) and keyed (``KeyedItems``: the CPU generator's state saved, seeded with the
item's key, restored), interleaved in ``--rounds`` rounds so a loaded machine slows both alike; the
table gives the median µs per item and the keyed overhead. Before a plain fetch the generator is
seeded with the same key outside the clock, so both variants draw the same crops (a crop's size
sets its resize cost). One process, one thread: what a loader worker does per item.

- ``cifar``: CIFAR-LT's ``RandomCrop(32, padding=4)`` + flip on a uint8 tensor, the cheapest transform;
- ``jpeg``: an ImageNet-LT list item with ``decode: pil``: JPEG decode (ImageNet-sized images) +
  ``RandomResizedCrop(224)`` + flip + colour jitter;
- ``seed``: the keying alone (get_state + ``default_generator.manual_seed`` + set_state), against
  ``torch.random.fork_rng(devices=[])`` + ``torch.manual_seed`` (which seeds every device type's
  generators and costs far more).

Other loader costs (collation, inter-process transfer) are the same for both and are left out.

    python benchmarks/keyed_augment.py                 # all cases
    python benchmarks/keyed_augment.py --only cifar --items 2000 --rounds 7 --json keyed.json
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

import torch

Fetch = Callable[[int], Any]


def key(i: int) -> int:
    return 1000003 * i


def _plain_and_keyed(dataset: Any) -> tuple[Fetch, Fetch]:
    from ltbench.data.keyed import KeyedItems

    keyed, n = KeyedItems(dataset), len(dataset)
    return (lambda i: dataset[i % n]), (lambda i: keyed[(i % n, key(i))])


def _cifar(tmp: Path, items: int) -> tuple[Fetch, Fetch]:
    from ltbench.data import cifar
    from ltbench.data.synthetic import write_fake_cifar

    cifar.MD5S = write_fake_cifar(tmp, datasets=("cifar100",), cifar100_per_class=60)
    return _plain_and_keyed(cifar.CIFAR100LT(root=str(tmp), imb_ratio=1).dataset("train"))


def _jpeg(tmp: Path, items: int) -> tuple[Fetch, Fetch]:
    from ltbench.data.lists import ImageListLT
    from ltbench.data.synthetic import write_fake_image_list

    root = write_fake_image_list(tmp, [16] * 4, eval_per_class=0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*matches no published")
        return _plain_and_keyed(ImageListLT(root=str(root), train_list="ImageNet_LT_train.txt").dataset("train"))


def _seed(tmp: Path, items: int) -> tuple[Fetch, Fetch]:
    generator = torch.default_generator

    def direct(i: int) -> None:
        state = generator.get_state()
        generator.manual_seed(key(i))
        generator.set_state(state)

    def fork(i: int) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(key(i))

    return fork, direct


#: case -> (builder, label of the first variant, label of the second, seed the first's draws by the key)
CASES: dict[str, tuple[Callable[[Path, int], tuple[Fetch, Fetch]], str, str, bool]] = {
    "cifar": (_cifar, "plain", "keyed", True),
    "jpeg": (_jpeg, "plain", "keyed", True),
    "seed": (_seed, "fork_rng + torch.manual_seed", "get/seed/set default_generator", False),
}


def _per_item_us(fetch: Fetch, items: int, seed_first: bool = False) -> float:
    total = 0.0
    for i in range(items):
        if seed_first:
            torch.default_generator.manual_seed(key(i))
        t0 = time.perf_counter()
        fetch(i)
        total += time.perf_counter() - t0
    return total / items * 1e6


def main(argv: Optional[list[str]] = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description="Per-item cost of keyed host-side augmentation.")
    p.add_argument("--only", default=",".join(CASES), help=f"comma-separated cases from {', '.join(CASES)}")
    p.add_argument("--items", type=int, default=500, help="items fetched per variant and round")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the rows as JSON")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CASES))
    if unknown or args.items < 1 or args.rounds < 1:
        p.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}" if unknown else "--items and --rounds must be >= 1")
    torch.set_num_threads(1)
    rows = []
    for name in names:
        build, first, second, seed_first = CASES[name]
        with tempfile.TemporaryDirectory() as tmp:
            fetches = build(Path(tmp), args.items)
            for fetch in fetches:
                _per_item_us(fetch, min(args.items, 20))  # warm-up: caches, lazy imports
            times: list[list[float]] = [[], []]
            for _ in range(args.rounds):
                for k, fetch in enumerate(fetches):
                    times[k].append(_per_item_us(fetch, args.items, seed_first and k == 0))
        a, b = (statistics.median(t) for t in times)
        rows.append({"case": name, "first": first, "first_us": round(a, 2), "second": second, "second_us": round(b, 2),
                     "overhead_us": round(b - a, 2), "overhead_pct": round(100 * (b - a) / a, 1),
                     "items": args.items, "rounds": args.rounds})
    print("| case | variant | µs / item | variant | µs / item | difference |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['first']} | {r['first_us']} | {r['second']} | {r['second_us']} | "
              f"{r['overhead_us']:+} µs ({r['overhead_pct']:+}%) |")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    from ltbench.cli import exit_on_user_error

    exit_on_user_error(main, "keyed_augment")
