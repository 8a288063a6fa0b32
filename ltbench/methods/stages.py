"""Training stages: what a multi-stage method declares, and where an epoch falls among them."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Optional, Sequence


@dataclass(frozen=True)
class Stage:
    """One stage of training.

    ``epochs=None`` takes whatever the trainer's ``max_epochs`` leaves after the other stages.
    ``sampler=None`` keeps the data module's sampler. ``train`` lists the module prefixes that
    train (``None``: all); the others are frozen and put in eval mode (batch-norm statistics
    frozen too). ``reinit`` lists modules re-initialised when the stage starts. The lr schedule
    restarts at every stage, scaled by ``lr_scale``.
    """

    name: str
    epochs: Optional[int] = None
    sampler: Optional[str] = None
    train: Optional[tuple[str, ...]] = None
    reinit: tuple[str, ...] = field(default_factory=tuple)
    lr_scale: float = 1.0


class StagePlan:
    """Stages with resolved epoch counts; maps an epoch to its stage."""

    def __init__(self, stages: Sequence[Stage], max_epochs: Optional[int]) -> None:
        if not stages:
            raise ValueError("a method must declare at least one stage")
        open_ = [s for s in stages if s.epochs is None]
        fixed = sum(s.epochs for s in stages if s.epochs is not None)
        if len(open_) > 1:
            raise ValueError("at most one stage may leave its epochs to trainer.max_epochs")
        if open_:
            if max_epochs is None or max_epochs < 0:
                raise ValueError("trainer.max_epochs must be set: a stage takes its epochs from it")
            if max_epochs <= fixed:
                raise ValueError(
                    f"trainer.max_epochs={max_epochs} leaves no epochs for stage {open_[0].name!r} "
                    f"after {fixed} fixed-stage epochs"
                )
            stages = [s if s.epochs is not None else _with_epochs(s, max_epochs - fixed) for s in stages]
        total = sum(s.epochs for s in stages)
        if max_epochs is not None and max_epochs >= 0 and max_epochs != total:
            raise ValueError(
                f"the method's stages ({', '.join(f'{s.name}: {s.epochs}' for s in stages)}) total {total} "
                f"epochs but trainer.max_epochs is {max_epochs}; set trainer.max_epochs: {total}"
            )
        self.stages = list(stages)
        self.starts = [0]
        for s in self.stages[:-1]:
            self.starts.append(self.starts[-1] + s.epochs)
        self.total_epochs = total

    def index_at(self, epoch: int) -> int:
        return max(bisect.bisect_right(self.starts, epoch) - 1, 0)

    def sampler_schedule(self) -> list[tuple[int, Optional[str]]]:
        return [(start, s.sampler) for start, s in zip(self.starts, self.stages)]


def _with_epochs(stage: Stage, epochs: int) -> Stage:
    return Stage(stage.name, epochs, stage.sampler, stage.train, stage.reinit, stage.lr_scale)
