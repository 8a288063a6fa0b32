"""Class embeddings from a CLIP text tower through open_clip, the semantics prompt-based methods start from.

Any open_clip model name works (``RN50``, ``ViT-B-16``, ``hf-hub:...``), plus ltbench's own configs in
``clip_configs/`` (``ltbench-tiny-text``: a 2-layer, 64-wide tower for tests and the embedded suite).
Weights come from an open_clip pretrained tag (a download, so online), a local checkpoint file (an
open_clip/OpenCLIP state dict, a whole-CLIP or text-only one, or OpenAI's TorchScript ``RN50.pt``),
``ltbench-digits`` (the model pretrained on captioned digits and cached, ``clip_digits.py``), or
nowhere (random initialisation).

Only the text tower is kept; the image tower that open_clip builds alongside is dropped.
"""

from __future__ import annotations

import difflib
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ltbench.errors import LTBenchError
from ltbench.models.used_rows_embedding import UsedRowsEmbedding
from ltbench.network import fetching

CONFIG_DIR = Path(__file__).resolve().parent / "clip_configs"
TINY_TEXT = "ltbench-tiny-text"
DEFAULT_TEMPLATE = "a photo of a {}."
_SCHEMAS = ("hf-hub:", "local-dir:")
#: named template sets; ``clip7`` is the seven-template ImageNet ensemble of CLIP's prompt-engineering notebook
TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "photo": (DEFAULT_TEMPLATE,),
    "clip7": (
        "itap of a {}.",
        "a bad photo of the {}.",
        "a origami {}.",
        "a photo of the large {}.",
        "a {} in a video game.",
        "art of the {}.",
        "a photo of the small {}.",
    ),
}
DIGITS_TAG = "ltbench-digits"


def register_configs() -> None:
    """Make ltbench's open_clip model configs known to open_clip by name (idempotent).

    open_clip is imported here and in the functions that use it, not with the module: a run that
    builds no text tower never pays for it.
    """
    import open_clip

    ours = {p.stem for p in CONFIG_DIR.glob("*.json")}
    if not ours <= set(open_clip.list_models()):
        open_clip.add_model_config(CONFIG_DIR)


def class_prompts(class_names: Sequence[str], template: str = DEFAULT_TEMPLATE) -> list[str]:
    """One sentence per class, underscores read as spaces ("traffic_light" -> "a photo of a traffic light.")."""
    return [template.format(str(name).replace("_", " ")) for name in class_names]


