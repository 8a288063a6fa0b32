"""A frozen open_clip model (image and text towers) with prompt-able text encoding, for prompt learners
(zero-shot CLIP, CoOp, CoCoOp, CDC, MaPLe).

Learnable context vectors are spliced in after the SOS token of ``"X X ... X {class name}."`` and the
sequence runs through open_clip's own text modules (token embedding, positional embedding, the
transformer with its causal mask, final norm, text projection); nothing of the tower is copied.
Class names are tokenised and embedded once per class set and cached, so a step only runs the
transformer. The image tower takes any input: one channel is repeated to three and the image is
resized on the device to the tower's input size. MaPLe's deep prompts run both towers block by block
with open_clip's own blocks (``run_prompted_blocks``), replacing the prompt positions at each prompted layer.

The towers never train: no gradient, eval mode whatever ``train()`` is asked, and their weights are
left out of checkpoints (they come back from ``model_name``/``pretrained`` when the model is built).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ltbench.errors import LTBenchError
from ltbench.models.clip_text import build_clip, class_prompts, load_clip_weights

TINY_CLIP = "ltbench-tiny-clip"
PLACEHOLDER = "X"


def fit_input(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Three channels at the tower's input size (bicubic, as CLIP's preprocessing), on the device."""
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bicubic", align_corners=False)
    return x


