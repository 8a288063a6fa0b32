"""Reading a checkpoint the user names, with one line when it is unreadable or does not fit the model."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from ltbench.errors import LTBenchError


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint loaded on the CPU with ``weights_only=True`` (no code from the file runs)."""
    try:
        ckpt = torch.load(path, weights_only=True, map_location="cpu")
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError) as e:
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LTBenchError(f"checkpoint {path} is unreadable (truncated, or not a checkpoint saved by ltbench: {why}); ckpt_path expects a .ckpt file written by `ltbench fit`") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), Mapping):
        raise LTBenchError(f"checkpoint {path} holds no state_dict; ckpt_path expects a .ckpt file written by `ltbench fit`")
    return ckpt


def first_mismatch(
    model: torch.nn.Module, state_dict: Mapping[str, Any], accept_reshaped: bool = True
) -> Optional[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """(key, shape there, shape here) of the first tensor the checkpoint and the model share with
    another shape, or None. With ``accept_reshaped`` a module's own tensor may have a shape the module
    takes on load (``accepts_shape(name, shape)``, e.g. a whole token table ``UsedRowsEmbedding``
    reads its rows from)."""
    own = model.state_dict()
    owners = {f"{prefix}.{name}" if prefix else name: (m, name) for prefix, m in model.named_modules()
              if hasattr(m, "accepts_shape") for name, _ in m.named_parameters(recurse=False)} if accept_reshaped else {}
    for key, value in state_dict.items():
        if key not in own or not hasattr(value, "shape") or tuple(value.shape) == tuple(own[key].shape):
            continue
        if key in owners and owners[key][0].accepts_shape(owners[key][1], tuple(value.shape)):
            continue
        return key, tuple(value.shape), tuple(own[key].shape)
    return None


def check_fits(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Every tensor the checkpoint and the model share has the model's shape, or one the model takes on
    load (else: one line naming the first that does not)."""
    found = first_mismatch(model, state_dict)
    if found is not None:
        key, there, here = found
        raise LTBenchError(
            f"checkpoint {path} does not fit this config's model: {key} is {there} there but "
            f"{here} here; use the config (classes, backbone, head) it was trained with"
        )
