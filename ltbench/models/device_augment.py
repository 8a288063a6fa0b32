"""Random views of a batch made on the device: every sample of every view gets its own parameters.

One affine warp per sample (flip, rotation, scale, translation and, optionally, a random-resized
crop) through ``affine_grid``/``grid_sample``, which also resizes to the output size, then a
per-sample brightness shift and contrast scale. No Python loop over samples; draws come from
torch's global generator, which ltbench re-seeds every epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ViewAugment:
    """Ranges of the per-sample draws. ``crop_scale`` None: no random-resized crop (area fraction otherwise)."""

    flip: float = 0.5
    degrees: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.1
    brightness: float = 0.2
    contrast: tuple[float, float] = (0.8, 1.2)
    crop_scale: Optional[tuple[float, float]] = None
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)


#: CDC's appendix names two sets, "common augmentations" and the same "plus a random crop" (exact ops not given)
AUGMENT_SETS = {
    "aug1": ViewAugment(),
    "aug2": ViewAugment(crop_scale=(0.5, 1.0)),
}


def _uniform(n: int, lo: float, hi: float, device: torch.device) -> torch.Tensor:
    return torch.rand(n, device=device) * (hi - lo) + lo


def random_views(x: torch.Tensor, n_views: int, size: tuple[int, int], aug: ViewAugment) -> torch.Tensor:
    """(n_views * B, C, *size): view v of sample b at row v * B + b, each with its own random warp and colour."""
    b = x.shape[0]
    n = n_views * b
    dev = x.device
    xr = x.float().repeat(n_views, 1, 1, 1)
    angle = _uniform(n, -aug.degrees, aug.degrees, dev) * (math.pi / 180.0)
    zoom = _uniform(n, *aug.scale, dev)
    sx, sy = 1.0 / zoom, 1.0 / zoom  # output-to-input: a zoom > 1 samples a smaller region
    if aug.crop_scale is not None:
        area = _uniform(n, *aug.crop_scale, dev)
        log_ratio = _uniform(n, math.log(aug.crop_ratio[0]), math.log(aug.crop_ratio[1]), dev)
        ratio = torch.exp(log_ratio)
        sx = sx * torch.sqrt(area * ratio).clamp(max=1.0)
        sy = sy * torch.sqrt(area / ratio).clamp(max=1.0)
    flip = torch.where(torch.rand(n, device=dev) < aug.flip, -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    room_x = (1.0 - sx).clamp(min=0.0) + aug.translate
    room_y = (1.0 - sy).clamp(min=0.0) + aug.translate
    tx = (torch.rand(n, device=dev) * 2 - 1) * room_x
    ty = (torch.rand(n, device=dev) * 2 - 1) * room_y
    theta = torch.stack(
        [torch.stack([cos * sx * flip, -sin * sy, tx], -1), torch.stack([sin * sx * flip, cos * sy, ty], -1)], dim=1
    )
    grid = F.affine_grid(theta, [n, x.shape[1], *size], align_corners=False)
    out = F.grid_sample(xr, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    contrast = _uniform(n, *aug.contrast, dev).view(n, 1, 1, 1)
    shift = _uniform(n, -aug.brightness, aug.brightness, dev).view(n, 1, 1, 1)
    return ((out - mean) * contrast + mean + shift).to(x.dtype)


__all__ = ["ViewAugment", "AUGMENT_SETS", "random_views"]
