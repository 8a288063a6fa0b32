"""Subjective-logic opinions from evidence and Dempster's rule of combination (Han et al., TMC, ICLR'21).

For K classes, evidence e >= 0 gives a Dirichlet alpha = e + 1 with strength S = sum(alpha), belief
b = e / S and uncertainty u = K / S, so sum(b) + u = 1. Two opinions combine as

    C = sum_{i != j} b1_i b2_j,   b = (b1 b2 + b1 u2 + b2 u1) / (1 - C),   u = u1 u2 / (1 - C),

folded over the views in a fixed order. The maths runs in float32 or wider whatever the autocast
dtype; 1 - C is computed as sum_k b1_k b2_k + u1 + u2 - u1 u2 (equal, as sum(b) = 1 - u, but free of
cancellation) and clamped away from 0, so strongly conflicting opinions cannot divide by zero.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

EvidenceFn = Literal["softplus", "exp", "relu"]


class Opinion(NamedTuple):
    """Belief masses (..., K) and uncertainty mass (...,)."""

    belief: torch.Tensor
    uncertainty: torch.Tensor

    @property
    def num_classes(self) -> int:
        return self.belief.shape[-1]

    def alpha(self) -> torch.Tensor:
        """Dirichlet parameters: S = K / u, e = b S, alpha = e + 1."""
        strength = self.num_classes / self.uncertainty
        return self.belief * strength.unsqueeze(-1) + 1.0


def _wide(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32))


def evidence(logits: torch.Tensor, fn: EvidenceFn = "softplus", temperature: float = 1.0, clamp: float = 10.0) -> torch.Tensor:
    """Non-negative evidence from logits / temperature: softplus, ReLU, or exp of the logits clamped to
    [-clamp, clamp] (without the clamp, exp of CLIP's logits at scale 100 overflows and u -> 0)."""
    z = _wide(logits) / temperature
    if fn == "softplus":
        return F.softplus(z)
    if fn == "relu":
        return F.relu(z)
    if fn == "exp":
        return torch.exp(z.clamp(-clamp, clamp))
    raise ValueError(f"evidence function {fn!r}; expected softplus, exp or relu")


def opinion_from_evidence(e: torch.Tensor) -> Opinion:
    e = _wide(e)
    strength = (e + 1.0).sum(dim=-1)
    return Opinion(e / strength.unsqueeze(-1), e.shape[-1] / strength)


def combine(a: Opinion, b: Opinion, min_normaliser: float = 1e-6) -> Opinion:
    """Dempster's rule for two opinions; 1 - C is clamped to at least ``min_normaliser``."""
    b1, u1, b2, u2 = _wide(a.belief), _wide(a.uncertainty), _wide(b.belief), _wide(b.uncertainty)
    # 1 - C with C = sum_{i != j} b1_i b2_j = (1 - u1)(1 - u2) - sum_k b1_k b2_k, written as a sum of
    # non-negative terms so that near-total conflict does not cancel catastrophically
    norm = ((b1 * b2).sum(-1) + u1 + u2 - u1 * u2).clamp_min(min_normaliser)
    belief = (b1 * b2 + b1 * u2.unsqueeze(-1) + b2 * u1.unsqueeze(-1)) / norm.unsqueeze(-1)
    return Opinion(belief, u1 * u2 / norm)


def fuse(opinions: Opinion, min_normaliser: float = 1e-6) -> Opinion:
    """Fold Dempster's rule over the leading (view) dimension of stacked opinions, view 0 first."""
    out = Opinion(opinions.belief[0], opinions.uncertainty[0])
    for m in range(1, opinions.belief.shape[0]):
        out = combine(out, Opinion(opinions.belief[m], opinions.uncertainty[m]), min_normaliser)
    return out


__all__ = ["Opinion", "EvidenceFn", "evidence", "opinion_from_evidence", "combine", "fuse"]
