"""Prompt learning on a frozen CLIP: the shared base, zero-shot CLIP, CoOp (Zhou et al., IJCV'22) and
CoCoOp (Zhou et al., CVPR'22).

The methods score classes by name, so they can be tested on classes they never trained on
(base-to-new): the data module's class sets are handed over at test time and each set's text
embeddings are computed for it (the hand-crafted t0 once per set; learned prompts once per
evaluation epoch and set, and every training step for the training classes). Logits are CLIP's:
the model's logit scale times the cosine of image and class embeddings.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ltbench.errors import LTBenchError
from ltbench.methods.base import LTMethod
from ltbench.models.clip_prompt import FrozenCLIP
from ltbench.models.clip_text import DEFAULT_TEMPLATE, class_prompts
from ltbench.models.multimodal_prompts import MultimodalPrompts


class CLIPPromptMethod(LTMethod):
    """Base of CLIP prompt learners: frozen towers, class sets, t0 and learnable-context text embeddings."""

    tasks = ("multiclass",)
    open_vocabulary = True

    def __init__(
        self,
        clip_model: str = "ViT-B-16",
        clip_pretrained: Optional[str] = "openai",
        quick_gelu: Optional[bool] = None,
        template: str = DEFAULT_TEMPLATE,
        logit_scale: Optional[float] = None,
        backbone: Optional[str] = None,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            clip_model: open_clip model name (``ViT-B-16``; ``ltbench-tiny-clip`` for tests and Digits).
            clip_pretrained: open_clip tag (``openai``; downloads once), a local checkpoint file, or null (random towers).
            quick_gelu: null follows the tag; true for OpenAI weights loaded from a file.
            template: the hand-crafted prompt t0 ("a photo of a {}.").
            logit_scale: multiplier of the cosine logits; null takes the model's own (100 for OpenAI's).
            backbone: must stay null: the image tower is the CLIP model's.
        """
        if backbone:
            raise LTBenchError(f"{type(self).__name__}: the image tower is the CLIP model's (clip_model); model.init_args.backbone must be null")
        super().__init__(backbone=None, **kwargs)
        self.clip = FrozenCLIP(clip_model, clip_pretrained, quick_gelu)
        self.template = template
        self.logit_scale = float(logit_scale) if logit_scale is not None else self.clip.logit_scale
        self.freeze = (*self.freeze, "clip")
        self.contexts: Optional[nn.Parameter] = None
        self.prompts: Optional[MultimodalPrompts] = None
        self.sentences: tuple[str, ...] = ("{}.",)
        self._class_sets: list[list[str]] = [list(self.class_names)]
        self._active = 0
        self._t0: dict[tuple[str, ...], torch.Tensor] = {}
        self._eval_text: dict[int, torch.Tensor] = {}

    def init_contexts(self, templates: list[str], n_ctx: int) -> None:
        """M learnable contexts (M, n_ctx, W), the m-th initialised from ``templates[m]``'s words."""
        if n_ctx < 1:
            raise LTBenchError(f"{type(self).__name__}: n_ctx={n_ctx}; expected at least one context token")
        self.contexts = nn.Parameter(torch.stack([self.clip.context_from_template(t, n_ctx) for t in templates]))

    def init_multimodal_prompts(self, templates: list[str], n_ctx: int, depth: int, coupling: str = "linear") -> None:
        """M sets of MaPLe prompts (text and coupled vision prompts in the first ``depth`` layers), the m-th
        initialised from ``templates[m]`` as MaPLe's code does (its first n_ctx tokens learnable, the rest
        fixed words of the sentence); ``coupling: none`` leaves the vision prompts free (independent V-L prompts)."""
        if n_ctx < 1:
            raise LTBenchError(f"{type(self).__name__}: n_ctx={n_ctx}; expected at least one context token")
        self.clip.check_prompt_depth(depth)
        inits = [self.clip.maple_context(t, n_ctx) for t in templates]
        self.sentences = tuple(sentence for _, sentence in inits)
        self.prompts = MultimodalPrompts(torch.stack([ctx for ctx, _ in inits]), depth, self.clip.vision_width, coupling=coupling)

    # ---- class sets ------------------------------------------------------------------------------
    def use_class_sets(self, class_sets: list[list[str]]) -> None:
        self._class_sets = [list(s) for s in class_sets]
        self._eval_text.clear()
        self._active = 0

    def activate_class_set(self, index: int) -> None:
        self._active = index

    @property
    def active_classes(self) -> list[str]:
        return self._class_sets[self._active]

    def train(self, mode: bool = True) -> "CLIPPromptMethod":
        super().train(mode)
        self._eval_text.clear()  # contexts may change from here on
        return self

    # ---- embeddings ------------------------------------------------------------------------------
    def t0_text(self) -> torch.Tensor:
        """Normalised embeddings (C, E) of the hand-crafted t0 for the active class set, computed once per set."""
        names = tuple(self.active_classes)
        cached = self._t0.get(names)
        if cached is None or cached.device != self.device:
            cached = F.normalize(self.clip.encode_texts(class_prompts(names, self.template)), dim=-1)
            self._t0[names] = cached
        return cached

    def template_text(self) -> torch.Tensor:
        """Normalised embeddings (M, C, E) of the learnable templates for the active class set; in
        evaluation computed once per class set (no gradient), in training every step."""
        if self.training:
            return self._encode_templates()
        if self._active not in self._eval_text:
            with torch.no_grad():
                self._eval_text[self._active] = self._encode_templates()
        return self._eval_text[self._active]

    def _encode_templates(self) -> torch.Tensor:
        if self.prompts is not None:
            p = self.prompts
            text = self.clip.encode_with_context(p.context, self.active_classes, self.sentences, deep=p.deep_text)
        elif self.contexts is not None:
            text = self.clip.encode_with_context(self.contexts, self.active_classes)
        else:
            raise LTBenchError(f"{type(self).__name__} has no learnable templates")
        return F.normalize(text, dim=-1)

    def image_features(self, x: torch.Tensor, fitted: bool = False) -> torch.Tensor:
        return F.normalize(self.clip.encode_image(x, fitted), dim=-1)

    def template_image_features(self, x: torch.Tensor, fitted: bool = False) -> torch.Tensor:
        """Normalised image embeddings per template, (M, B, E); (1, B, E) when the image tower takes no
        prompts and ``x`` (B, ...) is one view for all. ``x``: (B, C, H, W), or (M, B, C, H, W) one view per
        template."""
        if self.prompts is not None:
            return F.normalize(self.clip.encode_image_with_prompts(x, self.prompts.vision_prompts(), fitted), dim=-1)
        if x.dim() == 5:
            return self.image_features(x.flatten(0, 1), fitted).view(x.shape[0], x.shape[1], -1)
        return self.image_features(x, fitted).unsqueeze(0)

    def cosine_logits(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """scale * cos: image (..., B, E) against text (..., C, E) -> (..., B, C), in float32 also under autocast
        (with CLIP's scale 100, bf16 logits of 20-35 would sit on a grid of 0.125-0.25)."""
        with torch.autocast(image.device.type, enabled=False):
            return self.logit_scale * image.float() @ text.float().transpose(-1, -2)

    # ---- optimiser -------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        if not any(p.requires_grad for p in self.parameters()):
            return None  # zero-shot: nothing to train
        return super().configure_optimizers()

    # ---- record ----------------------------------------------------------------------------------
    def method_protocol(self) -> dict[str, Any]:
        hp = self.hparams
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad and not _is_tower(p, self.clip))
        return {
            "backbone": f"{self.clip.model_name} (CLIP image tower, frozen)",
            "pretrained": hp.get("clip_pretrained") or False,
            "clip": {
                "model": self.clip.model_name,
                "pretrained": hp.get("clip_pretrained"),
                "weights_file": self.clip.weights_file,
                "input_size": list(self.clip.image_size),
                "logit_scale": self.logit_scale,
                "frozen_params": self.clip.num_params(),
            },
            "t0": self.template,
            "trainable_params": trainable,
            "checkpoint_holds": "prompt parameters only (the frozen towers are rebuilt from clip_model/clip_pretrained)",
        }


