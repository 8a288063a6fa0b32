"""Sums across processes that are a no-op in a single process, so models and methods keep one code path."""

from __future__ import annotations

import torch
import torch.distributed as dist


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` in place over the process group when there is one with more than one process; return it.

    Callers pack their sums and counts into one tensor, so this is one collective call per update.
    """
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t


__all__ = ["all_reduce_sum"]
