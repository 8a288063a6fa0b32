"""Running one config: a LightningCLI over every registered method and data module.

The ``ltbench`` command (``ltbench/cli.py``), suites and benchmarks run configs through ``run`` and
``build``; this module never imports the command layer.

Importing ``ltbench.methods`` and ``ltbench.data`` registers their classes, so configs name them by
class. The data module's facts (task, classes, per-class training counts, shot groups, input
channels) are linked into the model at instantiation and never repeated in a config.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

import yaml
from jsonargparse import Namespace
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

import ltbench.data  # noqa: F401  (registers data modules)
import ltbench.methods  # noqa: F401  (registers methods)
from ltbench.checkpoints import check_fits, read_checkpoint
from ltbench.config_errors import ConfigParser, check_yaml_files
from ltbench.data.base import LTDataModule
from ltbench.errors import Interrupted, LTBenchError
from ltbench.methods.base import LTMethod
from ltbench.run_log import KeepEarlierRows, RunCSVLogger
from ltbench.rundirs import CHECKPOINTS, RECORD, default_name, existing_run, last_checkpoint

LINKS = {
    "task": "task",
    "num_classes": "num_classes",
    "class_names": "class_names",
    "train_class_counts": "train_class_counts",
    "in_chans": "in_chans",
    "num_train": "num_train",
}


WEIGHTS_FILE = "weights.ckpt"


def _groups(dm: LTDataModule) -> dict[str, list[bool]]:
    return {k: [bool(b) for b in v] for k, v in dm.groups.items()}


class LTBenchCLI(LightningCLI):
    def __init__(self, *args: Any, only: Optional[str] = None, **kwargs: Any) -> None:
        self._only = only
        super().__init__(*args, **kwargs)

    def subcommands(self) -> dict[str, set[str]]:
        """With ``only``, just that subcommand's parser is built: each one costs a pass over every
        method's and data module's signature, about a tenth of a Digits run."""
        every = LightningCLI.subcommands()
        return {self._only: every[self._only]} if self._only in every else every

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any):
        """``test`` prints the run record's table (percent, board order), not Lightning's raw one."""
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "test":
            parser.set_defaults(verbose=False)
        return parser

    def add_arguments_to_parser(self, parser) -> None:
        for src, dst in LINKS.items():
            parser.link_arguments(f"data.{src}", f"model.init_args.{dst}", apply_on="instantiate")
        parser.link_arguments("data", "model.init_args.class_groups", compute_fn=_groups, apply_on="instantiate")
        parser.add_argument("--run_dir", type=str, default="runs", help="root of run directories")
        parser.add_argument("--name", type=Optional[str], default=None, help="run name (default: <Method>-<Dataset>)")
        parser.add_argument("--version", type=Optional[str], default=None, help="run version (default: seed<seed>)")
        parser.add_argument("--test_after_fit", type=bool, default=True, help="evaluate on the test split after fit and write the run record")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        # one full checkpoint per run (the latest, for resuming); last.ckpt links to it, no copy
        parser.set_defaults({"checkpoint.save_last": "link"})

    def _sub(self) -> Any:
        return self.config[self.subcommand] if self.subcommand else self.config

    def _run_location(self, own_folder: bool = True) -> Path:
        """``<run_dir>/<name>/<version>``, from the config alone (the same before and after instantiation).

        ``test``/``validate``/``predict`` of a checkpoint in a directory that holds a training run
        (its ``checkpoints/``) write into a folder of their own inside it, named from the checkpoint
        and the config, so the training run's record and config are never replaced (``own_folder=False``:
        the training run's directory, where its checkpoints are).
        """
        cfg = self._sub()
        configs = [str(c) for c in (cfg.get("config") or [])]
        name = cfg.get("name") or default_name(cfg["model"]["class_path"], _as_dict(cfg["data"]), configs)
        where = Path(cfg.get("run_dir") or "runs") / name / (cfg.get("version") or f"seed{cfg.get('seed_everything')}")
        if not own_folder or self.subcommand in (None, "fit") or not (where / "checkpoints").is_dir():
            return where
        try:
            resolved = yaml.safe_load(self._parser(self.subcommand).dump(cfg, skip_none=False))
        except Exception:  # noqa: BLE001 - any stable text of the config will do for the folder's name
            resolved = str(cfg)
        digest = hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()[:8]
        return where / f"{self.subcommand}-{Path(str(cfg.get('ckpt_path') or 'none')).stem}-{digest}"

    def _checkpoint_dir(self) -> Path:
        """Where this run's checkpoints go: ``checkpoint.dirpath``, else ``<run>/checkpoints``."""
        dirpath = (self._sub().get("checkpoint") or {}).get("dirpath")
        return Path(dirpath) if dirpath else self._run_location(own_folder=False) / CHECKPOINTS

    def _refuse_existing_run(self) -> None:
        """A fresh ``fit`` into a directory holding a run would retrain it, replace its record and leave
        a second full checkpoint (``-v1``) beside the first; say so before any work instead."""
        if self.subcommand != "fit" or self._sub().get("ckpt_path"):
            return
        where = self._run_location()
        found = existing_run(where, self._checkpoint_dir())
        if not found:
            return
        ckpt = [f for f in found if f != RECORD]
        finished = RECORD in found or (self._checkpoint_dir() / WEIGHTS_FILE).is_file()
        if finished:
            what = f"a finished run ({', '.join(found)})"
            todo = "give another --version (or --name, --run_dir) for a new run beside it" + (", --ckpt_path last to continue it" if ckpt else "")
        else:
            what = f"an interrupted run ({', '.join(ckpt)}, no {RECORD})"
            todo = "resume it with --ckpt_path last, give another --version (or --name, --run_dir) for a new run beside it"
        raise LTBenchError(f"fit: {where} already holds {what}; {todo}, or remove {where} to redo it")

    def before_instantiate_classes(self) -> None:
        """Refuse a fresh fit over an existing run. A W&B logger without a ``save_dir`` keeps its files
        in the run directory, named after the run."""
        self._refuse_existing_run()
        loggers = self._sub()["trainer"].get("logger")
        where = self._run_location()
        for lg in loggers if isinstance(loggers, list) else [loggers]:
            if isinstance(lg, Namespace) and str(lg.get("class_path", "")).endswith("WandbLogger"):
                if lg.get("init_args.save_dir") is None:
                    lg["init_args.save_dir"] = str(where)
                if lg.get("init_args.name") is None:
                    lg["init_args.name"] = f"{where.parent.name}/{where.name}"

    def instantiate_trainer(self, **kwargs: Any):
        cfg = self._sub()
        trainer_cfg = cfg["trainer"]
        user_logger = trainer_cfg.get("logger")
        where = self._run_location()
        if user_logger is False:  # no logs, but the config, checkpoints and record still go to the run directory
            trainer = super().instantiate_trainer(**kwargs, default_root_dir=str(where))
        else:
            if user_logger in (None, True):
                # the Trainer itself gets no default logger (which would look for TensorBoard and warn)
                trainer_cfg["logger"] = kwargs["logger"] = False
            trainer = super().instantiate_trainer(**kwargs)
            # The run's own CSV log comes first whatever loggers the config adds (a WandbLogger piece), so
            # trainer.log_dir, where config.yaml and record.json go, is always the run directory: never a
            # logger's shared save_dir, where a second run would overwrite the first's files.
            added = [] if user_logger in (None, True) else list(trainer.loggers)
            resume = self.subcommand == "fit" and bool(cfg.get("ckpt_path"))
            log = RunCSVLogger(save_dir=where.parent.parent, name=where.parent.name, version=where.name, resume=resume)
            trainer.loggers = [log, *added]
            if resume:
                trainer.callbacks.append(KeepEarlierRows(log))
        checkpoints = self._run_location(own_folder=False) / CHECKPOINTS
        for cb in trainer.checkpoint_callbacks:
            if cb.dirpath is None:
                cb.dirpath = str(checkpoints)
            if cb.monitor is None and getattr(cb, "_save_on_train_epoch_end", False) is None:
                # the latest-epoch checkpoint follows training, not the validation cadence (Lightning's
                # default saves after validation only, so check_val_every_n_epoch 5 would resume up to 4
                # epochs back); a monitored checkpoint keeps saving after the validation it ranks by
                cb._save_on_train_epoch_end = True
        return trainer

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except SIGTERMException:  # a SystemExit without a code: a scheduler would read success
            self._finish_wandb(exit_code=1)
            raise Interrupted(self._stopped(subcommand)) from None
        except BaseException:
            self._finish_wandb(exit_code=1)
            raise
        self._finish_wandb(exit_code=0)

    def _stopped(self, subcommand: str) -> str:
        """Where a run stopped by SIGTERM stands and how to go on."""
        trainer = self.trainer
        where = self._run_location()
        last = last_checkpoint(self._checkpoint_dir())
        if subcommand == "fit" and last is not None:
            then = f"resume with the same command and --ckpt_path last (from {last})"
        elif subcommand == "fit":
            then = "no checkpoint was saved yet; run the same command again to start over"
        else:
            then = "run the same command again"
        return f"{subcommand} stopped by SIGTERM after {trainer.current_epoch} completed epochs (step {trainer.global_step}) of {where}; {then}"

    def _check_resume(self) -> None:
        """``--ckpt_path last`` with no last checkpoint: Lightning would train from scratch after a hint."""
        if self._sub().get("ckpt_path") != "last":
            return
        dirs = [Path(cb.dirpath) for cb in self.trainer.checkpoint_callbacks if cb.dirpath]
        if not any(last_checkpoint(d) for d in dirs):
            where = dirs[0] if dirs else self._checkpoint_dir()
            raise LTBenchError(
                f"ckpt_path last: nothing to resume, {where} holds no last.ckpt (is --run_dir/--name/--version that "
                "of the stopped run?); leave out --ckpt_path to start the run, or give a checkpoint file"
            )

    def _finish_wandb(self, exit_code: int) -> None:
        """End a W&B run this CLI started, so its files are complete and an offline one can be synced."""
        trainer = getattr(self, "trainer", None)
        for lg in trainer.loggers if trainer is not None else []:
            run = getattr(lg, "_experiment", None)
            if type(lg).__name__ == "WandbLogger" and run is not None and hasattr(run, "finish"):
                offline = getattr(getattr(run, "settings", None), "_offline", False)
                path = getattr(run, "dir", None)
                run.finish(exit_code=exit_code)
                if offline and path and trainer.is_global_zero:
                    print(f"ltbench: W&B run logged offline; upload it with `wandb sync {Path(path).parent}`", file=sys.stderr)

    def _parse_ckpt_path(self) -> None:
        """The config and the command line decide the model; a checkpoint only gives its weights.

        Lightning re-applies a checkpoint's saved hyper-parameters over the parsed config, which
        silently drops overrides such as ``test --ckpt_path X --model.init_args.tau 2``. Here only
        the method class is checked against the checkpoint's.
        """
        sub = self.config.get("subcommand")
        ckpt_path = self.config[sub].get("ckpt_path") if sub else None
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        ckpt = read_checkpoint(ckpt_path)
        self._ckpt_state = (ckpt_path, ckpt["state_dict"])
        saved = ckpt.get("hyper_parameters", {}).get("_class_path")
        wanted = self.config[sub]["model"].get("class_path")
        if saved and wanted and saved != wanted:
            raise LTBenchError(f"checkpoint {ckpt_path} was trained by {saved}, but the config's model is {wanted}")

    def _resolved_config(self) -> dict[str, Any]:
        parser = self._parser(self.subcommand)
        return yaml.safe_load(parser.dump(self._sub(), skip_none=False, skip_link_targets=False))

    def _attach_config(self) -> None:
        self._check_resume()
        if state := getattr(self, "_ckpt_state", None):
            check_fits(self.model, state[1], state[0])
            self._ckpt_state = None
        if isinstance(self.model, LTMethod):
            try:
                self.model.run_config = self._resolved_config()
            except Exception:  # the record still carries hparams and protocol
                self.model.run_config = None

    def before_fit(self) -> None:
        self._attach_config()

    def before_test(self) -> None:
        self._attach_config()

    def after_fit(self) -> None:
        if self.trainer.interrupted or self.trainer.fast_dev_run:
            return
        self._save_weights()
        if self._sub().get("test_after_fit"):
            self.trainer.test(self.model, datamodule=self.datamodule, verbose=False)

    def _save_weights(self) -> None:
        """``<checkpoints>/weights.ckpt``: the weights the run is evaluated with (after averaging, where a
        method averages) and its hyper-parameters, without optimiser or callback state. ``ltbench
        test``/``predict`` take it as ``--ckpt_path``. A collective under DDP: every rank calls it."""
        callback = self.trainer.checkpoint_callback
        if callback is None or callback.dirpath is None:
            return
        path = Path(callback.dirpath) / WEIGHTS_FILE
        self.trainer.save_checkpoint(path, weights_only=True)
        if isinstance(self.model, LTMethod):
            self.model.weights_path = str(path)


