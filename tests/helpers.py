"""Test doubles importable by class path from configs (``tests.helpers.X``)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import lightning as L

from ltbench.methods import CrossEntropy

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def load_benchmark(name: str) -> ModuleType:
    """A script under benchmarks/ (not a package) as a module, e.g. ``load_benchmark("speed")``."""
    spec = importlib.util.spec_from_file_location(f"ltbench_benchmark_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
CE_DIGITS = str(REPO / "configs" / "ce_digits_lt.yaml")


class StopAfterEpoch(L.Callback):
    """Ends fit after ``epoch`` as an interruption would, once the epoch's checkpoint is saved."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


class NaNAfterSteps(CrossEntropy):
    """A method whose loss turns NaN after a few steps."""

    def __init__(self, nan_after: int = 2, **kwargs) -> None:
        super().__init__(**kwargs)
        self.nan_after = nan_after

    def training_loss(self, logits, target):
        loss = super().training_loss(logits, target)
        return loss * math.nan if self.global_step >= self.nan_after else loss
