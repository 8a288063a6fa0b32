"""Published figures ("paper" rows) shown on the board next to ltbench's own rows.

The figures live in ``ltbench/references.yaml``, each with its citation (paper, where in it, link)
and the paper's protocol. A reference is tied to the ltbench config that follows its protocol, so it
appears in a suite's board exactly when that suite runs the config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from ltbench.errors import LTBenchError

REFERENCES_FILE = Path(__file__).with_name("references.yaml")

#: the board's metric columns per task, in order
COLUMNS = {
    "multiclass": ("overall", "many", "medium", "few"),
    "multilabel": ("mAP", "head", "medium", "tail"),
    "base_to_new": ("Base", "New", "HM"),
}
PROTOCOL_KEYS = ("backbone", "pretrained", "input_size", "epochs", "group_rule")
ENTRY_KEYS = {"config", "method", "paper", "table", "dataset", "imb_ratio", "task", "metrics", "runs", "protocol", "note"}


@dataclass(frozen=True)
class Reference:
    config: str
    method: str
    cite: str
    url: Optional[str]
    table: str
    dataset: str
    task: str
    metrics: dict[str, Optional[float]]  # fractions (0..1), like run records
    runs: Optional[int] = None
    imb_ratio: Optional[float] = None
    protocol: dict[str, Any] = field(default_factory=dict)
    note: Optional[str] = None

    @property
    def citation(self) -> str:
        return f"{self.method}: {self.cite}; {self.table}" + (f" ({self.url})" if self.url else "")


def load_references(path: str | Path = REFERENCES_FILE) -> list[Reference]:
    """Every reference in the file, checked; a malformed entry is an error naming the entry."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise LTBenchError(f"{path}: cannot read references ({e})") from None
    papers = raw.get("papers") or {}
    out = []
    for i, entry in enumerate(raw.get("references") or []):
        where = f"{path}: references[{i}]"
        if not isinstance(entry, dict):
            raise LTBenchError(f"{where}: expected a mapping")
        unknown = set(entry) - ENTRY_KEYS
        if unknown:
            raise LTBenchError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        missing = [k for k in ("config", "method", "paper", "table", "dataset", "task", "metrics") if not entry.get(k)]
        if missing:
            raise LTBenchError(f"{where}: missing {', '.join(missing)}")
        task = entry["task"]
        if task not in COLUMNS:
            raise LTBenchError(f"{where}: task must be one of {', '.join(COLUMNS)}, got {task!r}")
        paper = papers.get(entry["paper"])
        if not paper or not paper.get("cite"):
            raise LTBenchError(f"{where}: paper {entry['paper']!r} is not in the papers table with a cite")
        metrics = entry["metrics"]
        bad = set(metrics) - set(COLUMNS[task])
        if bad:
            raise LTBenchError(f"{where}: metric(s) {', '.join(sorted(bad))} are not {task} columns ({', '.join(COLUMNS[task])})")
        values: dict[str, Optional[float]] = {}
        for name in COLUMNS[task]:
            v = metrics.get(name)
            if v is not None and not (isinstance(v, (int, float)) and 0 <= v <= 100):
                raise LTBenchError(f"{where}: metric {name} = {v!r}; figures are percentages in [0, 100]")
            values[name] = None if v is None else float(v) / 100.0
        protocol = entry.get("protocol") or {}
        bad = set(protocol) - set(PROTOCOL_KEYS)
        if bad:
            raise LTBenchError(f"{where}: protocol key(s) {', '.join(sorted(bad))}; expected {', '.join(PROTOCOL_KEYS)}")
        out.append(
            Reference(
                config=str(entry["config"]),
                method=str(entry["method"]),
                cite=str(paper["cite"]),
                url=paper.get("url"),
                table=str(entry["table"]),
                dataset=str(entry["dataset"]),
                task=task,
                metrics=values,
                runs=entry.get("runs"),
                imb_ratio=entry.get("imb_ratio"),
                protocol=dict(protocol),
                note=entry.get("note"),
            )
        )
    return out


def references_for(configs: list[str], path: str | Path = REFERENCES_FILE) -> list[Reference]:
    """The references tied to these config stems, in the order of ``configs``."""
    refs = load_references(path)
    return [r for c in configs for r in refs if r.config == c]
