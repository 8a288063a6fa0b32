"""Random training transforms on the host as a function of (seed, epoch, position in the epoch's draw).

torchvision's transforms draw from torch's global CPU generator; in DataLoader workers that is each
worker's own, seeded from the loader's base seed and the worker id and running on across epochs
(persistent workers). Which worker fetches which item then decides the crop, so the same seed gave
other augmentations with another ``num_workers``, and a resumed run (fresh workers) other ones than
the uninterrupted run. Here the train sampler hands each position of its draw a key
(``LTSampler(keyed=True)``) and ``KeyedItems`` seeds the CPU generator with it around that item's
fetch, then puts the previous state back (so with ``num_workers: 0`` the main process's stream is
untouched). Seeding the generator object directly costs about 2 µs per item; ``fork_rng`` +
``torch.manual_seed`` (which seeds every device type's generators) about 200 µs
(``benchmarks/keyed_augment.py``).

Only torch's CPU generator is keyed: torchvision's v2 transforms and ltbench's own (``Cutout``) draw
from nothing else; a custom transform drawing from Python's ``random`` or NumPy's global state is not.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch.utils.data import Dataset


def draws_randomly(dataset: Dataset) -> bool:
    """Whether fetching an item draws random numbers on the host; datasets that do not (in-memory tensors,
    file bytes decoded on the device) say so with ``draws_randomly = False``."""
    return bool(getattr(dataset, "draws_randomly", True))


class KeyedItems(Dataset):
    """``dataset`` fetched by ``(index, key)`` pairs: the item's host-side draws are seeded by ``key``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, key = item
        generator = torch.default_generator
        state = generator.get_state()
        generator.manual_seed(key)
        try:
            return self.dataset[index]
        finally:
            generator.set_state(state)

    @property
    def collate_fn(self) -> Optional[Any]:
        return getattr(self.dataset, "collate_fn", None)
