"""One backbone interface for CNNs and ViTs, built on timm's registry and factory.

``forward_features`` returns tokens (B, N, D) whatever the family (a CNN's map flattened, a ViT's
patch tokens); ``pool`` turns them into the (B, D) vector most heads read. Methods that need
spatial tokens (CPRFL, TSCNet) read tokens; the rest read the pooled vector.
"""

from __future__ import annotations

import difflib
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Optional, Union

import torch

from ltbench.lazy import import_without

timm = import_without("timm", "wandb")  # timm's W&B import is for its own training script
from timm.models import adapt_input_conv, model_entrypoint, parse_model_name, split_model_name_tag
from torch import nn

import ltbench.models.cifar_resnet  # noqa: F401  (registers ltbench models with timm)
import ltbench.models.tiny  # noqa: F401
from ltbench.errors import LTBenchError
from ltbench.network import fetching

_TOKENS, _NCHW, _NHWC = "tokens", "nchw", "nhwc"


class Backbone(nn.Module):
    """A timm model without its classifier, exposing tokens and a pooled vector.

    ``pretrained`` is False (random init), True (timm's published weights) or the path of a
    weights file (a state dict for this architecture; a classifier in it is dropped).
    """

    def __init__(
        self,
        name: str,
        pretrained: Union[bool, str] = False,
        in_chans: int = 3,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        _check_name(name)
        path: Optional[Path] = None
        if isinstance(pretrained, (str, Path)):
            path = Path(pretrained).expanduser()
            if not path.is_file():
                raise LTBenchError(f"backbone {name!r}: pretrained weights file {path} does not exist")
        self.name = name
        fetch = path is None and bool(pretrained)
        with fetching("model.init_args.pretrained", f"timm's published weights of {name!r}", "give the path of a local weights file "
                      "as model.init_args.pretrained instead") if fetch else nullcontext():  # fmt: skip
            self.model = timm.create_model(name, pretrained=fetch, num_classes=0, in_chans=in_chans, **kwargs)
        if path is not None:
            _load_weights_file(self.model, path, name, in_chans)
        self.num_features: int = int(self.model.num_features)
        self.in_chans = in_chans
        self._layout: Optional[str] = None

    @property
    def is_vit(self) -> bool:
        """Whether forward_features yields transformer tokens (pooled by the model's own head).

        Known after the first forward; before it, one small probe forward decides.
        """
        if self._layout is None:
            self._probe()
        return self._layout == _TOKENS

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.model.forward_features(x)
        layout = self._layout or self._set_layout(feats)
        if layout == _NCHW:
            return feats.flatten(2).transpose(1, 2)
        if layout == _NHWC:
            return feats.flatten(1, 2)
        return feats

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.is_vit:
            return self.model.forward_head(tokens, pre_logits=True)
        return tokens.mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.forward_features(x))

    def _set_layout(self, feats: torch.Tensor) -> str:
        if feats.ndim == 3:
            self._layout = _TOKENS
        elif feats.ndim == 4:
            self._layout = _NHWC if getattr(self.model, "output_fmt", "NCHW") == "NHWC" else _NCHW
        else:
            raise LTBenchError(
                f"backbone {self.name!r}: forward_features returned shape {tuple(feats.shape)}; "
                "expected a (B, C, H, W) map or (B, N, D) tokens"
            )
        return self._layout

    def _probe(self) -> None:
        """Run one tiny forward to learn the output layout: small first, the native size if that fails."""
        param = next(self.model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        sizes = _probe_sizes(self.model)
        was_training = self.model.training
        self.model.eval()
        try:
            for i, size in enumerate(sizes):
                try:
                    with torch.no_grad():
                        feats = self.model.forward_features(
                            torch.zeros(1, self.in_chans, size, size, device=device, dtype=dtype)
                        )
                except (RuntimeError, AssertionError, ValueError):
                    if i == len(sizes) - 1:
                        raise
                    continue
                self._set_layout(feats)
                return
        finally:
            self.model.train(was_training)


def _load_weights_file(model: nn.Module, path: Path, name: str, in_chans: int) -> None:
    """Load a state dict strictly, apart from the classifier.

    timm's own file loading turns strict checking off whenever the head is dropped, so a file for
    another architecture would leave the backbone randomly initialised with only a log warning.
    A prefix such as ``backbone.model.`` (a Lightning checkpoint of a whole module) is stripped.
    """
    try:
        state = timm.models.load_state_dict(str(path))
    except Exception as e:  # torch.load fails with many types on corrupt or foreign files
        raise LTBenchError(f"backbone {name!r}: cannot read weights file {path}: {e}") from e
    expected = model.state_dict()
    state = _strip_prefix(state, expected)
    filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            state = filter_fn(state, model)
        except Exception as e:
            raise LTBenchError(f"backbone {name!r}: weights file {path} does not fit the model: {e!r}") from e
    cfg = getattr(model, "pretrained_cfg", None) or {}
    heads = cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    unexpected = [k for k in state if k not in expected and not k.startswith(tuple(h + "." for h in heads))]
    missing = [k for k in expected if k not in state]
    if missing or unexpected:
        raise LTBenchError(
            f"backbone {name!r}: weights file {path} does not match the architecture "
            f"({len(missing)} missing keys, e.g. {missing[:3]}; "
            f"{len(unexpected)} unexpected, e.g. {unexpected[:3]})"
        )
    state = {k: v for k, v in state.items() if k in expected}
    first = cfg.get("first_conv") or ()
    for conv in (first,) if isinstance(first, str) else first:
        key = f"{conv}.weight"
        if key in state and state[key].ndim == 4 and state[key].shape[1] != expected[key].shape[1]:
            state[key] = adapt_input_conv(in_chans, state[key])
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise LTBenchError(f"backbone {name!r}: weights file {path} does not fit the model: {e}") from e


def _strip_prefix(state: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    if not expected:
        return state
    first = next(iter(expected))
    if first in state:
        return state
    for key in state:
        if key.endswith("." + first):
            prefix = key[: -len(first)]
            sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if all(k in sub for k in expected):
                return sub
    return state


def _probe_sizes(model: nn.Module) -> list[int]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    native = int(cfg.get("input_size", (3, 32, 32))[-1])
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if img_size is not None:
        native = int(img_size[-1] if isinstance(img_size, (tuple, list)) else img_size)
    return sorted({min(native, 32), native})


def _check_name(name: str) -> None:
    source, arch = parse_model_name(name)
    if source is not None or timm.is_model(split_model_name_tag(arch)[0]):
        return
    close = difflib.get_close_matches(arch, timm.list_models(), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise LTBenchError(
        f"unknown backbone {name!r}{hint} (any name in timm.list_models() works; "
        f"ltbench adds {', '.join(list_ltbench_models())})"
    )


def create_backbone(
    name: str, pretrained: Union[bool, str] = False, in_chans: int = 3, **kwargs: Any
) -> Backbone:
    """Factory form of ``Backbone``, for configs that name a callable."""
    return Backbone(name, pretrained=pretrained, in_chans=in_chans, **kwargs)


def list_ltbench_models() -> list[str]:
    """Models ltbench registers with timm (whatever module they live in)."""
    return sorted(n for n in timm.list_models() if model_entrypoint(n).__module__.startswith("ltbench."))


__all__ = ["Backbone", "create_backbone", "list_ltbench_models"]
