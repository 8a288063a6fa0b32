"""Losses shared by several methods: asymmetric loss, focal loss, distribution-balanced loss (multi-label:
logits (B, C) and 0/1 targets (B, C), mean over the B x C entries), and the evidential trusted
cross-entropy (single-label: Dirichlet parameters (B, C) and labels (B,)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss


def asymmetric_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma_neg: float = 4.0,
    gamma_pos: float = 0.0,
    clip: float = 0.05,
    eps: float = 1e-8,
) -> torch.Tensor:
    """ASL (Ridnik et al., ICCV'21) as CPRFL instantiates it; focusing weights carry no gradient.

    With p = sigmoid(s) and p_m = max(p - clip, 0): positives y log(p) (1-p)^gamma_pos, negatives
    (1-y) log(1-p_m) p_m^gamma_neg; mean over entries. gamma = 0 and clip = 0 give BCE.
    """
    y = target.to(logits.dtype)
    p = torch.sigmoid(logits)
    p_neg = (1 - p + clip).clamp(max=1) if clip > 0 else 1 - p
    loss = y * torch.log(p.clamp(min=eps)) + (1 - y) * torch.log(p_neg.clamp(min=eps))
    if gamma_neg > 0 or gamma_pos > 0:
        with torch.no_grad():
            pt = p * y + p_neg * (1 - y)
            weight = torch.pow(1 - pt, gamma_pos * y + gamma_neg * (1 - y))
        loss = loss * weight
    return -loss.mean()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, balance: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss without alpha, scaled by ``balance``: DB-Loss's "FL" setting (gamma 2, balance 2)."""
    return balance * sigmoid_focal_loss(logits, target.to(logits.dtype), alpha=-1, gamma=gamma, reduction="mean")


@dataclass
class DBSettings:
    """Distribution-balanced loss settings; defaults are the published COCO-LT ones (VOC: neg_scale 5, map_gamma 0.3)."""

    map_alpha: float = 0.1
    map_beta: float = 10.0
    map_gamma: float = 0.2
    neg_scale: float = 2.0
    init_bias: float = 0.05
    focal_gamma: float = 2.0
    balance: float = 2.0
    rebalance: bool = True
    focal: bool = True


def rebalance_weight(target: torch.Tensor, class_freq: torch.Tensor, s: DBSettings) -> torch.Tensor:
    """Re-balanced weighting: r_ik = (1/n_i) / sum_{j in y_k} 1/n_j, smoothed as alpha + sigmoid(beta (r - gamma)).

    An image without labels gets r = inf, i.e. weight 1 + alpha, as in the official code.
    """
    freq_inv = 1.0 / class_freq
    repeat_rate = (target * freq_inv).sum(dim=1, keepdim=True)
    r = freq_inv.unsqueeze(0) / repeat_rate
    return torch.sigmoid(s.map_beta * (r - s.map_gamma)) + s.map_alpha


def db_focal_loss(
    logits: torch.Tensor, target: torch.Tensor, class_freq: torch.Tensor, num_train: int, s: Optional[DBSettings] = None
) -> torch.Tensor:
    """DB-Focal (Wu et al., ECCV'20): re-balanced weights + negative-tolerant regularisation + focal.

    Negative-tolerant regularisation as in the official ResampleLoss (and CPRFL's copy, ``dbl.py``):
    class-wise bias b_i = -log(N / n_i - 1) * init_bias / neg_scale added to the logits, then the
    negatives' logits scaled by lambda = neg_scale and their weight by 1/lambda, so a negative costs
    (1/lambda) log(1 + exp(lambda (z + b_i))). The paper's Eq. 9 has no division by neg_scale; the
    authors call it a bug in the code (DBL issue #8) that only rescales kappa = init_bias, so the
    published init_bias 0.05 was tuned with it and is kept here, as in the code behind the numbers.
    """
    s = s or DBSettings()
    y = target.to(logits.dtype)
    weight = rebalance_weight(y, class_freq, s) if s.rebalance else torch.ones_like(logits)
    prior = class_freq / num_train
    z = logits + (s.init_bias / s.neg_scale) * torch.log(prior / (1 - prior).clamp(min=1e-12))
    if s.neg_scale != 1:
        z = z * (1 - y) * s.neg_scale + z * y
        weight = weight / s.neg_scale * (1 - y) + weight * y
    if s.focal:
        loss = s.balance * sigmoid_focal_loss(z, y, alpha=-1, gamma=s.focal_gamma, reduction="none")
    else:
        loss = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    return (loss * weight).mean()


def class_frequencies(counts: Sequence[int]) -> torch.Tensor:
    """Per-class training counts as a float tensor, at least 1 so no class divides by zero."""
    return torch.tensor(list(counts), dtype=torch.float32).clamp(min=1.0)


def dirichlet_kl_to_uniform(alpha: torch.Tensor) -> torch.Tensor:
    """KL(Dir(alpha) || Dir(1, ..., 1)) per row (closed form from log-Gamma and digamma)."""
    k = alpha.shape[-1]
    s = alpha.sum(-1)
    return (
        torch.lgamma(s) - math.lgamma(k) - torch.lgamma(alpha).sum(-1)
        + ((alpha - 1.0) * (torch.digamma(alpha) - torch.digamma(s).unsqueeze(-1))).sum(-1)
    )  # fmt: skip


def trusted_cross_entropy(alpha: torch.Tensor, target: torch.Tensor, kl_weight: float | torch.Tensor = 1.0) -> torch.Tensor:
    """TMC's trusted cross-entropy per sample (B,): the Dirichlet-expected CE sum_k y_k (psi(S) - psi(alpha_k))
    plus ``kl_weight`` * KL(Dir(alpha~) || Dir(1)), alpha~ = y + (1 - y) alpha (the true class's evidence removed).
    Computed in float32 or wider."""
    alpha = alpha.to(torch.promote_types(alpha.dtype, torch.float32))
    y = F.one_hot(target, alpha.shape[-1]).to(alpha.dtype)
    s = alpha.sum(-1)
    expected_ce = (y * (torch.digamma(s).unsqueeze(-1) - torch.digamma(alpha))).sum(-1)
    return expected_ce + kl_weight * dirichlet_kl_to_uniform(y + (1.0 - y) * alpha)
