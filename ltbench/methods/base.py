"""The shared LightningModule every method plugs into.

A method implements only what is its own: its networks (``build_head`` or ``__init__``), its
training logits and loss, and where it has one, its inference rule (``inference_logits``) and its
stages. Optimiser and schedule, stage switching, metrics, logging, throughput and the run record
live here once.
"""

from __future__ import annotations

import datetime as _dt
import os
import random
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, Union

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info

from ltbench.checkpoints import first_mismatch
from ltbench.errors import LTBenchError
from ltbench.methods.optim import OptimizerConfig, SchedulerConfig, build_optimizer, lr_factor, step_progress
from ltbench.methods.stages import Stage, StagePlan
from ltbench.metrics import ShotGroupAccuracy, ShotGroupAveragePrecision, UncertaintyAccuracy
from ltbench.models.backbone import Backbone
from ltbench.records import git_commit, metrics_table, versions, write_json_atomic

Task = Literal["multiclass", "multilabel"]


class LTMethod(L.LightningModule):
    """Base of all methods. The data facts (task ... num_train) are linked in from the data module."""

    #: the tasks a method supports; others are refused with one clear message
    tasks: ClassVar[tuple[str, ...]] = ("multiclass", "multilabel")
    #: whether the method scores any class from its name (CLIP prompt learners), so it can be tested
    #: on classes it never trained on (base-to-new); closed-set methods score their training classes only
    open_vocabulary: ClassVar[bool] = False

    def __init__(
        self,
        backbone: Optional[str] = "resnet32_cifar",
        pretrained: Union[bool, str] = False,
        backbone_kwargs: Optional[dict[str, Any]] = None,
        optimizer: OptimizerConfig = OptimizerConfig(),
        scheduler: SchedulerConfig = SchedulerConfig(),
        task: Task = "multiclass",
        num_classes: int = 10,
        class_names: Optional[list[str]] = None,
        train_class_counts: Optional[list[int]] = None,
        class_groups: Optional[dict[str, list[bool]]] = None,
        in_chans: int = 3,
        num_train: Optional[int] = None,
        freeze: Optional[list[str]] = None,
        norm_eval: bool = False,
    ) -> None:
        super().__init__()
        if task not in self.tasks:
            raise LTBenchError(f"{type(self).__name__} supports {' and '.join(self.tasks)} data; the data module's task is {task!r}")
        optimizer = OptimizerConfig(**optimizer) if isinstance(optimizer, dict) else optimizer
        scheduler = SchedulerConfig(**scheduler) if isinstance(scheduler, dict) else scheduler
        self.save_hyperparameters()
        # plain dicts in checkpoints, so they load with torch.load(weights_only=True)
        self.hparams.optimizer, self.hparams.scheduler = asdict(optimizer), asdict(scheduler)
        self.optimizer_cfg, self.scheduler_cfg = optimizer, scheduler
        self.task = task
        self.num_classes = num_classes
        self.class_names = class_names or [str(i) for i in range(num_classes)]
        self.train_class_counts = train_class_counts or [1] * num_classes
        self.num_train = num_train or sum(self.train_class_counts)
        if len(self.train_class_counts) != num_classes or len(self.class_names) != num_classes:
            raise LTBenchError(
                f"model.init_args: num_classes={num_classes} but {len(self.class_names)} class_names and "
                f"{len(self.train_class_counts)} train_class_counts; these are linked from the data module"
            )
        self.class_groups = class_groups or {"many": [True] * num_classes, "medium": [False] * num_classes, "few": [False] * num_classes}
        # null: the method brings its own image tower (a frozen CLIP)
        self.backbone = Backbone(backbone, pretrained=pretrained, in_chans=in_chans, **(backbone_kwargs or {})) if backbone else None
        metric_cls = ShotGroupAccuracy if task == "multiclass" else ShotGroupAveragePrecision
        self.val_metric = metric_cls(num_classes, self.class_groups)
        self.test_metric = metric_cls(num_classes, self.class_groups)
        self.register_buffer("_nonfinite", torch.zeros((), dtype=torch.bool), persistent=False)
        self.freeze = tuple(freeze or ())
        self.norm_eval = norm_eval
        self.plan: Optional[StagePlan] = None
        self._resumed = False
        self._step_key: Optional[tuple[int, int]] = None
        self._step_gen: Optional[torch.Generator] = None
        self.entered_stage = -1
        self.throughput: dict[str, float] = {}
        self.run_config: Optional[dict[str, Any]] = None
        self.record_path: Optional[Path] = None
        self._epoch_timer: Optional[tuple[float, int]] = None
        self._timed: list[tuple[int, float]] = []
        self._test_sets: Optional[list[Any]] = None
        self._test_metrics: list[Any] = []
        self._uncertainty_metrics: list[UncertaintyAccuracy] = []

    # ---- what a method provides ------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Training-time logits."""
        return self.head(self.backbone(x))

    def training_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.task == "multiclass":
            return F.cross_entropy(logits, target)
        return F.binary_cross_entropy_with_logits(logits, target.float())

    def inference_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits used at validation, test and predict; a method's own inference rule goes here."""
        return self(x)

    def inference_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-sample outputs at validation, test and predict: ``scores`` (probabilities) and any extras
        the method has, e.g. ``uncertainty`` (B,), which the test run's record then reports against accuracy."""
        return {"scores": self.scores(self.inference_logits(x))}

    def use_class_sets(self, class_sets: list[list[str]]) -> None:
        """The class sets the coming evaluation scores, one per evaluation loader (base-to-new: base, new);
        ``activate_class_set(i)`` then picks one. A closed-set method scores its training classes only."""
        if any(list(names) != list(self.class_names) for names in class_sets):
            raise LTBenchError(
                f"{type(self).__name__} scores only the classes it trained on, but the test data names other classes "
                f"(a base-to-new protocol needs an open-vocabulary method: {', '.join(_open_vocabulary_methods())})"
            )

    def activate_class_set(self, index: int) -> None:
        """Score the ``index``-th class set given to ``use_class_sets`` (a no-op for closed-set methods)."""

    def stages(self) -> list[Stage]:
        return [Stage("train")]

    def method_protocol(self) -> dict[str, Any]:
        """Method facts for the run record beyond the hyper-parameters."""
        return {}

    # ---- shared ----------------------------------------------------------------------------
    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Probabilities, applied here so metrics never guess whether inputs are logits."""
        return logits.softmax(dim=-1) if self.task == "multiclass" else logits.sigmoid()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y, _ = batch
        loss = self.training_loss(self(x), y)
        self._nonfinite |= ~torch.isfinite(loss.detach())
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def step_generator(self, device: torch.device) -> Optional[torch.Generator]:
        """The current training step's own generator on ``device``; None outside a training step.

        Seeded in ``on_train_batch_start`` from (seed, epoch, rank, batch index in the epoch), so a
        method's in-step draws (TSCNet's tokens and partners, SeDA's noise and timesteps) depend
        only on where the step is, not on what drew from the global stream before (in a resumed
        epoch, the loader's seed draw; see ``_replay_loader_seed_draw``): a resumed run draws what
        the uninterrupted one drew, and each micro-batch of an accumulated optimiser step draws
        afresh. None on another device than the module's. Made on first use, so a method that draws
        nothing of its own pays nothing per step.
        """
        if self._step_key is None or torch.device(device) != self.device:
            return None
        if self._step_gen is None:
            epoch, batch_idx = self._step_key
            self._step_gen = _step_generator(epoch, self.global_rank, batch_idx, self.device)
        return self._step_gen

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Mark where this step is (``step_generator``); a method overriding this calls super()."""
        self._step_key, self._step_gen = (self.current_epoch, batch_idx), None

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._step_key, self._step_gen = None, None
        if self._epoch_timer is not None:
            start, n = self._epoch_timer
            self._epoch_timer = (start, n + len(batch[0]))
        # the non-finite check reads the device flag only at logging steps, not every step
        if (self.trainer.global_step % max(self.trainer.log_every_n_steps, 1) == 0) and bool(self._nonfinite):
            raise LTBenchError(
                f"non-finite training loss at epoch {self.current_epoch}, step {self.trainer.global_step} "
                f"(method {type(self).__name__}); lower model.init_args.optimizer.lr or check the data"
            )

    def _evaluate(self, metric: Any, batch: Any, uncertainty: Optional[UncertaintyAccuracy] = None) -> None:
        x, y, index = batch
        out = self.inference_outputs(x)
        metric.update(out["scores"], y, index)
        if uncertainty is not None and "uncertainty" in out:
            uncertainty.update(out["uncertainty"], out["scores"], y, index)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(self.val_metric, batch)

    def _enter_class_sets(self) -> Optional[list[Any]]:
        """The data module's named test class sets (``test_class_sets()``: base-to-new), handed to the method."""
        dm = self.trainer.datamodule if self._trainer is not None else None
        sets = dm.test_class_sets() if dm is not None and hasattr(dm, "test_class_sets") else None
        if sets:
            self.use_class_sets([list(s.class_names) for s in sets])
        return sets or None

    def _leave_class_sets(self) -> None:
        if self._test_sets:
            self.use_class_sets([list(self.class_names)])
            self.activate_class_set(0)
        self._test_sets = None

    def on_test_start(self) -> None:
        self._test_sets = self._enter_class_sets()
        if self._test_sets:
            metric_cls = type(self.test_metric)
            self._test_metrics = [metric_cls(len(s.class_names), s.groups).to(self.device) for s in self._test_sets]
        else:
            self._test_metrics = [self.test_metric]
        self._uncertainty_metrics = [UncertaintyAccuracy().to(self.device) for _ in self._test_metrics]

    def on_test_end(self) -> None:
        self._leave_class_sets()

    def on_predict_start(self) -> None:
        self._test_sets = self._enter_class_sets()

    def on_predict_end(self) -> None:
        self._leave_class_sets()

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._test_sets:
            self.activate_class_set(dataloader_idx)
        metric = self._test_metrics[dataloader_idx] if self._test_metrics else self.test_metric  # outside a trainer too
        uncertainty = self._uncertainty_metrics[dataloader_idx] if self._uncertainty_metrics else None
        self._evaluate(metric, batch, uncertainty)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        """``index``, ``scores`` and the method's extras; under class sets, also which set (``class_set``)."""
        if self._test_sets:
            self.activate_class_set(dataloader_idx)
        x, _, index = batch
        out = {"index": index, **self.inference_outputs(x)}
        if self._test_sets:
            out["class_set"] = torch.full_like(index, dataloader_idx)
        return out

    def _log_metric(self, metric: Any, prefix: str) -> dict[str, torch.Tensor]:
        result = metric.compute()
        metric.reset()
        scalars = {f"{prefix}/{k}": v.float() for k, v in result.items() if v.ndim == 0 and k != "num_samples"}
        self.log_dict(scalars)
        return result

    def on_validation_epoch_end(self) -> None:
        self._log_metric(self.val_metric, "val")

    def on_test_epoch_end(self) -> None:
        sets = self._test_sets
        names = [s.name for s in sets] if sets else [None]
        results = [self._log_metric(m, f"test/{n}" if n else "test") for m, n in zip(self._test_metrics, names)]
        uncertainty = {}
        for m, n in zip(self._uncertainty_metrics, names):
            if m.update_called:
                u = m.compute()
                m.reset()
                self.log(f"test/{n}/mean_u" if n else "test/mean_u", u["mean_u"])
                uncertainty[n or "test"] = {k: v.tolist() for k, v in u.items()}
        log_dir = self.trainer.log_dir or self.trainer.default_root_dir  # a collective under DDP: every rank asks
        if not self.trainer.is_global_zero:
            return
        if not sets:
            result = results[0]
            if uncertainty:
                result["mean_u"] = torch.tensor(uncertainty["test"]["mean_u"])
            self.write_record(result, Path(log_dir), uncertainty=uncertainty)
            return
        metrics: dict[str, torch.Tensor] = {}
        per_set = {}
        for s, r in zip(sets, results):
            per_set[s.name] = {"class_names": list(s.class_names), "train_counts": list(s.train_counts), "score": r.pop("per_class").tolist()}
            metrics.update({f"{s.name}_{k}": v for k, v in r.items() if k != "acc"} | {s.name: r["acc"]})
            if s.name in uncertainty:
                metrics[f"{s.name}_mean_u"] = torch.tensor(uncertainty[s.name]["mean_u"])
        dm = self.trainer.datamodule
        summary = dm.summarize_test_sets({s.name: float(r["acc"]) for s, r in zip(sets, results)}) if hasattr(dm, "summarize_test_sets") else {}
        metrics.update({k: torch.tensor(v) for k, v in summary.items()})
        for k, v in summary.items():
            self.log(f"test/{k}", float(v))
        first = per_set[sets[0].name]
        metrics["per_class"] = first["score"]
        metrics["num_samples"] = sum(int(r["num_samples"]) for r in results)
        self.write_record(metrics, Path(log_dir), uncertainty=uncertainty, per_set=per_set)

    # ---- optimiser, schedule and stages ----------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        trainer = self.trainer
        stages = self.stages()
        max_epochs = trainer.max_epochs
        if trainer.fast_dev_run:
            stages = [s if s.epochs is not None else Stage(s.name, 1, s.sampler, s.train, s.reinit, s.lr_scale) for s in stages]
            max_epochs = None
        try:
            self.plan = StagePlan(stages, max_epochs)
        except ValueError as e:
            raise LTBenchError(f"{type(self).__name__}: {e}") from None
        dm = trainer.datamodule
        if dm is not None and hasattr(dm, "set_sampler_schedule"):
            dm.set_sampler_schedule(self.plan.sampler_schedule())

    def configure_optimizers(self) -> Any:
        scaled = getattr(self.trainer.precision_plugin, "scaler", None) is not None
        opt = build_optimizer(self.named_parameters(), self.optimizer_cfg, fused_allowed=not (scaled and self.trainer.gradient_clip_val))
        plan = self.plan or StagePlan(self.stages(), None if self.trainer.max_epochs is None else self.trainer.max_epochs)
        known: dict[str, Any] = {}

        def schedule() -> tuple[int, SchedulerConfig]:
            """Steps per epoch, read at the first step rather than here: counting them makes Lightning build
            the train loader's first iterator, and here a resumed run has not restored its epoch yet (worker
            processes would draw epoch 0's sample order for the resumed epoch)."""
            if not known:
                spe = max(1, -(-int(self.trainer.estimated_stepping_batches) // max(plan.total_epochs, 1)))
                cfg = self.scheduler_cfg
                known.update(spe=spe, cfg=replace(cfg, warmup_epochs=cfg.warmup_steps / spe) if cfg.warmup_steps else cfg)
            return known["spe"], known["cfg"]

        def factor(step: int) -> float:
            if step == 0:  # the scheduler's construction: progress 0 (inside any warm-up) whatever the epoch length
                cfg = self.scheduler_cfg
                cfg = replace(cfg, warmup_epochs=1.0) if cfg.warmup_steps else cfg
                return plan.stages[0].lr_scale * lr_factor(cfg, step_progress(cfg, 0, 1), plan.stages[0].epochs)
            spe, cfg = schedule()
            i = plan.index_at(step // spe)
            stage = plan.stages[i]
            local = step - plan.starts[i] * spe
            return stage.lr_scale * lr_factor(cfg, step_progress(cfg, local, spe), stage.epochs)

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _trainable(self, name: str, stage: Stage) -> bool:
        return (stage.train is None or _under(name, stage.train)) and not _under(name, self.freeze)

    def _apply_stage_modes(self, stage: Stage) -> None:
        """Freeze what the stage and ``freeze`` exclude (eval mode too); ``norm_eval`` freezes BN statistics."""
        if stage.train is None and not self.freeze and not self.norm_eval:
            return
        for name, p in self.named_parameters():
            p.requires_grad_(self._trainable(name, stage))
        for name, module in self.named_modules():
            if not name:
                continue
            frozen = (stage.train is not None and not _under(name, stage.train)) or _under(name, self.freeze)
            if frozen or (self.norm_eval and isinstance(module, torch.nn.modules.batchnorm._BatchNorm)):
                # per module, not recursive: a trained block inside a frozen parent stays in train mode
                module.training = False

    def on_train_epoch_start(self) -> None:
        _seed_epoch(self.current_epoch, self.global_rank)
        if self._resumed:
            self._resumed = False
            _replay_loader_seed_draw(self.trainer.train_dataloader)
        plan = self.plan
        if plan is None:
            return
        i = plan.index_at(self.current_epoch)
        stage = plan.stages[i]
        if i > self.entered_stage:
            self.on_stage_start(i, stage)
            self.entered_stage = i
        self._apply_stage_modes(stage)
        self._epoch_timer = (time.perf_counter(), 0)

    def on_stage_start(self, index: int, stage: Stage) -> None:
        """Re-initialise what the stage asks for and give what it trains a fresh optimiser state."""
        if len(plan_stages := self.plan.stages) > 1:
            rank_zero_info(f"ltbench: stage {index + 1}/{len(plan_stages)} '{stage.name}' ({stage.epochs} epochs)")
        for name in stage.reinit:
            module = self.get_submodule(name)
            for m in module.modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
        if index > 0 and self.trainer is not None:
            for opt in self.trainer.optimizers:
                for name, p in self.named_parameters():
                    if self._trainable(name, stage):
                        opt.state.pop(p, None)

    def on_validation_model_train(self) -> None:
        super().on_validation_model_train()
        if self.plan is not None:
            self._apply_stage_modes(self.plan.stages[self.plan.index_at(self.current_epoch)])

    # ---- throughput ------------------------------------------------------------------------
    def _stop_epoch_timer(self) -> None:
        if self._epoch_timer is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start, n = self._epoch_timer
        self._timed.append((n, time.perf_counter() - start))
        self._epoch_timer = None
        timed = self._timed[1:] or self._timed  # the first epoch carries warm-up costs
        n_total, t_total = sum(n for n, _ in timed), sum(t for _, t in timed)
        if t_total > 0:
            world = self.trainer.world_size if self.trainer else 1
            self.throughput = {
                "train_images_per_s": n_total * world / t_total,
                "epochs_timed": len(timed),
                "devices": world,
                "accelerator": self.device.type,
            }

    def on_validation_start(self) -> None:
        if self.trainer.training or self.trainer.state.fn == "fit":
            self._stop_epoch_timer()

    def on_train_epoch_end(self) -> None:
        self._stop_epoch_timer()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # raising here stops the save: last.ckpt keeps the last finite state, so --ckpt_path last resumes sanely
        tensors = [t for t in checkpoint.get("state_dict", {}).values() if t.is_floating_point()]  # what is saved (a causal mask's -inf is not)
        if bool(self._nonfinite) or (tensors and not bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())):
            raise LTBenchError(
                f"non-finite weights or training loss at epoch {self.current_epoch}, step {self.trainer.global_step} "
                f"(method {type(self).__name__}); no checkpoint saved from this state, the last one is left as it was; "
                "lower model.init_args.optimizer.lr or check the data"
            )
        checkpoint["ltbench"] = {"entered_stage": self.entered_stage, "throughput": self.throughput}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if checkpoint.get("optimizer_states") and self._trainer is not None and self.trainer.state.fn == "fit":
            self._refuse_resuming_reshaped(checkpoint.get("state_dict") or {})
        state = checkpoint.get("ltbench", {})
        self._resumed = True
        self.entered_stage = state.get("entered_stage", -1)
        self.throughput = state.get("throughput", {})

    def _refuse_resuming_reshaped(self, state_dict: dict[str, Any]) -> None:
        """A tensor a module reshapes on load (``accepts_shape``: a whole token table read into its used
        rows) loads as weights, but the optimiser state saved for it cannot continue (its shape is the
        old one): one line instead of a size mismatch inside the optimiser step."""
        params = dict(self.named_parameters())  # buffers may be refilled after loading (TSCNet's dictionary)
        found = first_mismatch(self, {k: v for k, v in state_dict.items() if k in params}, accept_reshaped=False)
        if found is not None:
            key, there, here = found
            raise LTBenchError(
                f"cannot resume: the checkpoint's {key} is {there} and this model's {here}, so its optimiser "
                "state does not fit; evaluate the checkpoint (ltbench test --ckpt_path) or start a new run from its weights"
            )

    # ---- run record ------------------------------------------------------------------------
    def protocol(self) -> dict[str, Any]:
        dm = self.trainer.datamodule if self._trainer is not None else None
        plan = self.plan
        proto = dict(dm.protocol()) if dm is not None and hasattr(dm, "protocol") else {}
        proto.update(
            {
                "backbone": self.hparams.backbone,
                "pretrained": self.hparams.pretrained,
                "epochs": plan.total_epochs if plan else (self.trainer.max_epochs if self._trainer else None),
                "stages": [asdict(s) | {"epochs": s.epochs} for s in plan.stages] if plan else None,
                "seed": _global_seed(),
                "precision": str(self.trainer.precision) if self._trainer else None,
            }
        )
        proto.update(self.method_protocol())
        return proto

    def write_record(
        self,
        result: dict[str, Any],
        log_dir: Path,
        uncertainty: Optional[dict[str, Any]] = None,
        per_set: Optional[dict[str, Any]] = None,
    ) -> Path:
        proto = self.protocol()
        per_class = result.pop("per_class")
        record = {
            "schema": 1,
            "method": type(self).__name__,
            "dataset": proto.get("dataset"),
            "task": self.task,
            "seed": proto.get("seed"),
            "protocol": proto,
            "metrics": {k: float(v) for k, v in result.items() if k != "num_samples"},
            "num_test_samples": (scored := int(result.get("num_samples", -1))),
            "test_split_size": (size := self._test_split_size()),
            # a run limited with limit_test_batches scores part of the split: not comparable on a board
            "partial_test": size is not None and 0 <= scored < size,
            "per_class": {
                "class_names": self.class_names,
                "train_counts": self.train_class_counts,
                "score": per_class,
            },
            **({"uncertainty": uncertainty} if uncertainty else {}),
            **({"per_class_sets": per_set} if per_set else {}),
            "throughput": self.throughput,
            "checkpoint": self.trainer.ckpt_path,
            "weights": getattr(self, "weights_path", None),
            "config": self.run_config,
            "hparams": {k: v for k, v in self.hparams.items() if k not in ("class_names", "train_class_counts", "class_groups", "num_train")},
            "versions": versions(),
            "git": git_commit(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        self.record_path = write_json_atomic(log_dir / "record.json", record)
        rank_zero_info(metrics_table(record["metrics"], self.task))
        rank_zero_info(f"ltbench: run record written to {self.record_path}")
        return self.record_path


    def _test_split_size(self) -> Optional[int]:
        """Images in the evaluated test split (before any ``limit_test_batches``), None if unknown."""
        loaders = self.trainer.test_dataloaders
        loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        try:
            return sum(dl.num_items if hasattr(dl, "num_items") else len(dl.dataset) for dl in loaders)  # DeviceBatches or DataLoader
        except (AttributeError, TypeError):
            return None


def _open_vocabulary_methods() -> list[str]:
    """The methods the package registers (``ltbench.methods``) that declare ``open_vocabulary``, so the
    advice follows the registry instead of a list of names here."""
    import ltbench.methods as registry

    return [name for name in registry.__all__ if getattr(getattr(registry, name), "open_vocabulary", False)]


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _seed_epoch(epoch: int, rank: int) -> None:
    """Start every training epoch from random state derived from (seed, epoch, rank).

    Stage re-initialisation, per-step random draws (dictionary tokens, Fourier partners, diffusion
    noise) and loader worker seeds then depend only on where the run is, so a run resumed from any
    epoch boundary continues bit-identically: the checkpoint need not hold the global random state.
    """
    seed = _global_seed() or 0
    state = np.random.SeedSequence([seed, epoch, rank]).generate_state(2)
    torch.manual_seed(int(state[0]) << 32 | int(state[1]))
    np.random.seed(int(state[0]))
    random.seed(int(state[1]))


def _step_generator(epoch: int, rank: int, batch_idx: int, device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded from (seed, epoch, rank, batch index in the epoch)."""
    state = np.random.SeedSequence([_global_seed() or 0, epoch, rank, batch_idx]).generate_state(2)
    gen = torch.Generator(device=device)
    gen.manual_seed(int(state[0]) << 32 | int(state[1]))
    return gen


def _replay_loader_seed_draw(loader: Any) -> None:
    """Draw what a DataLoader's iterator draws from the global generator (its workers' base seed).

    In an ordinary epoch Lightning creates the loader's iterator after ``on_train_epoch_start``, so
    that draw follows the epoch's re-seed; in the first epoch after a resume it creates it before.
    Replaying the draw after the re-seed puts a resumed epoch's in-step draws (views, dropout) where
    the uninterrupted run has them. A loader with its own generator, or none, draws nothing here.
    """
    from torch.utils.data import DataLoader

    if isinstance(loader, DataLoader) and loader.generator is None:
        torch.empty((), dtype=torch.int64).random_()


def _global_seed() -> Optional[int]:
    seed = os.environ.get("PL_GLOBAL_SEED")
    return int(seed) if seed is not None else None


__all__ = ["LTMethod", "Stage"]
