"""Classifier heads shared by several methods."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ltbench.distributed import all_reduce_sum


class CosineHead(nn.Module):
    """Logits s * cos(x, w_c): the cosine classifier, scale-invariant in x and in each w_c.

    ``squash`` gives OLTR's CosNorm instead (also Decoupling's ``CosNorm_Classifier``): the input is
    squashed to ||x|| / (1 + ||x||) * x / ||x|| before the dot product, so logits grow with ||x||
    (up to s) and the head is no longer scale-invariant in x. The default scale 16 is theirs;
    ``learn_scale`` makes it a parameter.
    """

    def __init__(
        self, in_features: int, num_classes: int, scale: float = 16.0, learn_scale: bool = False, squash: bool = False
    ) -> None:
        super().__init__()
        self.squash = squash
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
        x_hat = F.normalize(x, dim=-1)
        if self.squash:
            norm = x.norm(dim=-1, keepdim=True)
            x_hat = x_hat * (norm / (1.0 + norm))
        return self.scale * F.linear(x_hat, F.normalize(self.weight, dim=-1))


Norm = Literal["causal", "cosine", "capsule"]


def at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """float32 for half-precision tensors; float32 and float64 pass unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


class CausalNormHead(nn.Module):
    """Multi-head normalised linear classifier without bias: TDE's de-confounded ("causal-norm") head.

    Features and class weights are split into ``num_heads`` contiguous channel chunks. Per chunk the
    feature is normalised and each class weight divided by ``||w|| + gamma``; the chunks' dot products
    are summed at scale ``tau / num_heads``, so every logit lies strictly inside (-tau, tau). The
    normalisation stands in for the backdoor adjustment over the momentum (Tang et al., NeurIPS'20).

    ``norm`` selects the paper's ablation classifiers with the same multi-head split: ``causal``
    (x / ||x||, w / (||w|| + gamma)), ``cosine`` (x / ||x||, w / ||w||) and ``capsule``
    (x / (1 + ||x||), the capsule squash ||x|| / (1 + ||x||) * x / ||x||, and w / ||w||); ``gamma``
    applies to ``causal`` only. The computation runs in float32 even under autocast: the logits are
    differences of bounded cosines, which bf16 would round at about 0.06 on the 16 scale.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        num_heads: int = 2,
        tau: float = 16.0,
        gamma: float = 1.0 / 32.0,
        norm: Norm = "causal",
    ) -> None:
        super().__init__()
        if num_heads < 1 or in_features % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide the feature size {in_features}")
        if norm not in ("causal", "cosine", "capsule"):
            raise ValueError(f"norm={norm!r}; expected 'causal', 'cosine' or 'capsule'")
        self.in_features, self.num_classes = in_features, num_classes
        self.num_heads, self.tau, self.gamma, self.norm = num_heads, float(tau), float(gamma), norm
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = self.in_features**-0.5
        nn.init.uniform_(self.weight, -bound, bound)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """(..., F) -> (..., K, F / K): the per-head channel chunks."""
        return x.unflatten(-1, (self.num_heads, self.in_features // self.num_heads))

    def normalized_input(self, x: torch.Tensor) -> torch.Tensor:
        """Per-head normalised features, (B, K, F / K)."""
        chunks = self.split(at_least_fp32(x))
        if self.norm == "capsule":
            return chunks / (1.0 + chunks.norm(dim=-1, keepdim=True))
        return F.normalize(chunks, dim=-1)

    def normalized_weight(self) -> torch.Tensor:
        """Per-head normalised class weights, (C, K, F / K)."""
        chunks = self.split(at_least_fp32(self.weight))
        gamma = self.gamma if self.norm == "causal" else 0.0
        return chunks / (chunks.norm(dim=-1, keepdim=True) + gamma).clamp_min(1e-12)

    def logits(self, normalized: torch.Tensor) -> torch.Tensor:
        """Sum over heads of the scaled dot products of (B, K, F / K) normalised features."""
        with torch.autocast(normalized.device.type, enabled=False):
            w = self.normalized_weight().flatten(-2)
            return F.linear(at_least_fp32(normalized).flatten(-2), w) * (self.tau / self.num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.logits(self.normalized_input(x))

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.num_classes}, num_heads={self.num_heads}, tau={self.tau}, gamma={self.gamma}, norm={self.norm}"


def counterfactual_logits(
    head: CausalNormHead, feats: torch.Tensor, direction: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """TDE logits (Tang et al., NeurIPS'20) and the per-sample, per-head cos(x_k, d_k), (B, K).

    Each head's normalised feature loses ``alpha * cos * d_hat``: the counterfactual input keeps
    only the feature's component along the head direction. A zero direction (no training step
    seen yet) normalises to zero and leaves the logits as they are.
    """
    with torch.autocast(feats.device.type, enabled=False):
        x = head.split(at_least_fp32(feats))
        d_hat = F.normalize(head.split(direction.to(x.dtype)), dim=-1)
        cos = (F.normalize(x, dim=-1) * d_hat).sum(-1)
        return head.logits(head.normalized_input(feats) - alpha * cos.unsqueeze(-1) * d_hat), cos


@torch.no_grad()
def accumulate_direction(direction: torch.Tensor, feats: torch.Tensor, mu: float) -> None:
    """d <- mu * d + mean of the (global) batch's features: TDE's un-normalised head direction.

    Under torch.distributed the per-rank sums and counts are all-reduced in one call, so every
    rank adds the same global batch mean (uneven last batches included) without a host sync.
    """
    stats = torch.cat([feats.float().sum(0), torch.full((1,), feats.shape[0], dtype=torch.float32, device=feats.device)])
    all_reduce_sum(stats)
    direction.mul_(mu).add_(stats[:-1] / stats[-1])