CLI_KWARGS: dict[str, Any] = dict(
    model_class=LTMethod,
    datamodule_class=LTDataModule,
    subclass_mode_model=True,
    subclass_mode_data=True,
    seed_everything_default=0,
    save_config_kwargs={"overwrite": True},
    parser_kwargs={"default_env": False, "prog": "ltbench"},
    parser_class=ConfigParser,
)


# Warnings every run printed that say nothing about the run, each matched by message, category and
# the module it is attributed to, so the same text from anywhere else still shows.
KNOWN_NOISE = [
    # Lightning's own pytree helper on torch >= 2.10; nothing a user can change
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, r"lightning\.pytorch\.utilities\._pytree"),
    # val/ and test/ scalars are computed by torchmetrics, which already reduced them across processes
    (r"It is recommended to use `self\.log\('(val|test)/", Warning, r"lightning\.pytorch\..*|ltbench\..*"),
]


class _DropTips(logging.Filter):
    """Lightning's "💡 Tip: ... try installing litlogger/litmodels" advertisements, printed every run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def quiet_known_noise() -> None:
    """Install the targeted filters above (idempotent)."""
    for message, category, module in KNOWN_NOISE:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in log.filters):
            log.addFilter(_DropTips())


def run(args: Optional[list[str]] = None, run: bool = True) -> LTBenchCLI:
    """Run the CLI in-process and return it (tests read ``cli.model`` and ``cli.trainer``).

    With ``run=False`` there is no subcommand: ``args`` are ``--config``/overrides and the CLI only
    instantiates the model, data module and trainer.
    """
    quiet_known_noise()
    argv = sys.argv[1:] if args is None else args
    check_yaml_files(argv)
    only = argv[0] if run and argv and argv[0] in LightningCLI.subcommands() else None
    return LTBenchCLI(**CLI_KWARGS, args=args, run=run, only=only)


def build(args: list[str]) -> tuple[LTMethod, LTDataModule]:
    """Model and data module of a config, facts linked, without training (benchmarks use it).

    Scripts pass their own arguments here, not ``sys.argv``: LightningCLI's warning about having both is moot.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        cli = run(args, run=False)
    return cli.model, cli.datamodule


def _as_dict(value: Any) -> Any:
    return value.as_dict() if isinstance(value, Namespace) else value
