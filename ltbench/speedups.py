"""GPU speed switches for any method's backbone: channels_last, ``torch.compile``, and MFU in the record.

A callback, so a config turns them on (``configs/trainer/gpu.yaml`` does) without a method knowing:

    trainer:
      callbacks:
        - class_path: ltbench.speedups.Speedups
          init_args: {channels_last: true, compile: true, compile_mode: max-autotune-no-cudagraphs}

``None`` (the default of each switch) means on for CUDA, off elsewhere, so a config that has it
still runs unchanged on CPU. The backbone's ``forward_features`` is what gets compiled (the
method's head, losses and buffers stay eager and bit-for-bit what they were); parameters keep
their names, so checkpoints load with or without the switches.
"""

from __future__ import annotations

from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from ltbench.flops import throughput_extras, train_flops_per_image


def _to_channels_last(fn):
    def forward_features(x: torch.Tensor) -> torch.Tensor:
        return fn(x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x)

    return forward_features


def apply_speedups(
    backbone: torch.nn.Module, channels_last: bool, compile: bool, compile_mode: Optional[str] = None, compile_backend: str = "inductor"
) -> None:
    """Convert ``backbone`` (an ``ltbench.models.Backbone``) in place; applying twice is a no-op."""
    if getattr(backbone, "_ltbench_speedups", None):
        return
    model = backbone.model
    fwd = model.forward_features
    if channels_last:
        backbone.to(memory_format=torch.channels_last)
        fwd = _to_channels_last(fwd)
    if compile:
        fwd = torch.compile(fwd, mode=compile_mode, backend=compile_backend)
    if channels_last or compile:
        model.forward_features = fwd
    backbone._ltbench_speedups = {"channels_last": channels_last, "compile": compile, "compile_mode": compile_mode}


class Speedups(L.Callback):
    """channels_last and ``torch.compile`` of the backbone; model FLOPs and MFU into the run's throughput."""

    def __init__(
        self,
        channels_last: Optional[bool] = None,
        compile: Optional[bool] = None,
        compile_mode: Optional[str] = None,
        compile_backend: str = "inductor",
        report_mfu: bool = True,
    ) -> None:
        """
        Args:
            channels_last: NHWC weights and inputs for the backbone (faster convolutions on tensor cores).
            compile: ``torch.compile`` the backbone's forward (the backward is compiled with it).
            compile_mode: ``torch.compile`` mode (``default``, ``reduce-overhead``, ``max-autotune``...).
            compile_backend: ``inductor``; ``eager`` only traces (tests).
            report_mfu: count the backbone's training FLOPs per image once (heads are a rounding
                error next to it) and add GFLOPs, TFLOP/s and MFU to ``throughput`` at the end of training.
        """
        self.channels_last, self.compile = channels_last, compile
        self.compile_mode, self.compile_backend = compile_mode, compile_backend
        self.report_mfu = report_mfu
        self.flops_per_image: Optional[float] = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        backbone = getattr(pl_module, "backbone", None)
        if backbone is None or not hasattr(backbone, "model"):
            return
        cuda = trainer.strategy.root_device.type == "cuda"
        if self.report_mfu and stage == "fit" and self.flops_per_image is None:
            self.flops_per_image = self._count(trainer, pl_module)
        channels_last = cuda if self.channels_last is None else self.channels_last
        compile = cuda if self.compile is None else self.compile
        apply_speedups(backbone, channels_last, compile, self.compile_mode, self.compile_backend)
        if channels_last or compile:
            rank_zero_info(f"ltbench: backbone channels_last={channels_last}, compile={compile} (mode {self.compile_mode or 'default'})")

    @staticmethod
    def _count(trainer: L.Trainer, pl_module: L.LightningModule) -> Optional[float]:
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "image_size"):
            return None
        shape = (int(dm.in_chans), int(dm.image_size), int(dm.image_size))
        hp = getattr(pl_module, "hparams", {})
        key = (type(pl_module).__name__, hp.get("backbone"), repr(hp.get("backbone_kwargs")), getattr(pl_module, "num_classes", None), shape)
        try:
            return train_flops_per_image(pl_module.backbone, shape, key=key)
        except Exception as e:  # a model the meta device cannot run: no MFU, training goes on
            rank_zero_info(f"ltbench: model FLOPs not counted ({type(e).__name__}: {e})")
            return None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        throughput = getattr(pl_module, "throughput", None)
        if self.flops_per_image and isinstance(throughput, dict):
            throughput.update(
                throughput_extras(throughput.get("train_images_per_s"), self.flops_per_image, pl_module.device, int(throughput.get("devices", 1)))
            )

    def state_dict(self) -> dict[str, Any]:
        return {"flops_per_image": self.flops_per_image}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.flops_per_image = state_dict.get("flops_per_image", self.flops_per_image)


__all__ = ["Speedups", "apply_speedups"]
