"""Fourier amplitude mixing (FACT, Xu et al., CVPR'21), batched on the device with ``torch.fft``.

An image keeps its phase (structure) and takes a blend of its own and a partner's amplitude
(style) over the central, low-frequency box of the centred spectrum. ``box="official"`` is the
released ``colorful_spectrum_mix``: rows/cols ``h//2 - c//2 .. h//2 - c//2 + c - 1`` with
``c = int(h * sqrt(ratio))``, which for even sizes and even c is one bin off-centre (32 px: -15..+14),
so the mixed spectrum is not Hermitian and only the real part of the inverse is kept. ``symmetric``
mixes the frequencies |k| <= (c - 1) // 2 on each axis instead, which keeps the result real.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

Box = Literal["official", "symmetric"]


def box_mask(h: int, w: int, ratio: float, box: Box = "official", device: torch.device | None = None) -> torch.Tensor:
    """Bool (h, w) mask over the fftshift-ed spectrum: the bins whose amplitude is mixed."""

    def axis(n: int) -> torch.Tensor:
        crop = int(n * math.sqrt(ratio))
        i = torch.arange(n, device=device)
        if box == "official":
            start = n // 2 - crop // 2
            return (i >= start) & (i < start + crop)
        if box == "symmetric":
            return (i - n // 2).abs() <= (crop - 1) // 2
        raise ValueError(f"box={box!r}; expected 'official' or 'symmetric'")

    return axis(h)[:, None] & axis(w)[None, :]


def amplitude_mix(
    x: torch.Tensor, partner: torch.Tensor, lam: torch.Tensor, ratio: float = 0.9, box: Box = "official"
) -> torch.Tensor:
    """x, partner (B, C, H, W) real; lam (B,). Returns Re(ifft2(A' e^{i phase(x)})).

    A' = (1 - lam) A_x + lam A_partner inside the box, A_x outside; lam is shared by the channels and
    may exceed 1 (negative amplitudes are kept, as released). Runs in float32 at least.
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    fx = torch.fft.fft2(x.to(dtype))
    amp_p = torch.fft.fft2(partner.to(dtype)).abs()
    amp_x, phase = fx.abs(), fx.angle()
    mask = torch.fft.ifftshift(box_mask(x.shape[-2], x.shape[-1], ratio, box, x.device), dim=(-2, -1))
    lam = lam.to(dtype).view(-1, 1, 1, 1)
    amp = torch.where(mask, (1 - lam) * amp_x + lam * amp_p, amp_x)
    return torch.fft.ifft2(torch.polar(amp.abs(), phase + torch.pi * (amp < 0))).real


__all__ = ["Box", "box_mask", "amplitude_mix"]