class FrozenCLIP(nn.Module):
    """open_clip model, frozen; ``encode_image``, ``encode_texts`` and ``encode_with_context``."""

    def __init__(
        self, model_name: str = "ViT-B-16", pretrained: Optional[Union[str, Path]] = "openai", quick_gelu: Optional[bool] = None
    ) -> None:
        super().__init__()
        clip, path = build_clip(model_name, pretrained, quick_gelu, what="CLIP", key="model.init_args.clip_pretrained")
        if path is not None:
            load_clip_weights(clip, path, model_name)
        self.weights_file = path.name if path is not None else None  # ltbench-digits: the cache file, named by its recipe hash
        text = getattr(clip, "text", None)
        if text is None or not hasattr(text, "token_embedding") or getattr(text, "cls_emb", None) is not None:
            raise LTBenchError(f"CLIP {model_name!r}: prompt learning needs open_clip's causal TextTransformer (argmax/EOT pooling)")
        if getattr(text, "pool_type", "argmax") != "argmax" or getattr(text, "use_pad_mask", False):
            raise LTBenchError(f"CLIP {model_name!r}: text pooling {text.pool_type!r}; prompt learning needs EOT (argmax) pooling")
        self.model_name = model_name
        self.clip = clip.requires_grad_(False).eval()
        import open_clip  # only when a config builds a CLIP model

        self.tokenizer = open_clip.get_tokenizer(model_name)
        size = clip.visual.image_size
        self.image_size: tuple[int, int] = tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size))
        self.logit_scale = float(clip.logit_scale.exp())
        self._names: dict[tuple[tuple[str, ...], int], tuple[torch.Tensor, torch.Tensor]] = {}
        self._register_state_dict_hook(FrozenCLIP._drop_tower_weights)
        self._register_load_state_dict_pre_hook(FrozenCLIP._keep_tower_weights, with_module=True)

    # ---- frozen, and out of checkpoints --------------------------------------------------------
    def train(self, mode: bool = True) -> "FrozenCLIP":
        super().train(mode)
        self.clip.eval()
        return self

    @staticmethod
    def _drop_tower_weights(module: nn.Module, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
        for k in [k for k in state if k.startswith(prefix + "clip.")]:
            del state[k]

    def _keep_tower_weights(self, state: dict[str, Any], prefix: str, *args: Any) -> None:
        for k, v in self.clip.state_dict(prefix=prefix + "clip.").items():
            state.setdefault(k, v)

    def _apply(self, fn: Any, recurse: bool = True) -> "FrozenCLIP":
        super()._apply(fn, recurse)
        self._names.clear()  # cached embeddings follow the towers' device and dtype
        return self

    # ---- facts ---------------------------------------------------------------------------------
    @property
    def width(self) -> int:
        return int(self.clip.text.token_embedding.embedding_dim)

    @property
    def embed_dim(self) -> int:
        return int(self.clip.text.output_dim)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.clip.parameters())

    # ---- image tower ---------------------------------------------------------------------------
    def fit_input(self, x: torch.Tensor) -> torch.Tensor:
        return fit_input(x, self.image_size)

    def encode_image(self, x: torch.Tensor, fitted: bool = False) -> torch.Tensor:
        """Image embeddings (B, E), not normalised; ``fitted`` says ``x`` is already 3 x image_size."""
        with torch.no_grad():
            return self.clip.visual(x if fitted else self.fit_input(x)).float()

    # ---- text tower ----------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids cut after the longest sentence's EOT (causal: no earlier position sees a later one), and EOT positions."""
        tokens = self.tokenizer(list(texts))
        eot = tokens.argmax(dim=-1)
        return tokens[:, : int(eot.max()) + 1].contiguous(), eot

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        emb = self.clip.text.token_embedding
        with torch.no_grad():
            return emb(tokens.to(emb.weight.device)).to(self.clip.text.transformer.get_cast_dtype())

    def encode_embeddings(self, x: torch.Tensor, eot: torch.Tensor, deep: Optional[torch.Tensor] = None) -> torch.Tensor:
        """open_clip's text path from token embeddings (N, L, W): + positions, causal transformer,
        final norm, the EOT feature times the projection. (N, E) in float32, not normalised.
        ``deep`` (G, D, n_ctx, W): prompts that replace positions 1 .. n_ctx at layers 1 .. D (MaPLe), one set
        per group of N / G consecutive rows."""
        text = self.clip.text
        n = x.shape[1]
        x = x + text.positional_embedding[:n].to(x.dtype)
        mask = text.attn_mask[:n, :n] if text.attn_mask is not None else None
        if deep is None:
            x = text.transformer(x, attn_mask=mask)
        else:
            x = run_prompted_blocks(text.transformer, x, mask, deep.to(x.dtype), start=1)
        x = text.ln_final(x)
        pooled = x[torch.arange(x.shape[0], device=x.device), eot.to(x.device)]
        proj = text.text_projection
        if proj is not None:
            pooled = proj(pooled) if isinstance(proj, nn.Linear) else pooled @ proj
        return pooled.float()

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Frozen sentence embeddings (N, E), e.g. the hand-crafted prompts of a class set."""
        tokens, eot = self.tokenize(texts)
        with torch.no_grad():
            return self.encode_embeddings(self._embed(tokens), eot)

    def class_embeddings(
        self, class_names: Sequence[str], n_ctx: int, sentences: Sequence[str] = ("{}.",)
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings (S, C, L, W) of ``"X"*n_ctx + " " + sentence`` for each of the S sentence templates
        and class, and the EOT positions (S, C); made once per class set. ``"{}."`` is CoOp's sentence; MaPLe
        keeps the init words beyond its context in it (``"of a {}."``)."""
        key = (tuple(class_names), n_ctx, tuple(sentences))
        if key not in self._names:
            prefix = " ".join([PLACEHOLDER] * n_ctx)
            texts = [t for s in sentences for t in class_prompts(class_names, f"{prefix} {s}" if n_ctx else s)]
            tokens, eot = self.tokenize(texts)
            emb = self._embed(tokens)
            shape = (len(sentences), len(class_names))
            self._names[key] = (emb.view(*shape, *emb.shape[1:]), eot.to(emb.device).view(shape))
        return self._names[key]

    def encode_with_context(
        self,
        context: torch.Tensor,
        class_names: Sequence[str],
        sentences: Sequence[str] = ("{}.",),
        deep: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Class embeddings (M, C, E) of M learnable contexts (M, n_ctx, W) spliced after SOS; one transformer call.

        ``sentences``: one template for all M contexts or one each. ``deep`` (M, D, n_ctx, W): MaPLe's deeper
        prompts, which replace the context positions at layers 1 .. D of the text transformer."""
        m, n_ctx, w = context.shape
        emb, eot = self.class_embeddings(class_names, n_ctx, sentences)
        c, length = emb.shape[1], emb.shape[2]
        emb = emb.expand(m, -1, -1, -1)
        x = torch.cat(
            [emb[:, :, :1], context[:, None].to(emb.dtype).expand(m, c, n_ctx, w), emb[:, :, 1 + n_ctx :]],
            dim=2,
        )
        return self.encode_embeddings(x.reshape(m * c, length, w), eot.expand(m, c).reshape(-1), deep).view(m, c, -1)

    def context_from_template(self, template: str, n_ctx: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """(n_ctx, W) initial context from a hand-crafted template's words before ``{}``: its last n_ctx
        token embeddings, nearest the class name; positions the words do not fill are N(0, 0.02) (CoOp's init)."""
        if "{}" not in template:
            raise LTBenchError(f"context template {template!r} has no '{{}}' where the class name goes")
        words = template.split("{}")[0].strip()
        init = torch.empty(n_ctx, self.width).normal_(0.0, 0.02, generator=generator)
        if words:
            tokens, eot = self.tokenize([words])
            emb = self._embed(tokens)[0, 1 : int(eot[0])].float().cpu()
            k = min(n_ctx, emb.shape[0])
            if k:
                init[n_ctx - k :] = emb[emb.shape[0] - k :]
        return init

    def maple_context(self, template: str, n_ctx: int, generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, str]:
        """MaPLe's reading of a context init: the first n_ctx tokens of the words before ``{}`` become the
        (n_ctx, W) learnable context, the rest stay in the sentence as fixed words ("a photo of a {}." with
        n_ctx 2: context "a photo", sentence "of a {}."). With no more tokens than n_ctx, CoOp's init
        (``context_from_template``) and the bare sentence."""
        if "{}" not in template:
            raise LTBenchError(f"context template {template!r} has no '{{}}' where the class name goes")
        words, after = template.split("{}", 1)
        ids = torch.zeros(0, dtype=torch.long)
        if words.strip():
            tokens, eot = self.tokenize([words.strip()])
            ids = tokens[0, 1 : int(eot[0])]
        if ids.numel() <= n_ctx:
            return self.context_from_template(template, n_ctx, generator), "{}" + after
        decode = getattr(self.tokenizer, "decode", None)
        if decode is None:
            raise LTBenchError(f"CLIP {self.model_name!r}: its tokenizer cannot decode, so the words after a MaPLe context cannot be kept")
        rest = decode(ids[n_ctx:].tolist()).strip()
        return self._embed(ids[:n_ctx][None])[0].float().cpu(), f"{rest} {{}}{after}"

    # ---- MaPLe's deep prompts ------------------------------------------------------------------
    def _prompted_visual(self) -> nn.Module:
        v = self.clip.visual
        if not all(hasattr(v, a) for a in ("_embeds", "_pool", "transformer", "ln_pre")):
            raise LTBenchError(f"CLIP {self.model_name!r}: vision prompts need open_clip's VisionTransformer image tower, not {type(v).__name__}")
        return v

    @property
    def vision_width(self) -> int:
        return int(self._prompted_visual().transformer.width)

    def check_prompt_depth(self, depth: int) -> None:
        """Refuse a MaPLe depth that either tower cannot take, and an image tower that takes no prompts."""
        layers = min(len(self.clip.text.transformer.resblocks), len(self._prompted_visual().transformer.resblocks))
        if not 1 <= depth <= layers:
            raise LTBenchError(f"prompt_depth={depth}; CLIP {self.model_name!r} has {layers} layers per tower, so expected 1..{layers}")

    def encode_image_with_prompts(self, x: torch.Tensor, prompts: torch.Tensor, fitted: bool = False) -> torch.Tensor:
        """Image embeddings (M, B, E), float32, not normalised, under M sets of vision prompts (M, depth, n_ctx, Wv).

        As MaPLe: the layer-0 prompts join the sequence after the patch tokens, after the positional embedding
        and before ``ln_pre`` (token-wise, so applied to each part alike); layers 1 .. depth-1 replace them with
        their own; the pooled feature is the class token's. ``x``: (B, 3, H, W) seen by every set, or
        (M, B, 3, H, W), one view per set. The patch embedding, which no prompt reaches, runs without gradient."""
        v = self._prompted_visual()
        m, depth, n_ctx, wv = prompts.shape
        views = x.dim() == 5
        flat = x.flatten(0, 1) if views else x
        with torch.no_grad():
            tokens = v._embeds(flat if fitted else self.fit_input(flat))
        b, length = (x.shape[1] if views else x.shape[0]), tokens.shape[1]
        tokens = tokens.view(-1, b, length, wv).expand(m, b, length, wv).flatten(0, 1)
        p = prompts.to(tokens.dtype)
        first = v.ln_pre(p[:, 0]).unsqueeze(1).expand(m, b, n_ctx, wv).flatten(0, 1)
        out = run_prompted_blocks(v.transformer, torch.cat([tokens, first], dim=1), None, p[:, 1:], start=length)
        pooled, _ = v._pool(out[:, :length])
        if v.proj is not None:
            pooled = pooled @ v.proj
        return pooled.float().view(m, b, -1)

    def extra_repr(self) -> str:
        return f"model={self.model_name!r}, image_size={self.image_size}, logit_scale={self.logit_scale:.2f}, frozen"


def run_prompted_blocks(
    transformer: nn.Module, x: torch.Tensor, attn_mask: Optional[torch.Tensor], deep: torch.Tensor, start: int
) -> torch.Tensor:
    """open_clip's ``Transformer`` block by block on (N, L, W), with MaPLe's deeper prompts: before block i
    (1 <= i <= D) the n_ctx positions from ``start`` are replaced by ``deep[:, i - 1]``. ``deep`` (G, D, n_ctx, W)
    holds one prompt set per group of N / G consecutive rows (template-major); a layer's prompts are spread
    over the rows only when that layer is reached."""
    if not getattr(transformer, "batch_first", True):
        raise LTBenchError("deep prompts need open_clip's batch-first transformer")
    g, _, n, w = deep.shape
    rows = x.shape[0]
    for i, block in enumerate(transformer.resblocks):
        if 1 <= i <= deep.shape[1]:
            prompts = deep[:, i - 1].unsqueeze(1).expand(g, rows // g, n, w).reshape(rows, n, w)
            x = torch.cat([x[:, :start], prompts, x[:, start + n :]], dim=1)
        x = block(x, attn_mask=attn_mask)
    return x


__all__ = ["FrozenCLIP", "TINY_CLIP", "fit_input", "run_prompted_blocks"]
