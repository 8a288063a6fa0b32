"""CIFAR ResNet-32 backbones, registered with timm so configs name them like any timm model.

Two variants, both trained from scratch (no pretrained weights exist for either):

* ``resnet32_cifar``: the standard CIFAR ResNet-32 (He et al. 2016; the LDAM-DRW ``resnet32``):
  a 3x3 stem and three stages of five BasicBlocks (16, 32, 64 channels), 64-d features.
* ``resnet32_bbn``: BBN's ResNet-32, used by TDE on CIFAR-LT: the last stage has four blocks and
  feeds two parallel BasicBlocks (``cb_block``, ``rb_block``) whose outputs are concatenated,
  128-d features. Results reported with it are not comparable with the 64-d network.

Both use "option A" shortcuts (parameter-free, zero-padded identity) and kaiming-normal init, and
keep the original attribute names (``conv1``, ``bn1``, ``layer1``.., ``cb_block``, ``rb_block``,
``fc``) so state dicts from those code bases map onto them key for key.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from timm.layers import create_classifier
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model, resolve_pretrained_cfg

from ltbench.errors import LTBenchError
from ltbench.models.classifier_mixin import PooledClassifierMixin

__all__ = ["CifarResNet", "BBNResNet", "BasicBlock", "PadShortcut", "build_scratch_model"]

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)  # the value used by LDAM-DRW, BBN and TDE, kept for comparability


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample by ``stride`` and zero-pad channels, so it adds no parameters."""

    def __init__(self, in_chs: int, out_chs: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = out_chs - in_chs
        self.pad = (extra // 2, extra - extra // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, *self.pad))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        if stride != 1 or in_chs != out_chs:
            self.shortcut: nn.Module = PadShortcut(in_chs, out_chs, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def _make_layer(in_chs: int, out_chs: int, depth: int, stride: int) -> nn.Sequential:
    strides = [stride] + [1] * (depth - 1)
    blocks = []
    for s in strides:
        blocks.append(BasicBlock(in_chs, out_chs, s))
        in_chs = out_chs
    return nn.Sequential(*blocks)


def _init_weights(module: nn.Module) -> None:
    """kaiming_normal on conv and linear weights, as in the reference CIFAR ResNets."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)


class CifarResNet(PooledClassifierMixin, nn.Module):
    """Standard CIFAR ResNet (6n+2 layers); ``depths=(5, 5, 5)`` is ResNet-32."""

    def __init__(
        self,
        depths: Sequence[int] = (5, 5, 5),
        width: int = 16,
        num_classes: int = 10,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        widths = (width, 2 * width, 4 * width)
        self.conv1 = nn.Conv2d(in_chans, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = _make_layer(width, widths[0], depths[0], 1)
        self.layer2 = _make_layer(widths[0], widths[1], depths[1], 2)
        self.layer3 = _make_layer(widths[1], widths[2], depths[2], 2)
        self.num_features = self.head_hidden_size = self._feature_dim(widths)
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        _init_weights(self)

    def _feature_dim(self, widths: Sequence[int]) -> int:
        return widths[-1]

    def _stages(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        for layer in (self.layer1, self.layer2, self.layer3):
            if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
                x = torch.utils.checkpoint.checkpoint(layer, x, use_reentrant=False)
            else:
                x = layer(x)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) image -> (B, num_features, H/4, W/4) map, before pooling."""
        return self._stages(x)

    def init_classifier(self, fc: nn.Module) -> None:
        _init_weights(fc)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^conv1|bn1", blocks=r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)")


class BBNResNet(CifarResNet):
    """BBN's CIFAR ResNet-32: ``layer3`` is one block short; two parallel blocks follow it.

    ``cb_block`` and ``rb_block`` (BBN's conventional and re-balancing branches) both read the
    ``layer3`` output; their concatenation is the feature map, so ``num_features`` is twice the last
    stage width (128 for ResNet-32).
    """

    def __init__(self, depths: Sequence[int] = (5, 5, 4), width: int = 16, **kwargs: Any) -> None:
        super().__init__(depths=depths, width=width, **kwargs)
        last = 4 * width
        self.cb_block = BasicBlock(last, last)
        self.rb_block = BasicBlock(last, last)
        _init_weights(self.cb_block)
        _init_weights(self.rb_block)

    def _feature_dim(self, widths: Sequence[int]) -> int:
        return 2 * widths[-1]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) image -> (B, num_features, H/4, W/4): both branch maps, concatenated."""
        x = self._stages(x)
        return torch.cat((self.cb_block(x), self.rb_block(x)), dim=1)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        blocks = r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)"
        return dict(stem=r"^conv1|bn1", blocks=[(blocks, None), (r"^(?:cb_block|rb_block)", (99999,))])


def build_scratch_model(
    model_cls: Callable[..., nn.Module],
    variant: str,
    pretrained: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build through timm (so pretrained_cfg, in_chans and weight files work as for timm models).

    No pretrained weights are published for ltbench's models, so ``pretrained=True`` is an error
    unless a weights file or state dict was supplied (``pretrained_cfg_overlay=dict(file=...)``).
    """
    if pretrained:
        cfg = resolve_pretrained_cfg(
            variant,
            pretrained_cfg=kwargs.get("pretrained_cfg"),
            pretrained_cfg_overlay=kwargs.get("pretrained_cfg_overlay"),
        )
        if not (cfg.has_weights or cfg.state_dict):
            raise LTBenchError(
                f"no pretrained weights exist for {variant!r}: ltbench trains it from scratch; "
                "use pretrained=False, or pass the path of a weights file as `pretrained`"
            )
    return build_model_with_cfg(model_cls, variant, pretrained, **kwargs)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 10,
        "input_size": (3, 32, 32),
        "pool_size": (8, 8),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "fixed_input_size": False,
        "mean": CIFAR_MEAN,
        "std": CIFAR_STD,
        "first_conv": "conv1",
        "classifier": "fc",
        "license": "apache-2.0",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        "resnet32_cifar": _cfg(),
        "resnet32_bbn": _cfg(),
    }
)


@register_model
def resnet32_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """Standard CIFAR ResNet-32, 64-d features (~0.46M parameters with a 10-class head)."""
    return build_scratch_model(CifarResNet, "resnet32_cifar", pretrained, **{"depths": (5, 5, 5), **kwargs})


@register_model
def resnet32_bbn(pretrained: bool = False, **kwargs: Any) -> BBNResNet:
    """BBN/TDE CIFAR ResNet-32, 128-d features (two parallel branch blocks after a 4-block layer3)."""
    return build_scratch_model(BBNResNet, "resnet32_bbn", pretrained, **{"depths": (5, 5, 4), **kwargs})
