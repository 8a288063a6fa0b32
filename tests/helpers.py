"""Test doubles importable by class path from configs (``tests.helpers.X``)."""

from __future__ import annotations

import importlib.util
import math
import os
import signal
import sys
from pathlib import Path
from types import ModuleType
from typing import Optional

import lightning as L

from ltbench.methods import CrossEntropy

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CE_DIGITS = str(REPO / "configs" / "ce_digits_lt.yaml")


def load_benchmark_script(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(f"ltbench_benchmark_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # a dataclass in the script looks its module up there
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    """A free TCP port on localhost, for a torch.distributed rendezvous in a test."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_two_processes(worker, *args, results: int = 1, timeout: float = 120) -> list:
    """Spawn ``worker(rank, 2, port, *args, queue)`` on ranks 0 and 1 (a gloo rendezvous on a free
    port); the ``results`` items the workers put on the queue, once both exit cleanly."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=worker, args=(r, 2, port, *args, out)) for r in range(2)]
    for p in procs:
        p.start()
    got = [out.get(timeout=timeout) for _ in range(results)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return got


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


class SigtermAfterEpoch(L.Callback):
    """Sends this process SIGTERM after ``epoch``, as a scheduler would, in the run named ``run_name`` (any if None)."""

    def __init__(self, epoch: int = 0, run_name: Optional[str] = None) -> None:
        self.epoch, self.run_name = epoch, run_name

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch and self.run_name in (None, Path(trainer.log_dir).parent.name):
            os.kill(os.getpid(), signal.SIGTERM)


class StepSeedRecorder(CrossEntropy):
    """Cross-entropy that notes each training step's (epoch, batch index, global step, generator seed)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.step_seeds: list[tuple[int, int, int, int]] = []

    def training_step(self, batch, batch_idx):
        gen = self.step_generator(self.device)
        self.step_seeds.append((self.current_epoch, batch_idx, self.global_step, gen.initial_seed()))
        return super().training_step(batch, batch_idx)
