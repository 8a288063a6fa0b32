"""JPEG files decoded on the accelerator, with ImageNet-style augmentation batched there.

Loader workers only read file bytes (``torchvision.io.read_file``); the batch's bytes reach the
device step as a list, ``torchvision.io.decode_jpeg`` decodes the list in one call (nvJPEG's
batched decoder on CUDA, libjpeg-turbo on CPU), and RandomResizedCrop + horizontal flip + colour
jitter run on the decoded batch: crop boxes drawn for the whole batch at once (torchvision's ten
attempts and fallback, vectorised), every crop resampled by one ``torchvision.ops.roi_align`` call
(area-averaging bilinear, so downscaling is antialiased as PIL's is), flips and jitter as batched
tensor ops with per-image factors. The result is the loader path's contract: uint8 (B, 3, S, S).
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_jpeg, read_file
from torchvision.ops import roi_align

from ltbench.errors import DataError

#: padded decode buffer per roi_align call, in elements (images are grouped to stay under it)
PAD_BUDGET = 96 * 2**20


class EncodedImages:
    """A batch of encoded image files (1-D uint8 tensors). Not a tensor collection on purpose:
    Lightning leaves it on the host, where ``decode_jpeg`` wants its input."""

    def __init__(self, data: list[torch.Tensor]) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)


class EncodedFileDataset(Dataset):
    """Items ``(file bytes, label, index)`` of a list-file dataset; decoding happens on the device."""

    draws_randomly = False  # the augmentation draws on the device, from the epoch's generators

    def __init__(self, root: str, paths: Any, targets: Sequence[int], list_path: str) -> None:
        self.root, self.paths, self.targets, self.list_path = root, paths, targets, list_path

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        path = os.path.join(self.root, self.paths[index])
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="The image decoding and encoding", category=DeprecationWarning)
                data = read_file(path)
        except RuntimeError:
            raise DataError(f"image missing: {path} (entry {index + 1} of {self.list_path}); expected a JPEG file there") from None
        return data, int(self.targets[index]), index


def collate_encoded(batch: list[tuple[torch.Tensor, int, int]]) -> tuple[EncodedImages, torch.Tensor, torch.Tensor]:
    data, targets, index = zip(*batch)
    return EncodedImages(list(data)), torch.tensor(targets), torch.tensor(index)


def decode(encoded: EncodedImages, device: torch.device) -> list[torch.Tensor]:
    """RGB uint8 (3, H, W) tensors on ``device``; a corrupt file is named by its batch position."""
    try:
        with warnings.catch_warnings():
            # torchvision 0.29 points at TorchCodec; decode_jpeg's batched nvJPEG path is still the kept one here
            warnings.filterwarnings("ignore", message="The image decoding and encoding", category=DeprecationWarning)
            return decode_jpeg(encoded.data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError as e:
        raise DataError(f"JPEG decoding failed for a batch of {len(encoded)} files: {e}") from None


def random_resized_boxes(
    sizes: torch.Tensor,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> torch.Tensor:
    """torchvision's RandomResizedCrop.get_params for a batch: (B, 4) boxes (top, left, height, width).

    ``sizes`` is (B, 2) heights and widths. Each image takes its first valid draw of ``attempts``,
    else torchvision's fallback (the whole image clamped to the ratio range, centred).
    """
    sizes = sizes.to(torch.float64)
    b = len(sizes)
    h_img, w_img = sizes[:, 0:1], sizes[:, 1:2]
    area = h_img * w_img * torch.empty(b, attempts, dtype=torch.float64).uniform_(*scale, generator=generator)
    log_r = torch.empty(b, attempts, dtype=torch.float64).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    r = torch.exp(log_r)
    w = torch.round(torch.sqrt(area * r))
    h = torch.round(torch.sqrt(area / r))
    ok = (w > 0) & (h > 0) & (w <= w_img) & (h <= h_img)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((b,), -1))
    rows = torch.arange(b)
    hs, ws = h[rows, first.clamp_min(0)], w[rows, first.clamp_min(0)]
    u = torch.rand(b, 2, dtype=torch.float64, generator=generator)
    top = torch.floor(u[:, 0] * (h_img[:, 0] - hs + 1))
    left = torch.floor(u[:, 1] * (w_img[:, 0] - ws + 1))
    # fallback: whole image, clamped to the ratio range, centred
    in_r = w_img[:, 0] / h_img[:, 0]
    fw = torch.where(in_r < ratio[0], w_img[:, 0], torch.where(in_r > ratio[1], torch.round(h_img[:, 0] * ratio[1]), w_img[:, 0]))
    fh = torch.where(in_r < ratio[0], torch.round(w_img[:, 0] / ratio[0]), h_img[:, 0])
    fb = first < 0
    hs, ws = torch.where(fb, fh, hs), torch.where(fb, fw, ws)
    top = torch.where(fb, torch.floor((h_img[:, 0] - fh) / 2), top)
    left = torch.where(fb, torch.floor((w_img[:, 0] - fw) / 2), left)
    return torch.stack([top, left, hs, ws], 1).long()


def crop_resize(images: list[torch.Tensor], boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Resample each image's box (top, left, h, w) to ``size`` x ``size``: float (B, C, size, size) in [0, 255].

    Images are zero-padded into shared buffers (grouped under ``PAD_BUDGET`` elements) and cropped by
    one ``roi_align`` call per buffer with adaptive sampling, which averages several bilinear samples
    per output pixel.
    """
    device = images[0].device
    out, start = [], 0
    while start < len(images):
        end, hmax, wmax = start, 0, 0
        while end < len(images):
            h, w = images[end].shape[-2:]
            nh, nw = max(hmax, h), max(wmax, w)
            if end > start and (end - start + 1) * 3 * nh * nw > PAD_BUDGET:
                break
            hmax, wmax, end = nh, nw, end + 1
        padded = torch.zeros(end - start, images[start].shape[0], hmax, wmax, dtype=torch.uint8, device=device)
        for k, im in enumerate(images[start:end]):  # copies only: decode_jpeg hands back a list
            padded[k, :, : im.shape[-2], : im.shape[-1]] = im
        padded = padded.float()
        bx = boxes[start:end].to(device=device, dtype=torch.float32)
        rois = torch.stack(
            [torch.arange(end - start, device=device, dtype=torch.float32), bx[:, 1], bx[:, 0], bx[:, 1] + bx[:, 3], bx[:, 0] + bx[:, 2]], 1
        )
        out.append(roi_align(padded, rois, output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True))
        start = end
    return torch.cat(out)


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def color_jitter(
    x: torch.Tensor, generator: torch.Generator, host_generator: torch.Generator, brightness: float, contrast: float, saturation: float
) -> torch.Tensor:
    """torchvision ColorJitter(brightness, contrast, saturation) on a float batch in [0, 1], a factor per
    image from U(1 - s, 1 + s); the order of the three is drawn once per batch, on the host."""
    b, dev = x.shape[0], x.device

    def factors(s: float) -> torch.Tensor:
        return torch.empty(b, 1, 1, 1, device=dev).uniform_(max(0.0, 1 - s), 1 + s, generator=generator)

    ops = {
        "brightness": lambda t, f: (t * f).clamp_(0, 1),
        "contrast": lambda t, f: (f * t + (1 - f) * _gray(t).mean((1, 2, 3), keepdim=True)).clamp_(0, 1),
        "saturation": lambda t, f: (f * t + (1 - f) * _gray(t)).clamp_(0, 1),
    }
    strengths = {"brightness": brightness, "contrast": contrast, "saturation": saturation}
    drawn = {k: factors(s) for k, s in strengths.items() if s > 0}
    order = torch.randperm(3, generator=host_generator)
    for k in (list(strengths)[i] for i in order.tolist()):
        if k in drawn:
            x = ops[k](x, drawn[k])
    return x


def decode_augment(
    encoded: EncodedImages,
    device: torch.device,
    size: int,
    generator: torch.Generator,
    host_generator: torch.Generator,
    jitter: tuple[float, float, float] = (0.4, 0.4, 0.4),
    flip_p: float = 0.5,
) -> torch.Tensor:
    """Decode on ``device``, RandomResizedCrop(size) + flip + jitter: uint8 (B, 3, size, size)."""
    images = decode(encoded, device)
    sizes = torch.tensor([im.shape[-2:] for im in images])
    boxes = random_resized_boxes(sizes, host_generator)
    x = crop_resize(images, boxes, size)
    flip = torch.rand(len(images), device=x.device, generator=generator) < flip_p
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    if any(jitter):
        x = color_jitter(x.div_(255.0), generator, host_generator, *jitter).mul_(255.0)
    return x.round_().clamp_(0, 255).to(torch.uint8)


__all__ = ["EncodedImages", "EncodedFileDataset", "collate_encoded", "decode", "random_resized_boxes", "crop_resize",
           "color_jitter", "decode_augment"]
