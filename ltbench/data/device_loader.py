"""A data loader for datasets small enough to live on the accelerator (CIFAR-LT, Digits).

The whole split is copied to the device once as its stored dtype (uint8 for CIFAR). Each epoch
the sampler's draw (``LTSampler.epoch_indices``: the same (seed, epoch) draw and DDP stride as the
DataLoader path) crosses to the device as one index tensor; a batch is then a gather on the device
plus the data module's batched augmentation, so no worker, collate or host copy sits in the step.
Items keep the contract ``(image, target, index)``; evaluation pads and strides like Lightning's
``DistributedSampler`` so metrics drop the duplicates by index as before.
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ltbench.data.samplers import LTSampler

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def crop_flip(x: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, flip: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero-pad ``x`` (B, C, H, W) by ``padding``, crop H x W at per-sample offsets (oy, ox) in the padded
    image, mirror where ``flip``: torchvision's RandomCrop(padding) + RandomHorizontalFlip as one gather."""
    b, c, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (padding,) * 4) if padding else x
    ar_h, ar_w = torch.arange(h, device=dev), torch.arange(w, device=dev)
    rows = oy[:, None] + ar_h
    cols = ox[:, None] + torch.where(flip[:, None], (w - 1) - ar_w, ar_w)
    bi = torch.arange(b, device=dev).view(b, 1, 1, 1)
    ci = torch.arange(c, device=dev).view(1, c, 1, 1)
    return padded[bi, ci, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = 4, flip_p: float = 0.5) -> torch.Tensor:
    """Batched RandomCrop(size, padding) + RandomHorizontalFlip(flip_p) with offsets drawn on the device."""
    b = x.shape[0]
    oy = torch.randint(0, 2 * padding + 1, (b,), device=x.device, generator=generator)
    ox = torch.randint(0, 2 * padding + 1, (b,), device=x.device, generator=generator)
    flip = torch.rand(b, device=x.device, generator=generator) < flip_p
    return crop_flip(x, oy, ox, flip, padding)


def epoch_generator(device: torch.device, seed: int, epoch: int, rank: int) -> torch.Generator:
    """A generator on ``device`` seeded from (seed, epoch, rank), so augmentation does not depend on
    the global random state and a resumed run draws the same crops."""
    state = np.random.SeedSequence([seed, epoch, rank, 0x1A7]).generate_state(2)
    g = torch.Generator(device=device)
    g.manual_seed(int(state[0]) << 32 | int(state[1]))
    return g


class DeviceBatches:
    """Batches gathered from a split held on ``device``; an iterable Lightning accepts as a loader.

    Training (``sampler`` given) follows the sampler's epoch draw; Lightning finds ``sampler`` and
    calls its ``set_epoch``. Evaluation (no sampler) walks the split in order, padded to a multiple
    of ``num_replicas`` and strided by ``rank`` as ``DistributedSampler(shuffle=False)`` does.
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        batch_size: int,
        device: torch.device,
        sampler: Optional[LTSampler] = None,
        drop_last: bool = False,
        augment: Optional[Augment] = None,
        seed: int = 0,
        rank: int = 0,
        num_replicas: int = 1,
    ) -> None:
        self.images = images.to(device)
        self.targets = targets.to(device)
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.drop_last = drop_last
        self.augment = augment
        self.seed, self.rank, self.num_replicas = seed, rank, num_replicas
        if sampler is not None:
            self.sampler = sampler
            self._eval_indices: Optional[torch.Tensor] = None
        else:
            n = len(self.targets)
            total = -(-n // num_replicas) * num_replicas
            idx = np.concatenate([np.arange(n), np.arange(total - n) % max(n, 1)])
            self._eval_indices = torch.from_numpy(idx[rank:total:num_replicas]).to(self.device)

    @property
    def num_items(self) -> int:
        """Items in the split (what a DataLoader's ``len(dataset)`` says), whatever is scored."""
        return len(self.targets)

    def _num_indices(self) -> int:
        if self._eval_indices is not None:
            return len(self._eval_indices)
        return len(self.sampler)

    def __len__(self) -> int:
        n = self._num_indices()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        if self._eval_indices is not None:
            indices, generator = self._eval_indices, None
        else:
            indices = torch.from_numpy(self.sampler.epoch_indices()).to(self.device)  # one copy per epoch
            generator = epoch_generator(self.device, self.seed, self.sampler.epoch, self.rank) if self.augment else None
        bs = self.batch_size
        for k in range(len(self)):
            idx = indices[k * bs : (k + 1) * bs]
            x = self.images.index_select(0, idx)
            if generator is not None:
                x = self.augment(x, generator)
            yield x, self.targets.index_select(0, idx), idx


__all__ = ["DeviceBatches", "crop_flip", "random_crop_flip", "epoch_generator"]
