"""The timm classifier interface shared by ltbench's own CNNs (pooling, optional dropout, fc)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from timm.layers import create_classifier
from torch import nn


class PooledClassifierMixin:
    """``forward_head``/``forward``/``get_classifier``/``reset_classifier`` over ``forward_features``.

    The model sets ``num_features``, ``drop_rate``, ``global_pool`` and ``fc``.
    """

    num_features: int
    drop_rate: float
    global_pool: nn.Module
    fc: nn.Module

    def init_classifier(self, fc: nn.Module) -> None:
        """Initialise a new classifier; the model's own init scheme where it has one."""

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        pool_type = global_pool if global_pool is not None else self.global_pool.pool_type
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=pool_type)
        self.init_classifier(self.fc)