def _is_tower(p: torch.Tensor, clip: FrozenCLIP) -> bool:
    return any(p is q for q in clip.parameters())


class ZeroShotCLIP(CLIPPromptMethod):
    """Zero-shot CLIP: the hand-crafted t0 alone, nothing trained. ``fit`` runs no optimiser step (its
    epochs only validate); ``test`` needs no checkpoint."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cosine_logits(self.image_features(x), self.t0_text())

    def training_step(self, batch: Any, batch_idx: int) -> None:
        return None

    def method_protocol(self) -> dict[str, Any]:
        return {**super().method_protocol(), "prompts": "t0 only (zero-shot)"}


class CoOp(CLIPPromptMethod):
    """CoOp: one learnable context of ``n_ctx`` tokens shared by all classes, plain cross-entropy."""

    def __init__(self, n_ctx: int = 4, context_init: str = DEFAULT_TEMPLATE, **kwargs: Any) -> None:
        """
        Args:
            n_ctx: context tokens (CoOp: 4 with "a photo of a" init, or 16 random).
            context_init: template whose words before ``{}`` initialise the context (last tokens; the rest N(0, 0.02)).
        """
        super().__init__(**kwargs)
        self.init_contexts([context_init], n_ctx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cosine_logits(self.image_features(x), self.template_text()[0])

    def method_protocol(self) -> dict[str, Any]:
        hp = self.hparams
        return {**super().method_protocol(), "prompts": f"CoOp: 1 context of {hp.get('n_ctx')} tokens, init {hp.get('context_init')!r}, CE"}


class CoCoOp(CLIPPromptMethod):
    """CoCoOp (Zhou et al., CVPR'22): CoOp's context plus an image-conditioned shift pi(x) from a small
    meta-net (Linear(E -> E / ratio), ReLU, Linear(-> W)) of the normalised image feature, added to every
    context token. Each image has its own prompts, so the text tower runs on B * C sequences per step
    and at evaluation (nothing to cache): CoCoOp's own cost."""

    def __init__(self, n_ctx: int = 4, context_init: str = DEFAULT_TEMPLATE, meta_ratio: int = 16, **kwargs: Any) -> None:
        """
        Args:
            n_ctx: context tokens (CoCoOp: 4, "a photo of a" init).
            context_init: template whose words before ``{}`` initialise the context.
            meta_ratio: the meta-net's bottleneck, E / meta_ratio (CoCoOp: 16).
        """
        super().__init__(**kwargs)
        self.init_contexts([context_init], n_ctx)
        e = self.clip.embed_dim
        hidden = max(1, e // meta_ratio)
        self.meta_net = nn.Sequential(nn.Linear(e, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, self.clip.width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = self.image_features(x)
        context = self.contexts[0].unsqueeze(0) + self.meta_net(image).unsqueeze(1)  # (B, n_ctx, W)
        text = F.normalize(self.clip.encode_with_context(context, self.active_classes), dim=-1)  # (B, C, E)
        return self.logit_scale * torch.einsum("be,bce->bc", image.float(), text.float())

    def method_protocol(self) -> dict[str, Any]:
        hp = self.hparams
        return {**super().method_protocol(), "prompts": f"CoCoOp: 1 context of {hp.get('n_ctx')} tokens + meta-net shift (E/{hp.get('meta_ratio')}), CE"}


__all__ = ["CLIPPromptMethod", "ZeroShotCLIP", "CoOp", "CoCoOp"]
