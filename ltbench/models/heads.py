"""Classifier heads shared by several methods."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CosineHead(nn.Module):
    """Logits s * cos(x, w_c): scale-free per-class weights, the cosine (CosNorm) classifier.

    The default scale 16 is OLTR/Decoupling's CosNorm value; ``learn_scale`` makes it a parameter.
    """

    def __init__(self, in_features: int, num_classes: int, scale: float = 16.0, learn_scale: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        s = torch.tensor(float(scale))
        if learn_scale:
            self.scale = nn.Parameter(s)
        else:
            self.register_buffer("scale", s)

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.linear(F.normalize(x, dim=-1), F.normalize(self.weight, dim=-1))
