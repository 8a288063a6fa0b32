"""Running feature statistics kept as buffers: per-modality normalisation and per-class feature centres.

Both update on the device from a batch with matrix products (no loop over classes, no host sync)
and, under torch.distributed, all-reduce the batch's sums and counts in one call so every rank holds
the same statistics.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ltbench.distributed import all_reduce_sum

NormMode = Literal["l2", "standardise", "none"]


class FeatureNorm(nn.Module):
    """``l2`` (unit norm), ``standardise`` (per-dimension (x - mean) / std from running statistics) or ``none``.

    The standardise statistics are the exact mean and variance of everything passed to ``update``
    (Chan et al.'s parallel combination), identity until the first update.
    """

    def __init__(self, dim: int, mode: NormMode = "standardise", eps: float = 1e-5) -> None:
        super().__init__()
        if mode not in ("l2", "standardise", "none"):
            raise ValueError(f"feature normalisation {mode!r}; expected 'l2', 'standardise' or 'none'")
        self.mode, self.eps = mode, eps
        self.register_buffer("count", torch.zeros(()))
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("m2", torch.zeros(dim))

    @property
    def var(self) -> torch.Tensor:
        return torch.where(self.count > 0, self.m2 / self.count.clamp_min(1.0), torch.ones_like(self.m2))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        if self.mode != "standardise":
            return
        self._merge(all_reduce_sum(self._moments(x)))

    def _moments(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.mean.dtype)
        return torch.cat([x.sum(0), x.pow(2).sum(0), x.new_full((1,), x.shape[0])])

    def _merge(self, stats: torch.Tensor) -> None:
        """Fold a batch's (sum, sum of squares, count) into the running mean and M2."""
        d = self.mean.shape[0]
        n_b = stats[-1]
        mean_b = stats[:d] / n_b
        m2_b = (stats[d : 2 * d] - n_b * mean_b.pow(2)).clamp_min(0.0)
        n = self.count + n_b
        delta = mean_b - self.mean
        self.mean.add_(delta * n_b / n)
        self.m2.add_(m2_b + delta.pow(2) * self.count * n_b / n)
        self.count.copy_(n)

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> None:
        """Statistics of ``x`` alone (a fixed set such as the class text features, the same on every
        process: nothing to reduce across processes)."""
        self.count.zero_(), self.mean.zero_(), self.m2.zero_()
        if self.mode == "standardise":
            self._merge(self._moments(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "l2":
            return F.normalize(x, dim=-1)
        if self.mode == "standardise":
            return (x - self.mean) / (self.var + self.eps).sqrt()
        return x

    def extra_repr(self) -> str:
        return f"mode={self.mode}"


class ClassCentres(nn.Module):
    """Per-class feature centres mu (C, D) from detached features.

    ``momentum=None``: the exact running mean of every feature seen per class. ``momentum=m``: EMA
    mu_c <- m mu_c + (1 - m) (batch mean of class c), a class's first batch setting mu_c outright.
    Classes absent from a batch are untouched. Labels come as a (B, C) weight matrix: one-hot rows
    for single-label data; multi-hot rows for multi-label data, where an image counts towards each
    of its positive classes.
    """

    def __init__(self, num_classes: int, dim: int, momentum: Optional[float] = 0.9) -> None:
        super().__init__()
        if momentum is not None and not 0.0 <= momentum < 1.0:
            raise ValueError(f"centre momentum={momentum}; expected a value in [0, 1) or null for the running mean")
        self.momentum = momentum
        self.register_buffer("centres", torch.zeros(num_classes, dim))
        self.register_buffer("counts", torch.zeros(num_classes))

    @torch.no_grad()
    def update(self, feats: torch.Tensor, labels: torch.Tensor) -> None:
        feats, labels = feats.to(self.centres.dtype), labels.to(self.centres.dtype)
        c, d = self.centres.shape
        stats = all_reduce_sum(torch.cat([labels.t() @ feats, labels.sum(0, keepdim=True).t()], 1))
        sums, n = stats[:, :d], stats[:, d]
        present = (n > 0).unsqueeze(1)
        batch_mean = sums / n.clamp_min(1.0).unsqueeze(1)
        if self.momentum is None:
            total = (self.counts + n).clamp_min(1.0).unsqueeze(1)
            new = (self.centres * self.counts.unsqueeze(1) + sums) / total
        else:
            first = (self.counts == 0).unsqueeze(1)
            new = torch.where(first, batch_mean, self.momentum * self.centres + (1.0 - self.momentum) * batch_mean)
        self.centres.copy_(torch.where(present, new, self.centres))
        self.counts.add_(n)

    def target(self, labels: torch.Tensor) -> torch.Tensor:
        """Each sample's centre: its class's, or for multi-hot rows the mean of its positive classes' (B, D)."""
        w = labels.to(self.centres.dtype)
        return (w / w.sum(1, keepdim=True).clamp_min(1.0)) @ self.centres

    def extra_repr(self) -> str:
        return f"classes={self.centres.shape[0]}, dim={self.centres.shape[1]}, momentum={self.momentum}"


__all__ = ["FeatureNorm", "ClassCentres", "NormMode"]
