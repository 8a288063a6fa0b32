"""MaPLe's coupled vision-language prompts (Khattak et al., "MaPLe: Multi-modal Prompt Learning",
CVPR'23), for M prompt sets at once (MaPLe: M = 1; CDC's multimodal variant: one per template).

Per set, layer 0 of the text tower reads ``n_ctx`` learnable context tokens spliced after SOS, and
layers 1 .. depth-1 replace those positions with deeper learnable tokens. The image tower's prompts
are not free parameters: each layer's text prompts go through a linear coupling function
(text width -> vision width), the layer-0 result is appended to the patch tokens and the deeper ones
replace it at their layers. This keeps the two towers' prompts tied, which is MaPLe's point.

Initialisation follows MaPLe's official code: deeper text prompts N(0, 0.02); the couplings are
``nn.Linear``'s default init, and the deeper layers' couplings start as copies of one Linear
(``_get_clones``), while layer 0's has its own.

``coupling="none"`` is the MaPLe paper's own baseline, Independent V-L Prompting (the official code's
``IVLP`` trainer): the vision prompts are free parameters of their own, N(0, 0.02) as VPT-deep's, and
nothing ties them to the text prompts.
"""

from __future__ import annotations

import math
from typing import Literal, Optional

import torch
from torch import nn

from ltbench.errors import LTBenchError


class MultimodalPrompts(nn.Module):
    """M sets of deep text prompts and the couplings that make their vision prompts.

    Shapes: ``text_prompts()`` (M, depth, n_ctx, text width), ``vision_prompts()`` (M, depth, n_ctx,
    vision width); index 0 is the input layer's, index i the prompts layer i starts from.
    """

    def __init__(
        self,
        context: torch.Tensor,
        depth: int,
        vision_width: int,
        deep_std: float = 0.02,
        coupling: Literal["linear", "none"] = "linear",
        generator: Optional[torch.Generator] = None,
    ) -> None:
        """
        Args:
            context: (M, n_ctx, W) layer-0 text prompts (from hand-crafted words, see ``FrozenCLIP.maple_context``).
            depth: layers that get prompts, counted from the input (MaPLe: 9 of ViT-B/16's 12).
            vision_width: the image tower's width (the couplings' output).
            deep_std: std of the deeper text prompts' normal init (MaPLe: 0.02), and of the free vision prompts.
            coupling: ``linear`` (MaPLe: vision prompts = Linear_j(text prompts of layer j)) or ``none``
                (Independent V-L Prompting: vision prompts of their own).
        """
        super().__init__()
        if context.dim() != 3:
            raise LTBenchError(f"multimodal prompts: context of shape {tuple(context.shape)}; expected (sets, n_ctx, width)")
        if depth < 1:
            raise LTBenchError(f"prompt_depth={depth}; expected at least 1 (the input layer)")
        if coupling not in ("linear", "none"):
            raise LTBenchError(f"multimodal prompts: coupling={coupling!r}; expected linear (MaPLe) or none (independent V-L prompts)")
        m, n_ctx, width = context.shape
        self.depth, self.n_ctx, self.coupling = depth, n_ctx, coupling
        self.context = nn.Parameter(context.detach().clone().float())
        deep = torch.empty(m, depth - 1, n_ctx, width).normal_(0.0, deep_std, generator=generator)
        self.deep_text = nn.Parameter(deep)
        if coupling == "none":
            self.vision = nn.Parameter(torch.empty(m, depth, n_ctx, vision_width).normal_(0.0, deep_std, generator=generator))
            return
        bound = 1.0 / math.sqrt(width)  # nn.Linear's default init: kaiming_uniform(a=sqrt(5)) and its bias rule

        def linear(copies: int) -> tuple[torch.Tensor, torch.Tensor]:
            w = torch.empty(m, 1, vision_width, width).uniform_(-bound, bound, generator=generator)
            b = torch.empty(m, 1, vision_width).uniform_(-bound, bound, generator=generator)
            return w.expand(m, copies, vision_width, width), b.expand(m, copies, vision_width)

        first_w, first_b = linear(1)
        deep_w, deep_b = linear(depth - 1)
        self.coupling_weight = nn.Parameter(torch.cat([first_w, deep_w], dim=1).contiguous())  # (M, depth, Wv, W)
        self.coupling_bias = nn.Parameter(torch.cat([first_b, deep_b], dim=1).contiguous())  # (M, depth, Wv)

    @property
    def num_sets(self) -> int:
        return int(self.context.shape[0])

    def text_prompts(self) -> torch.Tensor:
        return torch.cat([self.context.unsqueeze(1), self.deep_text], dim=1)

    def vision_prompts(self) -> torch.Tensor:
        """Each layer's text prompts through its own coupling Linear (or, uncoupled, the free vision prompts)."""
        if self.coupling == "none":
            return self.vision
        return torch.einsum("mjnw,mjvw->mjnv", self.text_prompts(), self.coupling_weight) + self.coupling_bias.unsqueeze(2)

    def extra_repr(self) -> str:
        m, _, w = self.context.shape
        wv = self.vision.shape[-1] if self.coupling == "none" else self.coupling_weight.shape[2]
        return f"sets={m}, depth={self.depth}, n_ctx={self.n_ctx}, text_width={w}, vision_width={wv}, coupling={self.coupling}"


__all__ = ["MultimodalPrompts"]
