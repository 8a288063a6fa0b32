"""Model FLOPs per training image and model FLOPs utilisation (MFU).

FLOPs are counted once per model and input shape by ``torch.utils.flop_counter.FlopCounterMode``
over one forward of a copy of the model on the ``meta`` device (shapes only, no arithmetic), and a
training step is taken as 3x the forward (the backward computes gradients of activations and of
weights, each costing a forward): the usual MFU convention, and exact where torch's own backward
count is not (it overcounts grouped convolutions, ResNeXt's, by the group count). MFU is achieved model FLOP/s over the device's
dense bf16 peak from the vendor data sheets below, the convention of PaLM and nanoGPT; it says
nothing about fp32 runs beyond how far they are from that peak.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Hashable, Optional

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

#: dense (no sparsity) bf16 tensor-core peak, TFLOP/s, matched against the CUDA device name in order
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.4),
    ("H100 PCIe", 756.0),
    ("H100", 989.4),  # SXM
    ("A100", 312.0),
    ("L40S", 362.1),
    ("A10G", 70.0),
    ("L4", 121.0),
)

_CACHE: dict[Hashable, float] = {}


def peak_bf16_flops(device_name: str) -> Optional[float]:
    """Dense bf16 peak FLOP/s of a CUDA device by name (``torch.cuda.get_device_name``), None if unknown."""
    for key, tflops in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops * 1e12
    return None


def train_flops_per_image(
    module: nn.Module,
    input_shape: tuple[int, ...],
    forward: Optional[Callable[[nn.Module, torch.Tensor], torch.Tensor]] = None,
    key: Optional[Hashable] = None,
    batch: int = 2,
) -> float:
    """FLOPs of one training forward + backward per image of shape ``input_shape`` (C, H, W): 3x the
    forward's. ``forward(module, x)`` runs the model (default ``module(x)``). With ``key`` the count
    is cached in-process.
    """
    if key is not None and key in _CACHE:
        return _CACHE[key]
    meta = copy.deepcopy(module).to("meta").train()
    x = torch.zeros((batch, *input_shape), device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        forward(meta, x) if forward is not None else meta(x)
    flops = 3 * counter.get_total_flops() / batch
    if key is not None:
        _CACHE[key] = flops
    return flops


def mfu(images_per_s: float, flops_per_image: float, device_name: str) -> Optional[float]:
    """Achieved model FLOP/s over the device's dense bf16 peak; None for unknown devices."""
    peak = peak_bf16_flops(device_name)
    return None if peak is None else images_per_s * flops_per_image / peak


def throughput_extras(images_per_s: Optional[float], flops_per_image: float, device: Any, devices: int = 1) -> dict[str, Any]:
    """The FLOP facts a run record's ``throughput`` carries; ``images_per_s`` is over all ``devices``."""
    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    out: dict[str, Any] = {"backbone_gflops_per_image": flops_per_image / 1e9, "device_name": name}
    if images_per_s:
        out["achieved_tflops"] = images_per_s * flops_per_image / 1e12
        m = mfu(images_per_s / max(devices, 1), flops_per_image, name)
        if m is not None:
            out["mfu_bf16_dense"] = m
    return out


__all__ = ["PEAK_BF16_TFLOPS", "peak_bf16_flops", "train_flops_per_image", "mfu", "throughput_extras"]
