"""Importing a dependency without the optional packages it imports eagerly and we never use.

timm imports W&B at ``import timm`` (``timm.utils.summary``, for its training script's
``log_wandb`` option), which costs about half a second of every run. ``import_without`` imports a
module while the named optional packages look absent (a ``None`` entry in ``sys.modules`` makes
``import`` raise ImportError, which such guarded imports catch), then removes the entries, so any
later ``import wandb`` (a WandbLogger, a sweep) loads the real package as usual.
"""

from __future__ import annotations

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
        __import__(module)  # the import statement's path, so `python -X importtime` lists it
        return sys.modules[module]
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


def freeze_imported_objects() -> None:
    """Leave every object that exists now out of later garbage collections (``gc.freeze``).

    torch, Lightning and what they import leave millions of long-lived objects that are never
    garbage, yet each full collection, and the interpreter's last one at exit, walks them all: about
    1 s of a 7 s Digits fit from the shell. For processes that import once and then run (the
    ``ltbench`` command, suite workers), after their imports; not for library callers.
    """
    import gc

    gc.freeze()
