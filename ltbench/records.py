"""Run records: one JSON file per evaluated run, written atomically, read by the leaderboard."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import secrets
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

# a record's headline metrics in display order, with their names on boards and run tables
METRIC_COLUMNS = {
    "multiclass": [("acc", "overall"), ("acc_many", "many"), ("acc_medium", "medium"), ("acc_few", "few")],
    "multilabel": [("mAP", "mAP"), ("mAP_many", "head"), ("mAP_medium", "medium"), ("mAP_few", "tail")],
    # base-to-new runs (protocol eval_protocol = base_to_new): accuracy on base and new classes, harmonic mean
    "base_to_new": [("base", "Base"), ("new", "New"), ("hm", "HM")],
}

PACKAGES = ("ltbench", "torch", "torchvision", "lightning", "torchmetrics", "timm", "open_clip_torch", "numpy", "scikit-learn")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit() -> dict[str, Any]:
    """The commit of the ltbench checkout and whether it had uncommitted changes (None outside git)."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=5)
        return {"commit": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def jsonable(obj: Any) -> Any:
    """Plain JSON: tensors and arrays to lists, NaN and inf to null (n/a)."""
    if hasattr(obj, "tolist"):
        obj = obj.tolist()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed over it when the block ends without error.

    Readers never see half a file; on error the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # os.open with 0o666 lets the umask decide the mode, as for every other run file (mkstemp forces 0600)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cache_root() -> Path:
    """Where ltbench caches what it derives once (dictionaries, pretrained tiny towers):
    ``$LTBENCH_CACHE``, else ``~/.cache/ltbench``."""
    root = os.environ.get("LTBENCH_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "ltbench"


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write JSON through ``atomic_path``."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(jsonable(data), f, indent=2, sort_keys=False)
            f.write("\n")
    return Path(path)


def metrics_table(metrics: dict[str, Any], task: str, title: str = "test") -> str:
    """A run's final table: headline metrics in percent, in board order (overall, many, medium, few;
    mAP, head, medium, tail), then any others by name; n/a for missing or non-finite values."""
    columns = METRIC_COLUMNS.get(task, [])
    known = {k for k, _ in columns}
    rows = [(label, metrics.get(key)) for key, label in columns] + [(k, v) for k, v in sorted(metrics.items()) if k not in known]
    width = max([len(label) for label, _ in rows] + [len(title) + 4])
    lines = [f"{title} (%)"]
    for label, value in rows:
        number = float(value) if value is not None else math.nan
        lines.append(f"{label:<{width}}  {100 * number:6.2f}" if math.isfinite(number) else f"{label:<{width}}  {'n/a':>6}")
    return "\n".join(lines)
