"""CPRFL (Yan, Huang, Mu, Huangfu, Liu; ACM MM'24): category-prompt refined feature learning.

Class prompts start from CLIP text embeddings ("a photo of a {name}." through the text tower,
not normalised) mapped by a small prompt-initialisation network P = PI(t) in R^{C x D}. The
backbone's last feature map becomes visual tokens (a token-wise linear layer), and one
visual-semantic interaction layer runs self-attention over [visual tokens; prompts]. The output
at prompt position c, V_c, is class c's visual representation, scored against its own prompt:

    s_{b,c} = < V_{b,c}, P_c >

so the loss reaches the prompts, and through them PI and the text tower, along two paths
("dual-path back-propagation"): as classifier weights (P_c in the dot product) and as input tokens
(through the interaction layer). ``detach_classifier_path`` / ``detach_feature_path`` are the
released code's ablation switches (``no_cls_grad`` detaches P in the dot product, ``no_feature_grad``
detaches V, which also stops every gradient into the backbone, as released).

Multi-label data: asymmetric loss (gamma- 4, gamma+ 0, margin 0.05, mean). Single-label data: softmax
cross-entropy over the same scores (ltbench's addition, not in the paper). The reported model is
the per-step weight EMA (decay 0.998), through Lightning's ``WeightAveraging``: validation swaps the
averaged weights in, training ends with them copied into the model (so the test after fit and the
run record use them), and checkpoints hold them as ``state_dict``.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import WeightAveraging
from torch.optim.swa_utils import get_ema_multi_avg_fn

from ltbench.losses import asymmetric_loss
from ltbench.methods.base import LTMethod
from ltbench.models.clip_text import DEFAULT_TEMPLATE, describe
from ltbench.models.prompt_heads import CategoryPromptHead


class ModelEMA(WeightAveraging):
    """EMA of every parameter and buffer (BN statistics included, as the released ``ModelEma``), updated
    after every optimiser step: torch's ``AveragedModel`` with ``get_ema_multi_avg_fn``.

    Outside fit there is nothing to restore: a checkpoint's ``state_dict`` already holds the averaged
    weights, so loading one for test/validate/predict is silent rather than warning.
    """

    def __init__(self, decay: float = 0.998) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay={decay}; expected a value in (0, 1), or null for no EMA")
        super().__init__(use_buffers=True, multi_avg_fn=get_ema_multi_avg_fn(decay))
        self.decay = decay

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        if self._average_model is not None:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)


class CPRFL(LTMethod):
    """Category prompts from CLIP text, refined by dual-path back-propagation; score s_c = <V_c, P_c>."""

    def __init__(
        self,
        text_model: str = "RN50",
        text_pretrained: Optional[str] = None,
        quick_gelu: Optional[bool] = None,
        template: str = DEFAULT_TEMPLATE,
        freeze_text: bool = False,
        dim: Optional[int] = None,
        expand: float = 0.5,
        heads: int = 8,
        dim_head: int = 512,
        mlp_dim: int = 2048,
        dropout: float = 0.1,
        residual: bool = False,
        detach_classifier_path: bool = False,
        detach_feature_path: bool = False,
        gamma_neg: float = 4.0,
        gamma_pos: float = 0.0,
        clip: float = 0.05,
        ema_decay: Optional[float] = 0.998,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            text_model: open_clip model whose text tower gives the class semantics (RN50: 1024-d).
            text_pretrained: open_clip tag (``openai``; downloads), a local checkpoint file, or None (random).
            quick_gelu: None follows the tag; true for OpenAI weights loaded from a file.
            template: sentence per class; underscores in class names become spaces.
            freeze_text: freeze the text tower and compute the class embeddings once (released: trainable).
            dim: prompt / token width D (default: the backbone's feature size, 2048 for ResNet-101).
            expand: PI hidden width = int(D * expand).
            heads, dim_head, mlp_dim, dropout: the interaction layer (released 8, 512, 2048, 0.1).
            residual: add residual connections (released: none).
            detach_classifier_path: stop the gradient into P through the dot product (``no_cls_grad``).
            detach_feature_path: stop the gradient through the interaction output V (``no_feature_grad``).
            gamma_neg, gamma_pos, clip: asymmetric loss (multi-label data).
            ema_decay: per-step weight EMA evaluated as the model; null trains and reports raw weights.
        """
        super().__init__(**kwargs)
        if ema_decay is not None:
            ModelEMA(ema_decay)  # refuse a bad decay now rather than when fit starts
        self.head = CategoryPromptHead(
            self.class_names, self.backbone.num_features, dim, text_model, text_pretrained, quick_gelu, template,
            freeze_text, expand, heads, dim_head, mlp_dim, dropout, residual, detach_classifier_path, detach_feature_path,
        )  # fmt: skip
        self.gamma_neg, self.gamma_pos, self.clip = gamma_neg, gamma_pos, clip
        self.ema_decay = ema_decay
        if freeze_text:  # the base then keeps it frozen (and in eval mode) whatever a stage does
            self.freeze = (*self.freeze, "head.text_encoder")

    def forward_parts(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """tokens (B, N, D), prompts (C, D), features V (B, C, D) and logits (B, C)."""
        return self.head.forward_parts(self.backbone.forward_features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.forward_features(x))

    def training_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.task == "multiclass":
            return F.cross_entropy(logits, target)
        return asymmetric_loss(logits, target, self.gamma_neg, self.gamma_pos, self.clip)

    # ---- evaluation weights ----------------------------------------------------------------------
    def configure_callbacks(self) -> list[Any]:
        return [ModelEMA(self.ema_decay)] if self.ema_decay else []

    def method_protocol(self) -> dict[str, Any]:
        hp = self.hparams
        return {
            **describe(self.head.text_encoder),
            "text_pretrained": hp.get("text_pretrained"),
            "prompt_dim": self.head.dim,
            "interaction": {
                "heads": hp.get("heads"),
                "dim_head": hp.get("dim_head"),
                "mlp_dim": hp.get("mlp_dim"),
                "dropout": hp.get("dropout"),
                "residual": hp.get("residual"),
            },
            "gradient_paths": {"classifier": not self.head.detach_classifier_path, "feature": not self.head.detach_feature_path},
            "loss": "softmax CE over scores (ltbench)" if self.task == "multiclass"
            else f"ASL(gamma-={self.gamma_neg}, gamma+={self.gamma_pos}, clip={self.clip}, mean)",
            "evaluated_weights": f"EMA, decay {self.ema_decay} per step, buffers included" if self.ema_decay else "final",
        }


__all__ = ["CPRFL", "ModelEMA"]
