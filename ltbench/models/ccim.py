"""CCIM, the feature-level backdoor adjustment over a confounder dictionary (Yang et al., CVPR'23).

For a feature f and dictionary rows z_j with prior P(z_j), g(f) = sum_j a_j P(z_j) z_j, where the
attention a over the K rows is additive, softmax_j(w_t^T tanh(W_q f + W_k z_j)), or scaled
dot-product, softmax_j(W_q f . W_k z_j / sqrt(D_z)). The module returns g(f) only: the caller adds
it to f. The prior multiplies inside the sum after the softmax, without renormalisation.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

Strategy = Literal["additive", "dot"]


class CCIM(nn.Module):
    """g(f) for features (B, D) against a dictionary (K, D_z) with prior (K,).

    ``hidden`` is the projection width (256 in the released code, hard-coded there). Projections
    have no bias; ``w_t`` neither, since a constant shift does not change a softmax.
    """

    def __init__(self, dim: int, dict_dim: int, hidden: int = 256, strategy: Strategy = "additive") -> None:
        super().__init__()
        if strategy not in ("additive", "dot"):
            raise ValueError(f"strategy={strategy!r}; expected 'additive' or 'dot'")
        self.strategy, self.dict_dim = strategy, dict_dim
        self.query = nn.Linear(dim, hidden, bias=False)
        self.key = nn.Linear(dict_dim, hidden, bias=False)
        self.score = nn.Linear(hidden, 1, bias=False) if strategy == "additive" else None

    def attention(self, f: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """a (B, K): each sample's softmax over the dictionary rows."""
        q, k = self.query(f), self.key(z)
        if self.score is not None:
            e = self.score(torch.tanh(q.unsqueeze(1) + k.unsqueeze(0))).squeeze(-1)
        else:
            e = q @ k.t() / math.sqrt(self.dict_dim)
        return e.softmax(dim=-1)

    def forward(self, f: torch.Tensor, z: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        a = self.attention(f, z)
        return a @ (prior.to(z.dtype).unsqueeze(-1) * z).to(a.dtype)

    def extra_repr(self) -> str:
        return f"strategy={self.strategy}"


__all__ = ["CCIM", "Strategy"]
