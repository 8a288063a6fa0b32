"""A run's ``metrics.csv``, whole across a resume."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Optional

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger


class RunCSVLogger(CSVLogger):
    """Lightning's CSV log; a resumed fit keeps the rows of the epochs its checkpoint holds.

    Lightning's CSV writer deletes an existing ``metrics.csv`` when it starts, so a resumed run's log
    would begin at the resumed epoch. With ``resume`` the old rows are read first, and when training
    starts (``KeepEarlierRows``) those logged before the checkpoint's step are written back (rows
    without a step too); rows logged after it are dropped, as those steps are trained again.
    """

    def __init__(self, *args: Any, resume: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        path = Path(self.log_dir) / "metrics.csv"
        self._previous: Optional[tuple[list[str], list[dict[str, str]]]] = None
        if resume and path.is_file():
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                self._previous = (list(reader.fieldnames or []), list(reader))

    def keep_rows_before(self, step: int) -> None:
        """Write back the old rows logged before global step ``step`` (once; rank zero)."""
        if self._previous is None:
            return
        header, rows = self._previous
        self._previous = None
        writer = self.experiment  # creating Lightning's writer removes the old file
        kept = [r for r in rows if not r.get("step") or float(r["step"]) < step]
        with open(writer.metrics_file_path, "w", newline="") as f:
            out = csv.DictWriter(f, fieldnames=header)
            out.writeheader()
            out.writerows(kept)
        writer.metrics_keys = list(header)


class KeepEarlierRows(Callback):
    """Restores a resumed run's earlier rows once training starts, at the step it resumes from
    (Lightning logs an epoch's last rows at its final step minus one, so they stay)."""

    def __init__(self, logger: RunCSVLogger) -> None:
        self.logger = logger

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.is_global_zero:
            self.logger.keep_rows_before(trainer.global_step)