def build_clip(
    model_name: str = "RN50",
    pretrained: Optional[Union[str, Path]] = None,
    quick_gelu: Optional[bool] = None,
    what: str = "CLIP",
    key: str = "model.init_args.text_pretrained",
) -> tuple[nn.Module, Optional[Path]]:
    """An open_clip model (custom text tower) with an open_clip tag's weights, and the local weights file
    still to load (None when ``pretrained`` is a tag or None).

    ``pretrained``: an open_clip tag of ``model_name`` (e.g. ``openai``), a local file, or None
    (random). ``quick_gelu``: None takes the tag's (or the model config's) setting; True forces
    QuickGELU, which OpenAI's checkpoints need when loaded from a file under a plain name like RN50.
    ``what`` names the caller and ``key`` the config key of ``pretrained`` in errors.
    """
    import open_clip

    register_configs()
    if not model_name.startswith(_SCHEMAS) and model_name not in open_clip.list_models():
        close = difflib.get_close_matches(model_name, open_clip.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise LTBenchError(f"unknown open_clip model {model_name!r}{hint} (any name in open_clip.list_models() works)")
    if str(pretrained) == DIGITS_TAG:  # ltbench's own: pretrained on captioned digits, cached (clip_digits.py)
        from ltbench.models.clip_digits import digits_clip_checkpoint

        pretrained = digits_clip_checkpoint(model_name)
    tags = [] if model_name.startswith(_SCHEMAS) else open_clip.list_pretrained_tags_by_model(model_name)
    tag: Optional[str] = None
    path: Optional[Path] = None
    if pretrained:
        if str(pretrained) in tags:
            tag = str(pretrained)
        else:
            path = Path(pretrained).expanduser()
            if not path.is_file():
                known = f"; known tags of {model_name}: {', '.join(tags)}" if tags else ""
                raise LTBenchError(
                    f"{what} {model_name!r}: pretrained weights file {path} does not exist "
                    f"(give an open_clip tag or a local checkpoint file{known})"
                )
    if quick_gelu is None:
        quick_gelu = bool(tag and open_clip.get_pretrained_cfg(model_name, tag).get("quick_gelu", False))
    source = f"open_clip weights {tag!r} of {model_name!r}"
    with fetching(key, source, f"give the path of a local checkpoint file as {key} instead") if tag else nullcontext():
        clip = open_clip.create_model(
            model_name, pretrained=tag, force_custom_text=True, force_quick_gelu=bool(quick_gelu), pretrained_text=False
        )
    return clip, path


def build_text_tower(
    model_name: str = "RN50", pretrained: Optional[Union[str, Path]] = None, quick_gelu: Optional[bool] = None
) -> nn.Module:
    """open_clip's text tower alone (``TextTransformer`` or ``HFTextEncoder``), weights loaded (see ``build_clip``)."""
    clip, path = build_clip(model_name, pretrained, quick_gelu, what="CLIP text tower")
    text = clip.text
    if path is not None:
        load_text_weights(text, path, model_name)
    return text


def _read_checkpoint(path: Path, model_name: str) -> dict[str, torch.Tensor]:
    """A state dict from an open_clip-style file (``.pt``/``.bin``/``.safetensors``, ``module.`` prefixes),
    or from OpenAI's TorchScript archive (``RN50.pt``), which ``torch.load(weights_only=True)`` refuses and
    ``torch.jit.load`` reads as OpenAI's ``clip.load`` does (so only from a trusted source)."""
    from open_clip.factory import load_state_dict

    try:
        return load_state_dict(str(path))
    except Exception as first:  # torch.load fails with many types on corrupt or foreign files
        try:
            archive = torch.jit.load(str(path), map_location="cpu")
        except Exception:
            raise LTBenchError(f"CLIP {model_name!r}: cannot read weights file {path}: {first}") from first
        return {k: v for k, v in archive.state_dict().items() if k not in ("input_resolution", "context_length", "vocab_size")}


def load_text_weights(text: nn.Module, path: Path, model_name: str) -> None:
    """Load the text tower's part of a checkpoint strictly: a wrong file fails loudly, never half-loads."""
    from open_clip.model import convert_to_custom_text_state_dict

    state = convert_to_custom_text_state_dict(_read_checkpoint(path, model_name))
    if any(k.startswith("text.") for k in state):
        state = {k[len("text."):]: v for k, v in state.items() if k.startswith("text.")}
    _load_strict(text, state, path, f"CLIP text tower {model_name!r}")


def load_clip_weights(clip: nn.Module, path: Path, model_name: str) -> None:
    """Load a whole-CLIP checkpoint (both towers) strictly into an open_clip model with a custom text tower."""
    from open_clip.model import convert_to_custom_text_state_dict

    state = convert_to_custom_text_state_dict(_read_checkpoint(path, model_name))
    _load_strict(clip, state, path, f"CLIP {model_name!r}")


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        raise LTBenchError(
            f"{what}: weights file {path} does not match the architecture "
            f"({len(missing)} missing keys, e.g. {missing[:3]}; {len(unexpected)} unexpected, e.g. {unexpected[:3]}; "
            f"{len(wrong)} of another shape, e.g. {wrong[:3]})"
        )
    module.load_state_dict(state)


class CLIPTextEncoder(nn.Module):
    """Class embeddings (C, E): each class's sentence through the text tower, EOT feature times the
    text projection, at least float32, not L2-normalised.

    ``trainable=False`` freezes the tower and computes the embeddings once (at construction and after
    any ``load_state_dict``), so a training step never runs it. The tokens and the causal mask are
    kept out of the module's buffers: weight averaging (EMA) over buffers would turn the mask's -inf
    into NaN and round the integer tokens; they still follow ``.to()``. With a causal tower the
    context is cut after the longest sentence's EOT token, which leaves the EOT features unchanged
    (no earlier position sees a later one) and saves most of the tower's compute. A trainable tower's
    token embedding keeps only the rows its sentences read (``UsedRowsEmbedding``: same outputs and
    training, without the rest of the vocabulary in the optimiser, EMA and checkpoints).
    """

    cache: Optional[torch.Tensor]

    def __init__(
        self,
        class_names: Sequence[str],
        model_name: str = "RN50",
        pretrained: Optional[Union[str, Path]] = None,
        template: str = DEFAULT_TEMPLATE,
        quick_gelu: Optional[bool] = None,
        trainable: bool = True,
    ) -> None:
        super().__init__()
        self.model_name = model_name
        self.text = build_text_tower(model_name, pretrained, quick_gelu)
        self.prompts = class_prompts(class_names, template)
        from open_clip import get_tokenizer

        tokens = get_tokenizer(model_name)(self.prompts)
        self._tokens, self._mask = self._shorten(tokens)
        self.trainable = trainable
        if trainable and isinstance(getattr(self.text, "token_embedding", None), nn.Embedding):
            self.text.token_embedding = UsedRowsEmbedding(self.text.token_embedding, self._tokens)
        self.register_buffer("cache", None, persistent=False)
        if not trainable:
            self.text.requires_grad_(False)
            self.refresh()
            self.register_load_state_dict_post_hook(CLIPTextEncoder._refresh_after_load)

    def _shorten(self, tokens: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        text = self.text
        mask = text._buffers.pop("attn_mask", None)
        if mask is None:
            return tokens, None
        causal_argmax = getattr(text, "pool_type", None) == "argmax" and getattr(text, "cls_emb", None) is None
        if causal_argmax and not getattr(text, "use_pad_mask", False):
            n = int(tokens.argmax(dim=-1).max()) + 1
            tokens, mask = tokens[:, :n].contiguous(), mask[:n, :n].contiguous()
        text.attn_mask = mask
        return tokens, mask

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> "CLIPTextEncoder":
        super()._apply(fn, recurse)
        self._tokens = fn(self._tokens)
        if self._mask is not None:
            self._mask = self.text.attn_mask = fn(self._mask)
        return self

    @property
    def output_dim(self) -> int:
        dim = getattr(self.text, "output_dim", None)
        if dim:
            return int(dim)
        with torch.no_grad():
            return int(self.encode().shape[-1])

    def encode(self) -> torch.Tensor:
        """Run the tower on every class sentence: (C, E), half precision raised to float32."""
        out = self.text(self._tokens)
        return out.float() if out.dtype in (torch.float16, torch.bfloat16) else out

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute the frozen embeddings from the tower's current weights, in float32."""
        with torch.autocast(self._tokens.device.type, enabled=False):
            self.cache = self.encode().detach()

    @staticmethod
    def _refresh_after_load(module: "CLIPTextEncoder", incompatible: Any) -> None:
        module.refresh()

    def forward(self) -> torch.Tensor:
        return self.cache if self.cache is not None else self.encode()

    def extra_repr(self) -> str:
        return f"model={self.model_name!r}, classes={len(self.prompts)}, trainable={self.trainable}, context={self._tokens.shape[-1]}"


def resolve_templates(templates: Union[str, Sequence[str]]) -> tuple[str, ...]:
    """A named set (``photo``, ``clip7``) or a list of templates, each with one ``{}`` for the class name."""
    if isinstance(templates, str):
        if templates not in TEMPLATE_SETS:
            raise LTBenchError(f"unknown template set {templates!r}; expected one of {', '.join(TEMPLATE_SETS)} or a list of templates")
        return TEMPLATE_SETS[templates]
    bad = [t for t in templates if t.count("{}") != 1]
    if not templates or bad:
        raise LTBenchError(f"templates: every template needs exactly one '{{}}' for the class name (got {list(templates) or 'none'})")
    return tuple(templates)


def class_text_features(
    class_names: Sequence[str],
    templates: Union[str, Sequence[str]] = "photo",
    model_name: str = "RN50",
    pretrained: Optional[Union[str, Path]] = None,
    quick_gelu: Optional[bool] = None,
    init_seed: int = 0,
) -> torch.Tensor:
    """Fixed class text features (C, E), float32: CLIP's prompt ensemble, the mean over templates of the
    L2-normalised sentence embeddings, normalised again. The tower is built, run once and dropped; a
    randomly initialised tower (``pretrained=None``) is seeded by ``init_seed`` alone, so the features
    do not change with the run's seed."""
    templates = resolve_templates(templates)
    groups = [[class_prompts([name], t)[0] for t in templates] for name in class_names]
    return grouped_text_features(groups, model_name, pretrained, quick_gelu, init_seed)


def _seeded_tower(model_name: str, pretrained: Optional[Union[str, Path]], quick_gelu: Optional[bool], init_seed: int) -> nn.Module:
    """The text tower in eval mode; a random one is drawn from ``init_seed`` alone, the global generator left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        return build_text_tower(model_name, pretrained, quick_gelu).eval()


def grouped_text_features(
    groups: Sequence[Sequence[str]],
    model_name: str = "RN50",
    pretrained: Optional[Union[str, Path]] = None,
    quick_gelu: Optional[bool] = None,
    init_seed: int = 0,
    batch_size: int = 256,
    device: Optional[torch.device] = None,
) -> torch.Tensor:
    """One feature per group of texts (N, E), float32, e.g. an image's captions: the mean of the
    L2-normalised embeddings of the group's texts, normalised again (CLIP's prompt ensemble applied to
    free text). The tower is built as ``class_text_features`` builds it, run once over all texts in
    batches of ``batch_size`` on ``device`` (default CPU; the result is on the CPU) and dropped. Every
    group needs at least one text."""
    from open_clip import get_tokenizer

    counts = torch.tensor([len(g) for g in groups], dtype=torch.long)
    if len(groups) and int(counts.min()) < 1:
        raise LTBenchError(f"grouped_text_features: group {int(counts.argmin())} has no text; every group needs at least one")
    texts = [t for g in groups for t in g]
    tower = _seeded_tower(model_name, pretrained, quick_gelu, init_seed).to(device or "cpu")
    tokenizer = get_tokenizer(model_name)
    with torch.no_grad():  # not around building: ``ltbench-digits`` may pretrain its tower there the first time
        parts = [
            F.normalize(tower(tokenizer(texts[i : i + batch_size]).to(device or "cpu")).float(), dim=-1).cpu()
            for i in range(0, len(texts), batch_size)
        ]
    emb = torch.cat(parts) if parts else torch.zeros(0, 1)
    owner = torch.repeat_interleave(torch.arange(len(groups)), counts)
    sums = emb.new_zeros(len(groups), emb.shape[1]).index_add_(0, owner, emb)
    return F.normalize(sums / counts.unsqueeze(1).to(sums.dtype), dim=-1)


def describe(encoder: CLIPTextEncoder) -> dict[str, Any]:
    """Facts for a run record."""
    return {
        "text_model": encoder.model_name,
        "text_trainable": encoder.trainable,
        "text_embedding_rows": int(encoder.text.token_embedding.weight.shape[0]) if hasattr(encoder.text, "token_embedding") else None,
        "text_dim": encoder.output_dim,
        "text_template_example": encoder.prompts[0] if encoder.prompts else None,
    }


__all__ = ["CLIPTextEncoder", "build_clip", "build_text_tower", "load_clip_weights", "class_prompts", "register_configs", "TINY_TEXT", "describe"]
__all__ += ["TEMPLATE_SETS", "resolve_templates", "class_text_features", "grouped_text_features"]
