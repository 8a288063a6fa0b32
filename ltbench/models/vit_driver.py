"""Driving a timm VisionTransformer block by block, from outside the model.

Methods that act between transformer blocks (TSCNet's confounder tokens, prompt tuning) run timm's
own ``patch_embed`` / ``_pos_embed`` / ``blocks`` / ``norm`` here instead of forking the model, so
any timm ViT works and its weights load unchanged. ``attention_maps`` captures each block's
softmax attention with timm's own (non-fused) computation, for attention rollout.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Literal, Optional

import torch
from torch import nn

from ltbench.errors import LTBenchError

Pool = Literal["gap", "cls"]
_PARTS = ("patch_embed", "_pos_embed", "blocks", "norm")


def check_vit(model: nn.Module, name: str = "backbone") -> nn.Module:
    """The model itself when it has the VisionTransformer parts this module drives, else one clear error."""
    missing = [p for p in _PARTS if not hasattr(model, p)]
    if missing:
        raise LTBenchError(
            f"{name} {type(model).__name__} is not a timm VisionTransformer (no {', '.join(missing)}); "
            "this method needs a ViT backbone such as vit_base_patch16_224.augreg_in21k"
        )
    return model


def embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Image (B, C, H, W) -> tokens (B, prefix + patches, D) entering the first block, as timm does."""
    x = model.patch_embed(x)
    x = model._pos_embed(x)
    x = model.patch_drop(x)
    return model.norm_pre(x)


def run_blocks(
    model: nn.Module, tokens: torch.Tensor, extra: Optional[Callable[[int], Optional[torch.Tensor]]] = None
) -> torch.Tensor:
    """Tokens after every block, before the final norm.

    ``extra(i)`` may give (B, M, D) tokens appended to block ``i``'s input only: they take part in
    that block's attention and are dropped from its output, so the sequence length leaving each
    block is the one that entered it (VPT-Deep's mechanics).
    """
    n = tokens.shape[1]
    for i, block in enumerate(model.blocks):
        more = extra(i) if extra is not None else None
        if more is None:
            tokens = block(tokens)
        else:
            tokens = block(torch.cat([tokens, more.to(tokens.dtype)], dim=1))[:, :n]
    return tokens


def pool(model: nn.Module, tokens: torch.Tensor, how: Pool = "gap") -> torch.Tensor:
    """``gap``: mean of the patch tokens before the final norm; ``cls``: the class token after it."""
    if how == "gap":
        return tokens[:, model.num_prefix_tokens :].mean(dim=1)
    if how == "cls":
        return model.norm(tokens)[:, 0]
    raise ValueError(f"pool={how!r}; expected 'gap' or 'cls'")


@contextmanager
def attention_maps(model: nn.Module, mean_heads: bool = False) -> Iterator[list[torch.Tensor]]:
    """Collect each block's attention probabilities (B, heads, N, N) during forwards in this context.

    ``mean_heads`` keeps the head mean (B, N, N) instead, 1/heads of the memory (what rollout uses).

    timm's Attention computes ``softmax(q k^T * scale)`` and feeds it to ``attn_drop`` on its
    non-fused path; the fused flag is turned off for the duration and a hook on ``attn_drop``
    records its input. The flags and hooks are restored on exit.
    """
    maps: list[torch.Tensor] = []
    saved, hooks = [], []
    for block in model.blocks:
        attn = getattr(block, "attn", None)
        if attn is None or not hasattr(attn, "attn_drop") or not hasattr(attn, "fused_attn"):
            raise LTBenchError(f"{type(block).__name__} has no timm Attention with attn_drop: cannot read its attention maps")
        saved.append((attn, attn.fused_attn))
        attn.fused_attn = False
        hooks.append(attn.attn_drop.register_forward_hook(lambda _m, inp, _out: maps.append(_keep(inp[0].detach(), mean_heads))))
    try:
        yield maps
    finally:
        for h in hooks:
            h.remove()
        for attn, fused in saved:
            attn.fused_attn = fused


def _keep(a: torch.Tensor, mean_heads: bool) -> torch.Tensor:
    return a.float().mean(dim=1) if mean_heads else a


def attention_rollout(maps: list[torch.Tensor]) -> torch.Tensor:
    """Joint attention (B, N, N) through all layers: heads averaged, identity added for the residual.

    ``maps`` holds (B, heads, N, N) maps or their head means (B, N, N).

    The form of ``compute_rollout_attention`` in the TSCNet and Transformer-Explainability code:
    R = (A_L + I) ... (A_1 + I), no renormalisation (only relative values are used downstream).
    """
    joint = None
    for a in maps:
        a = a.float().mean(dim=1) if a.ndim == 4 else a.float()
        a = a + torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
        joint = a if joint is None else a @ joint
    if joint is None:
        raise ValueError("no attention maps were recorded")
    return joint


__all__ = ["Pool", "check_vit", "embed", "run_blocks", "pool", "attention_maps", "attention_rollout"]
