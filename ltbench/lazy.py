"""Importing a dependency without the optional packages it imports eagerly and we never use.

timm imports W&B at ``import timm`` (``timm.utils.summary``, for its training script's
``log_wandb`` option), which costs about half a second of every run. ``import_without`` imports a
module while the named optional packages look absent (a ``None`` entry in ``sys.modules`` makes
``import`` raise ImportError, which such guarded imports catch), then removes the entries, so any
later ``import wandb`` (a WandbLogger, a sweep) loads the real package as usual.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType


def import_without(module: str, *optional: str) -> ModuleType:
    """``import module`` with ``optional`` packages hidden; those already imported stay visible."""
    if module in sys.modules:
        return sys.modules[module]
    hidden = [name for name in optional if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        return importlib.import_module(module)
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
