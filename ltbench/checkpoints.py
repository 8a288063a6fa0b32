"""Reading a checkpoint the user names, with one line when it is unreadable or does not fit the model."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

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


def check_fits(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Every tensor the checkpoint and the model share has the model's shape (else: the first that does not).

    A module may take other shapes of its own tensors (``accepts_shape(name, shape)``, e.g. a whole token
    table that ``UsedRowsEmbedding`` reads its rows from)."""
    own = model.state_dict()
    owners = {f"{prefix}.{name}" if prefix else name: (m, name) for prefix, m in model.named_modules()
              if hasattr(m, "accepts_shape") for name, _ in m.named_parameters(recurse=False)}
    for key, value in state_dict.items():
        if key in owners and hasattr(value, "shape") and owners[key][0].accepts_shape(owners[key][1], tuple(value.shape)):
            continue
        if key in own and hasattr(value, "shape") and tuple(value.shape) != tuple(own[key].shape):
            raise LTBenchError(
                f"checkpoint {path} does not fit this config's model: {key} is {tuple(value.shape)} there but "
                f"{tuple(own[key].shape)} here; use the config (classes, backbone, head) it was trained with"
            )
