"""``tiny_cnn``: a three-layer CNN registered with timm, for tests and the embedded default suite.

Small enough to train in seconds on CPU, and works from 8x8 inputs (scikit-learn digits, one
channel) up to 32x32 CIFAR-sized images. Not meant to give competitive accuracy.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from timm.layers import create_classifier
from timm.models import generate_default_cfgs, register_model

from ltbench.models.classifier_mixin import PooledClassifierMixin
from ltbench.models.cifar_resnet import CIFAR_MEAN, CIFAR_STD, build_scratch_model

__all__ = ["TinyCNN"]


class ConvBnReLU(nn.Sequential):
    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = nn.ReLU(inplace=True)


class TinyCNN(PooledClassifierMixin, nn.Module):
    """conv(w) -> conv(2w, stride 2) -> conv(4w); ``num_features`` is 4w (64 by default)."""

    def __init__(
        self,
        width: int = 16,
        num_classes: int = 10,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.conv1 = ConvBnReLU(in_chans, width)
        self.conv2 = ConvBnReLU(width, 2 * width, stride=2)
        self.conv3 = ConvBnReLU(2 * width, 4 * width)
        self.num_features = self.head_hidden_size = 4 * width
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) image -> (B, num_features, H/2, W/2) map, before pooling."""
        return self.conv3(self.conv2(self.conv1(x)))

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^conv1", blocks=r"^conv([23])")


default_cfgs = generate_default_cfgs(
    {
        "tiny_cnn": {
            "url": "",
            "num_classes": 10,
            "input_size": (3, 32, 32),
            "pool_size": (16, 16),
            "crop_pct": 1.0,
            "interpolation": "bilinear",
            "fixed_input_size": False,
            "mean": CIFAR_MEAN,
            "std": CIFAR_STD,
            "first_conv": "conv1.conv",
            "classifier": "fc",
            "license": "apache-2.0",
        }
    }
)


@register_model
def tiny_cnn(pretrained: bool = False, **kwargs: Any) -> TinyCNN:
    """Three conv-BN-ReLU layers (16/32/64 channels, one stride 2); 64-d features."""
    return build_scratch_model(TinyCNN, "tiny_cnn", pretrained, **kwargs)
