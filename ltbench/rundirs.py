"""Where a run's files go: ``<run_dir>/<name>/<version>/``, whatever the loggers.

The name defaults to ``<Method>-<Dataset>``; a W&B sweep point is named from its config and its
parameters (``tde_digits_lt,alpha=0.5,lr=0.02``) the same way whether a suite runs it offline or a
``wandb agent`` runs it, so no two points share a directory.

A directory holds a run once it has a record or a last checkpoint (``existing_run``); a fresh ``fit``
there refuses, and a suite resumes an interrupted one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

#: a run's record and its checkpoint folder, inside ``<run_dir>/<name>/<version>/``
RECORD, CHECKPOINTS = "record.json", "checkpoints"

#: set by ``wandb agent`` for each run it starts: the sweep and a YAML file of the point's parameters
SWEEP_ID_ENV, SWEEP_PARAMS_ENV = "WANDB_SWEEP_ID", "WANDB_SWEEP_PARAM_PATH"


def short_names(names: list[str]) -> dict[str, str]:
    """The shortest dotted suffix of each parameter name that no other name ends with."""
    out = {}
    for n in names:
        parts = n.split(".")
        for k in range(1, len(parts) + 1):
            cand = ".".join(parts[-k:])
            if not any(o != n and (o == cand or o.endswith("." + cand)) for o in names):
                break
        out[n] = cand
    return out


def _fmt_value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def sweep_point_name(config_stem: str, params: Mapping[str, Any]) -> str:
    """``<config stem>,<short name>=<value>,...`` over the point's parameters sorted by name."""
    short = short_names(sorted(params))
    label = config_stem + "".join(f",{short[k]}={_fmt_value(v)}" for k, v in sorted(params.items()))
    return "".join(c if c.isalnum() or c in "_.,=+-" else "_" for c in label)


def agent_point_params() -> Optional[dict[str, Any]]:
    """The parameters ``wandb agent`` gave this process (None outside an agent's run)."""
    path = os.environ.get(SWEEP_PARAMS_ENV)
    if not os.environ.get(SWEEP_ID_ENV) or not path or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    return {k: v["value"] if isinstance(v, dict) and "value" in v else v for k, v in raw.items() if k != "wandb_version"}


def data_name(data: Any) -> str:
    """The dataset part of a run name from the data config: the class, or the ``name`` a generic class is
    given (``TorchvisionSet`` DTD -> ``DTD``, ``ImageNetVariant`` -> ``ImageNetA``), after the protocols that
    wrap it (``BaseToNew-DTD``), so runs of one method on different datasets get different folders."""
    if isinstance(data, Mapping):
        args = data.get("init_args") or {}
        own = args.get("name") if isinstance(args.get("name"), str) else str(data.get("class_path", "data")).rsplit(".", 1)[-1]
        inner = args.get("data")
        return f"{own}-{data_name(inner)}" if isinstance(inner, Mapping) and inner.get("class_path") else own
    return str(data).rsplit(".", 1)[-1]


def default_name(model_class: str, data: Any, configs: list[str]) -> str:
    """``<Method>-<Dataset>`` (see ``data_name``), or under a ``wandb agent`` the sweep point's name from its first config."""
    params = agent_point_params()
    if params and configs:
        return sweep_point_name(Path(configs[0]).stem, params)
    return f"{model_class.rsplit('.', 1)[-1]}-{data_name(data)}"


def last_checkpoint(checkpoints: Path) -> Optional[Path]:
    """The ``last*.ckpt`` that ``--ckpt_path last`` resumes from (Lightning takes the newest), if one
    exists: a link whose target is gone does not count."""
    found = [p for p in Path(checkpoints).glob("last*.ckpt") if p.exists()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def existing_run(run: Path, checkpoints: Optional[Path] = None) -> list[str]:
    """What in ``run`` a fresh ``fit`` would overwrite (its record, its last checkpoint), relative to
    ``run``; empty for a folder that an attempt left before its first checkpoint (config, logs)."""
    run = Path(run)
    checkpoints = Path(checkpoints) if checkpoints is not None else run / CHECKPOINTS
    found = [RECORD] if (run / RECORD).is_file() else []
    if (last := last_checkpoint(checkpoints)) is not None:
        found.append(os.path.relpath(last, run))
    return found
