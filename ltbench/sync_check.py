"""Finding host-device syncs inside training steps.

``NoSyncInSteps`` is a callback whose window runs from each batch's start to its end (forward,
loss, logging, backward, optimiser step; the module's own batch-end hook, which reads the
non-finite flag at logging steps, comes after it). On CUDA the window runs under
``torch.cuda.set_sync_debug_mode``; elsewhere every tensor-to-host read (``item``, ``bool``,
``int``, ``float``, ``tolist``, ``cpu``, ``numpy``) raises inside it, which finds the same code
on a CPU-only machine.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

import lightning as L
import torch

HOST_READS = ("item", "__bool__", "__int__", "__float__", "__index__", "tolist", "cpu", "numpy")


class HostSyncError(AssertionError):
    """A tensor was read back to the host inside a guarded window."""


@contextlib.contextmanager
def host_reads_raise() -> Iterator[None]:
    """Every ``torch.Tensor`` read to the host raises ``HostSyncError`` inside the block."""
    saved = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def refuse(name: str):
        def read(self, *args: Any, **kwargs: Any):
            raise HostSyncError(f"host sync: Tensor.{name} called inside a training step")

        return read

    try:
        for name in HOST_READS:
            setattr(torch.Tensor, name, refuse(name))
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)


@contextlib.contextmanager
def cuda_syncs_raise() -> Iterator[None]:
    """CUDA synchronising calls raise inside the block (``set_sync_debug_mode("error")``)."""
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)


class NoSyncInSteps(L.Callback):
    """Fails a training step that syncs with the host; ``steps`` counts the steps that passed."""

    def __init__(self) -> None:
        self._ctx: Optional[contextlib.AbstractContextManager] = None
        self.steps = 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._ctx = cuda_syncs_raise() if pl_module.device.type == "cuda" else host_reads_raise()
        self._ctx.__enter__()

    def _close(self) -> None:
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            ctx.__exit__(None, None, None)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._close()
        self.steps += 1

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._close()


__all__ = ["NoSyncInSteps", "HostSyncError", "host_reads_raise", "cuda_syncs_raise"]
