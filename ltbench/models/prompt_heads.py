"""Category-prompt heads (CPRFL, Yan et al., ACM MM'24) and their pieces, reusable by other prompt methods.

``PromptInit`` maps class text embeddings to prompts in the visual width; ``InteractionBlock`` is
the one-layer "Transformer" over [visual tokens; class prompts] as CPRFL's released code has it:
pre-norm attention then pre-norm MLP, without positional embeddings and, by default, without
residual connections (the released ``Transformer.forward`` is ``x = attn(x); x = ff(x)``).
``CategoryPromptHead`` puts them together over a backbone's tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ltbench.models.clip_text import DEFAULT_TEMPLATE, CLIPTextEncoder


class PromptInit(nn.Sequential):
    """Prompt initialisation: Linear(text_dim -> hidden) -> GELU -> Linear(hidden -> dim), hidden = int(dim * expand)."""

    def __init__(self, text_dim: int, dim: int, expand: float = 0.5) -> None:
        hidden = int(dim * expand)
        if hidden < 1:
            raise ValueError(f"expand={expand} gives a hidden width of {hidden} for dim={dim}")
        super().__init__(nn.Linear(text_dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class PreNormAttention(nn.Module):
    """LayerNorm, then multi-head self-attention over all tokens (no mask), bias-free qkv, scale dim_head^-0.5.

    The output projection (with dropout) is skipped when one head spans the whole width, as in
    the vit-pytorch ``Attention`` CPRFL copies. Attention weights themselves get no dropout.
    """

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 512, dropout: float = 0.1) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * inner, bias=False)
        project = not (heads == 1 and dim_head == dim)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout)) if project else nn.Identity()

    def forward(self, x: torch.Tensor, last: Optional[int] = None) -> torch.Tensor:
        """(B, N, D) -> (B, N, D); with ``last``, only the last ``last`` positions' outputs (their queries
        against every key): the rows the full output would have there, without computing the others."""
        b, n, _ = x.shape
        h = self.norm(x)
        if last is None:
            q, k, v = self.to_qkv(h).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        else:
            w_q, w_kv = self.to_qkv.weight.split([self.to_qkv.out_features // 3, 2 * self.to_qkv.out_features // 3])
            q = F.linear(h[:, n - last :], w_q).view(b, last, self.heads, -1).transpose(1, 2)
            k, v = F.linear(h, w_kv).view(b, n, 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, q.shape[2], -1))


class PreNormFeedForward(nn.Sequential):
    """LayerNorm -> Linear(dim -> hidden) -> GELU -> Dropout -> Linear(hidden -> dim) -> Dropout."""

    def __init__(self, dim: int, hidden: int = 2048, dropout: float = 0.1) -> None:
        super().__init__(
            nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )


class InteractionBlock(nn.Module):
    """One attention + MLP layer over a token sequence; ``residual=True`` adds x back after each (a standard pre-LN block)."""

    def __init__(
        self,
        dim: int,
        heads: int = 8,
        dim_head: int = 512,
        mlp_dim: int = 2048,
        dropout: float = 0.1,
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.attn = PreNormAttention(dim, heads, dim_head, dropout)
        self.ff = PreNormFeedForward(dim, mlp_dim, dropout)
        self.residual = residual

    def forward(self, x: torch.Tensor, last: Optional[int] = None) -> torch.Tensor:
        """``last``: compute only the last ``last`` positions' outputs (a one-layer block's other rows
        depend on nothing they feed), e.g. CPRFL's prompt positions, the only ones its score reads."""
        if self.residual:
            x = (x if last is None else x[:, x.shape[1] - last :]) + self.attn(x, last)
            return x + self.ff(x)
        return self.ff(self.attn(x, last))

    def extra_repr(self) -> str:
        return f"residual={self.residual}"


class CategoryPromptHead(nn.Module):
    """CPRFL's head: backbone tokens (B, N, F) -> scores s_{b,c} = <V_{b,c}, P_c> (B, C).

    P = PI(text embeddings of the class names), (C, D); the tokens go through a token-wise
    Linear(F -> D); one ``InteractionBlock`` runs over [tokens; P] and its last C outputs are V.
    The gradient reaches P along two paths, as classifier weights and as interaction inputs;
    ``detach_classifier_path`` detaches P in the dot product, ``detach_feature_path`` detaches V
    (which, as released, also cuts every gradient into the interaction, the projection and the backbone).
    """

    def __init__(
        self,
        class_names: Sequence[str],
        feat_dim: int,
        dim: Optional[int] = None,
        text_model: str = "RN50",
        text_pretrained: Optional[Union[str, Path]] = None,
        quick_gelu: Optional[bool] = None,
        template: str = DEFAULT_TEMPLATE,
        freeze_text: bool = False,
        expand: float = 0.5,
        heads: int = 8,
        dim_head: int = 512,
        mlp_dim: int = 2048,
        dropout: float = 0.1,
        residual: bool = False,
        detach_classifier_path: bool = False,
        detach_feature_path: bool = False,
    ) -> None:
        super().__init__()
        self.dim = int(dim or feat_dim)
        self.text_encoder = CLIPTextEncoder(class_names, text_model, text_pretrained, template, quick_gelu, trainable=not freeze_text)
        self.prompt_init = PromptInit(self.text_encoder.output_dim, self.dim, expand)
        self.visual_proj = nn.Linear(feat_dim, self.dim)
        self.interaction = InteractionBlock(self.dim, heads, dim_head, mlp_dim, dropout, residual)
        self.detach_classifier_path = detach_classifier_path
        self.detach_feature_path = detach_feature_path

    def prompts(self) -> torch.Tensor:
        """P = PI(text embeddings), (C, D); the same for every image."""
        return self.prompt_init(self.text_encoder())

    def forward_parts(self, feature_tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """tokens (B, N, D), prompts (C, D), features V (B, C, D) and logits (B, C)."""
        tokens = self.visual_proj(feature_tokens)
        prompts = self.prompts()
        b, c = tokens.shape[0], prompts.shape[0]
        seq = torch.cat([tokens, prompts.to(tokens.dtype).unsqueeze(0).expand(b, c, -1)], dim=1)
        feats = self.interaction(seq, last=c)
        return {"tokens": tokens, "prompts": prompts, "features": feats, "logits": self.score(feats, prompts)}

    def score(self, feats: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        """s_{b,c} = <V_{b,c}, P_c> in float32 (unbounded dot products; no norm, temperature or bias)."""
        v = feats.detach() if self.detach_feature_path else feats
        p = prompts.detach() if self.detach_classifier_path else prompts
        with torch.autocast(v.device.type, enabled=False):
            return torch.einsum("bcd,cd->bc", v.float(), p.float())

    def forward(self, feature_tokens: torch.Tensor) -> torch.Tensor:
        return self.forward_parts(feature_tokens)["logits"]


__all__ = ["PromptInit", "PreNormAttention", "PreNormFeedForward", "InteractionBlock", "CategoryPromptHead"]
