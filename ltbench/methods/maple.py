"""MaPLe: Khattak, Rasheed, Maaz, Khan, Khan, "MaPLe: Multi-modal Prompt Learning", CVPR'23
(official code: github.com/muzairkhattak/multimodal-prompt-learning). The baseline CDC's tables compare
against; see docs/methods/maple.md.

Deep text prompts in the first ``prompt_depth`` layers of the frozen text tower, and vision prompts in
the same layers of the frozen image tower made from them by per-layer linear couplings
(``models/multimodal_prompts.py``); CLIP's cosine logits, plain cross-entropy.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from ltbench.methods.clip_prompt import CLIPPromptMethod

#: MaPLe's CTX_INIT ("a photo of a"): with n_ctx 2, "a photo" is learned and "of a" stays in the sentence
MAPLE_INIT = "a photo of a {}."


class MaPLe(CLIPPromptMethod):
    """One set of coupled multimodal prompts, trained with cross-entropy."""

    def __init__(
        self,
        n_ctx: int = 2,
        context_init: str = MAPLE_INIT,
        prompt_depth: int = 9,
        coupling: Literal["linear", "none"] = "linear",
        **kwargs: Any,
    ) -> None:
        """
        Args:
            n_ctx: context tokens per layer (MaPLe: 2).
            context_init: template whose first n_ctx tokens initialise the context; its remaining words stay
                fixed in the sentence (MaPLe's code).
            prompt_depth: layers of each tower with prompts, from the input (MaPLe: 9; 1 = the input layer only).
            coupling: ``linear`` (MaPLe's vision-language coupling) or ``none``: the paper's own baseline,
                Independent V-L Prompting (official IVLP trainer; its config prompts all 12 layers).
        """
        super().__init__(**kwargs)
        self.init_multimodal_prompts([context_init], n_ctx, prompt_depth, coupling)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cosine_logits(self.template_image_features(x)[0], self.template_text()[0])

    def method_protocol(self) -> dict[str, Any]:
        hp = self.hparams
        return {
            **super().method_protocol(),
            "prompts": f"MaPLe: {hp.get('n_ctx')} tokens x depth {hp.get('prompt_depth')}, "
            + ("text -> vision linear couplings" if self.prompts.coupling == "linear" else "independent vision prompts (IVLP)")
            + ", CE",
            "sentence": f"{' '.join(['<ctx>'] * int(hp.get('n_ctx')))} {self.sentences[0]}",
            "context_init": hp.get("context_init"),
        }


__all__ = ["MaPLe", "MAPLE_INIT"]
