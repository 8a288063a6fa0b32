"""SeDA (reconstructed from the abstract): semantic-space-intervened diffusive alignment of visual to text features.

Li, Meng, Chao, Wu, Yang, Yan, Qi, Meng, IJCAI'25 (arXiv 2505.05721). Only the abstract is confirmed
and there is no public code: the structure below is the abstract's, every inferred part an option
(see ``docs/methods/seda.md`` and ``shared/specs/methods_tscnet_seda_cdc.md`` section 2).

Features: v from the backbone and fixed class text features t_c (an open_clip text tower run once
when fit starts, over a template set; only the (C, E) result is kept), each normalised as
``visual_norm`` / ``text_norm`` say; with ``text_source: item`` a training image's text target is
instead its own texts' feature (e.g. COCO captions from the data module's ``item_texts``, embedded
once when fit starts and gathered by the batch's index; training only). Visual category centres mu_c are
a running statistic of the detached features. Stages, in one ``fit``:

1. ``backbone``: the backbone and a linear head trained with CE (BCE for multi-label data).
2. ``semantic_learner``: a conditional denoiser eps(s_k, k, v) trained with the DDPM loss on
   s_0 = mu_y (``learner_target: centre``) or v (``visual``); its interactive (hidden) feature is
   pulled to mu_y (``centre_loss``). The semantic feature s is the learner's DDIM output given v.
3. ``semantic_translator``: a second denoiser over text features conditioned on [s; v] through the
   progressive feature interaction network (PFIN: cross-attention or gated fusion in every block,
   so at every reverse step), trained with the DDPM loss on t_0 = t_y plus an alignment loss on
   its one-step estimate of t_0.
4. ``classifier``: a linear or cosine head on [v; t_hat], t_hat generated exactly as at test time
   (the backbone and both denoisers frozen); or no head: ``classifier: text_similarity`` scores
   cos(t_hat, t_c).

Inference needs the image only: t_hat comes from a fixed-step DDIM chain started from one seeded
noise vector, and the ground-truth text never enters. ``variant: projection`` is the one-step
baseline the abstract argues against (the translator network called once on v, no diffusion, the
same alignment loss), ``variant: stage1`` classifies from [v; s] without a translator.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ltbench.errors import LTBenchError
from ltbench.methods.base import LTMethod
from ltbench.methods.stages import Stage
from ltbench.models.clip_text import class_text_features, grouped_text_features, register_configs, resolve_templates
from ltbench.models.feature_diffusion import Arch, NoiseSchedule, Prediction, VectorDenoiser, param_count
from ltbench.models.feature_stats import ClassCentres, FeatureNorm, NormMode
from ltbench.models.heads import CosineHead

Variant = Literal["full", "stage1", "projection"]
Classifier = Literal["linear", "cosine", "text_similarity"]
Distance = Literal["mse", "cos"]
TextSource = Literal["class", "item"]


def _distance(kind: Distance, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample squared error (mean over dimensions) or 1 - cosine, (B,)."""
    if kind == "mse":
        return (a - b).pow(2).mean(-1)
    return 1.0 - F.cosine_similarity(a, b, dim=-1)


def _masked_mean(loss: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return (loss * valid).sum() / valid.sum().clamp_min(1.0)


def _text_dim(model_name: str) -> Optional[int]:
    import open_clip

    register_configs()
    cfg = open_clip.get_model_config(model_name)
    return int(cfg["embed_dim"]) if cfg and "embed_dim" in cfg else None


class SeDA(LTMethod):
    """SeDA (reconstructed from the abstract); ``variant`` gives the full method and its two ablation rows."""

    def __init__(
        self,
        variant: Variant = "full",
        text_model: str = "RN50",
        text_pretrained: Optional[str] = None,
        quick_gelu: Optional[bool] = None,
        templates: Union[str, list[str]] = "photo",
        text_source: TextSource = "class",
        visual_norm: NormMode = "standardise",
        text_norm: NormMode = "standardise",
        centre_momentum: Optional[float] = 0.9,
        stage1_sampler: Optional[str] = None,
        classifier_sampler: Optional[str] = None,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "linear",
        prediction: Prediction = "sample",
        sample_steps: int = 10,
        sample_seed: int = 0,
        clip_sample: Optional[float] = 5.0,
        learner_target: Literal["centre", "visual"] = "centre",
        arch: Arch = "mlp",
        width: int = 128,
        depth: int = 2,
        heads: int = 4,
        dropout: float = 0.0,
        pfin: Literal["xattn", "gated"] = "xattn",
        centre_loss: Distance = "mse",
        align_loss: Distance = "cos",
        classifier: Classifier = "linear",
        cosine_scale: float = 16.0,
        diffusion_weight: float = 1.0,
        centre_weight: float = 1.0,
        align_weight: float = 1.0,
        pretrain_epochs: Optional[int] = None,
        learner_epochs: int = 10,
        translator_epochs: int = 10,
        classifier_epochs: int = 5,
        denoiser_lr_scale: float = 1.0,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            variant: ``full`` (SeDA), ``stage1`` (semantic learner only, head on [v; s]) or ``projection``
                (the one-step MLP v -> t with the alignment loss, no diffusion).
            text_model, text_pretrained, quick_gelu: the open_clip text tower (``ltbench-tiny-text`` for
                tests; a tag downloads, a local file does not, None is a random tower seeded by 0).
            templates: a template set (``photo``: "a photo of a {}."; ``clip7``: CLIP's 7-template
                ensemble) or a list of templates.
            text_source: the stage-2 (and projection) text target of a training image: ``class`` (its class's
                text feature; multi-label: the mean over its positives) or ``item`` (the prompt-ensemble mean
                of its own texts, e.g. COCO captions, from the data module's ``item_texts``; training only).
            visual_norm, text_norm: ``standardise`` (per-dimension, running statistics for v, over the
                classes for t), ``l2`` or ``none``: the abstract's feature-range mismatch.
            centre_momentum: EMA momentum of the visual category centres; null: exact running mean.
            stage1_sampler: sampler of the semantic-learner (or projection) stage, e.g. ``class_balanced``
                for class-balanced centre estimation; null keeps the data's.
            classifier_sampler: sampler of the classifier stage; null keeps the data's.
            num_train_timesteps, beta_schedule: diffusers DDPM schedule of both stages.
            prediction: the denoisers predict the clean ``sample`` or ``epsilon``. ``sample`` by default: with
                ``epsilon`` the few-step sampler of the Digits-LT denoisers diverged (docs/methods/seda.md).
            sample_steps, sample_seed: the deterministic DDIM sampler used for s and t_hat.
            clip_sample: clamp the sampler's clean-vector estimates to [-c, c] (null: no clamp).
            learner_target: the stage-1 diffusion's clean vector, mu_y (``centre``) or v (``visual``).
            arch, width, depth, heads, dropout: both denoisers (``mlp`` blocks or a ``transformer``).
            pfin: the translator's interaction with [s; v] at every block: ``xattn`` or ``gated``.
            centre_loss: the pull of the learner's hidden feature to mu_y, ``mse`` or ``cos``.
            align_loss: the alignment of the translator's (or projection's) t_0 estimate to t_y.
            classifier: ``linear`` or ``cosine`` head on [v; t_hat], or ``text_similarity``
                (cosine_scale * cos(t_hat, t_c), no head and no classifier stage).
            diffusion_weight, centre_weight, align_weight: loss weights (stage 1: diffusion + centre;
                stage 2: diffusion + align; projection: align).
            pretrain_epochs: backbone CE epochs (null: what trainer.max_epochs leaves).
            learner_epochs, translator_epochs, classifier_epochs: the other stages' epochs
                (``translator_epochs`` is the projection stage's for ``variant: projection``).
            denoiser_lr_scale: learning-rate factor of the learner, translator and projection stages.
        """
        super().__init__(**kwargs)
        if variant not in ("full", "stage1", "projection"):
            raise LTBenchError(f"SeDA: variant={variant!r}; expected 'full', 'stage1' or 'projection'")
        if classifier not in ("linear", "cosine", "text_similarity"):
            raise LTBenchError(f"SeDA: classifier={classifier!r}; expected 'linear', 'cosine' or 'text_similarity'")
        if classifier == "text_similarity" and (variant == "stage1" or classifier_epochs):
            raise LTBenchError("SeDA: classifier=text_similarity scores t_hat against the class text features: it needs "
                               "a translator (variant full or projection) and classifier_epochs: 0")  # fmt: skip
        if classifier != "text_similarity" and classifier_epochs < 1:
            raise LTBenchError(f"SeDA: classifier={classifier} needs classifier_epochs >= 1 to train its head")
        for name, value, allowed in (
            ("centre_loss", centre_loss, ("mse", "cos")),
            ("align_loss", align_loss, ("mse", "cos")),
            ("learner_target", learner_target, ("centre", "visual")),
            ("pfin", pfin, ("xattn", "gated")),
            ("text_source", text_source, ("class", "item")),
        ):
            if value not in allowed:
                raise LTBenchError(f"SeDA: {name}={value!r}; expected {' or '.join(map(repr, allowed))}")
        self.variant, self.classifier = variant, classifier
        self.learner_target, self.centre_loss, self.align_loss = learner_target, centre_loss, align_loss
        self.sample_steps, self.sample_seed = sample_steps, sample_seed
        self.weights = {"diffusion": diffusion_weight, "centre": centre_weight, "align": align_weight}
        self.templates = resolve_templates(templates)
        dv = self.backbone.num_features
        dt = _text_dim(text_model)
        self.pre_head = nn.Linear(dv, self.num_classes)
        self.vnorm = FeatureNorm(dv, visual_norm)
        self.centres = ClassCentres(self.num_classes, dv, centre_momentum)
        self.schedule = NoiseSchedule(num_train_timesteps, beta_schedule, prediction=prediction, clip_sample=clip_sample)
        self.register_buffer("text_ready", torch.zeros((), dtype=torch.bool))
        if dt is None:  # no open_clip config to read the width from: run the tower now
            self.register_buffer("text_raw", self._encode_text())
            self.text_ready.fill_(text_source == "class")  # item features need the data module: set-up
            dt = self.text_raw.shape[1]
        else:
            self.register_buffer("text_raw", torch.zeros(self.num_classes, dt))
        self.text_source = text_source
        # per-item text features (N_train, E), filled like text_raw when fit starts; training targets only. Only
        # ``item`` runs have the buffer, so class-mode checkpoints keep their keys (and older ones load)
        if text_source == "item":
            self.register_buffer("item_raw", torch.zeros(self.num_train, dt))
        else:
            self.item_raw: Optional[torch.Tensor] = None
        self.tnorm = FeatureNorm(dt, text_norm)
        if bool(self.text_ready) and text_source == "class":
            self.tnorm.fit(self.text_raw)
        net = dict(width=width, depth=depth, arch=arch, heads=heads, dropout=dropout)
        self.learner = VectorDenoiser(dv, [dv], interaction="add", hidden_dim=dv, **net) if variant != "projection" else None
        if variant == "full":
            self.translator = VectorDenoiser(dt, [dv, dv], interaction=pfin, **net)
        elif variant == "projection":
            self.translator = VectorDenoiser(dt, [dv], interaction=pfin, **net)
        else:
            self.translator = None
        feat_dim = dv + (dv if variant == "stage1" else dt)
        if classifier == "linear":
            self.head: Optional[nn.Module] = nn.Linear(feat_dim, self.num_classes)
        elif classifier == "cosine":
            self.head = CosineHead(feat_dim, self.num_classes, scale=cosine_scale)
        else:
            self.head = None
        self.cosine_scale = cosine_scale
        self.stage1_sampler, self.classifier_sampler = stage1_sampler, classifier_sampler
        self.denoiser_lr_scale = denoiser_lr_scale
        self.epochs = {
            "pretrain": pretrain_epochs, "learner": learner_epochs, "translator": translator_epochs, "classifier": classifier_epochs
        }  # fmt: skip

    # ---- text ------------------------------------------------------------------------------------
    def _encode_text(self) -> torch.Tensor:
        hp = self.hparams
        return class_text_features(self.class_names, self.templates, hp.text_model, hp.text_pretrained, hp.quick_gelu)

    def _encode_item_text(self, dm: Any) -> torch.Tensor:
        """The training items' features (N_train, E) from the data module's ``item_texts('train')``."""
        hp = self.hparams
        texts = dm.item_texts("train") if dm is not None and hasattr(dm, "item_texts") else None
        if texts is None:
            source = type(dm).__name__ if dm is not None else "no data module"
            raise LTBenchError(f"SeDA: model.init_args.text_source=item needs per-item training texts, and {source} "
                               "states none (LTDataModule.item_texts; for COCOLT set data.init_args.captions to "
                               "captions_train2017.json), or set text_source: class")  # fmt: skip
        if len(texts) != self.item_raw.shape[0]:
            raise LTBenchError(f"SeDA: {type(dm).__name__}.item_texts('train') gives {len(texts)} items; the training split "
                               f"has {self.item_raw.shape[0]} (num_train)")  # fmt: skip
        device = self.device if self._trainer is not None else None
        return grouped_text_features(texts, hp.text_model, hp.text_pretrained, hp.quick_gelu, device=device)

    def prepare_text(self, datamodule: Any = None) -> None:
        """Run the text tower once, unless the features are there (from a checkpoint or an earlier call).

        With ``text_source: item`` the item features of ``datamodule`` (default: the trainer's) are
        encoded too and ``text_norm`` is fitted over them (the targets' distribution) instead of over
        the class features."""
        if not bool(self.text_ready):
            self.text_raw.copy_(self._encode_text())
            if self.text_source == "item":
                dm = datamodule if datamodule is not None else (self.trainer.datamodule if self._trainer is not None else None)
                self.item_raw.copy_(self._encode_item_text(dm))
            self.text_ready.fill_(True)
            self.tnorm.fit(self.item_raw if self.text_source == "item" else self.text_raw)

    def on_fit_start(self) -> None:
        """Run the text tower when fit starts: after a checkpoint's restore (a resumed run keeps its features
        and needs no captions file) and on the model's device."""
        super().on_fit_start()
        self.prepare_text()

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.variant != "projection":
            self.schedule.sampler(self.sample_steps)  # built here, not inside a training step

    def class_text(self) -> torch.Tensor:
        """The normalised class text features (C, E): the stage-2 targets and the similarity classifier."""
        return self.tnorm(self.text_raw)

    def text_target(self, labels: torch.Tensor, index: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Each training sample's text target: its class's features, or the mean over its positive classes;
        with ``text_source: item`` its own texts' feature, gathered on the device by the batch's ``index``."""
        if self.text_source == "item":
            if index is None:
                raise LTBenchError("SeDA: text_source=item reads a training sample's text by its index; none given")
            return self.tnorm(self.item_raw[index])
        return (labels / labels.sum(1, keepdim=True).clamp_min(1.0)) @ self.class_text()

    # ---- stages ----------------------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        e, lr = self.epochs, self.denoiser_lr_scale
        stages = [Stage("backbone", e["pretrain"], train=("backbone", "pre_head"))]
        if self.variant != "projection":
            stages.append(Stage("semantic_learner", e["learner"], self.stage1_sampler, train=("learner",), lr_scale=lr))
        if self.variant == "full":
            stages.append(Stage("semantic_translator", e["translator"], train=("translator",), lr_scale=lr))
        elif self.variant == "projection":
            stages.append(Stage("projection", e["translator"], self.stage1_sampler, train=("translator",), lr_scale=lr))
        if self.head is not None:
            stages.append(Stage("classifier", e["classifier"], self.classifier_sampler, train=("head",), reinit=("head",)))
        return stages

    def _stage_name(self) -> str:
        return self.plan.stages[self.plan.index_at(self.current_epoch)].name if self.plan else "backbone"

    def _final(self) -> bool:
        """Whether the last stage has started: before it, evaluation uses the CE head."""
        return self.entered_stage >= (len(self.plan.stages) if self.plan is not None else len(self.stages())) - 1

    # ---- features --------------------------------------------------------------------------------
    def _labels(self, y: torch.Tensor) -> torch.Tensor:
        return F.one_hot(y, self.num_classes).float() if self.task == "multiclass" else y.float()

    def semantic(self, v_n: torch.Tensor) -> torch.Tensor:
        """The semantic feature s: the learner's deterministic DDIM output given v."""
        return self.schedule.sample(
            lambda s, k: self.learner(s, k, [v_n])[0], v_n.shape, self.sample_steps, self.sample_seed, v_n.device, v_n.dtype
        )

    def generate(self, v_n: torch.Tensor) -> torch.Tensor:
        """What the classifier reads beside v: t_hat (full, projection) or s (stage1); needs no text."""
        n, dt = v_n.shape[0], self.text_raw.shape[1]
        if self.variant == "projection":
            zeros, step0 = v_n.new_zeros(n, dt), torch.zeros(n, dtype=torch.long, device=v_n.device)
            return self.translator(zeros, step0, [v_n])[0]
        s = self.semantic(v_n)
        if self.variant == "stage1":
            return s
        return self.schedule.sample(
            lambda t, k: self.translator(t, k, [s, v_n])[0], (n, dt), self.sample_steps, self.sample_seed + 1, v_n.device, v_n.dtype
        )

    def classify(self, v_n: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            return self.cosine_scale * F.linear(F.normalize(f, dim=-1), F.normalize(self.class_text(), dim=-1))
        return self.head(torch.cat([v_n, f], -1))

    def seda_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The method's logits from the image alone."""
        v_n = self.vnorm(self.backbone(x))
        return self.classify(v_n, self.generate(v_n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seda_logits(x) if self._final() else self.pre_head(self.backbone(x))

    # ---- training --------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y, index = batch
        stage = self._stage_name()
        if stage == "backbone":
            parts = {"cls": self.training_loss(self.pre_head(self.backbone(x)), y)}
        else:
            with torch.no_grad():
                v = self.backbone(x)
            labels = self._labels(y)
            valid = (labels.sum(1) > 0).float()
            # an image's own texts are a target even without a positive label
            t_valid = torch.ones_like(valid) if self.text_source == "item" else valid
            if stage in ("semantic_learner", "projection"):
                self.vnorm.update(v)
                self.centres.update(v, labels)
            v_n = self.vnorm(v)
            if stage == "semantic_learner":
                parts = self._learner_losses(v_n, labels, valid)
            elif stage == "semantic_translator":
                parts = self._translator_losses(v_n, self.text_target(labels, index), t_valid)
            elif stage == "projection":
                align = _distance(self.align_loss, self.generate(v_n), self.text_target(labels, index))
                parts = {"align": self.weights["align"] * _masked_mean(align, t_valid)}
            else:
                with torch.no_grad():
                    f = self.generate(v_n)
                parts = {"cls": self.training_loss(self.classify(v_n, f), y)}
        loss = sum(parts.values())
        self._nonfinite |= ~torch.isfinite(loss.detach())
        self.log("train/loss", loss, prog_bar=True)
        if len(parts) > 1:
            self.log_dict({f"train/{k}": v.detach() for k, v in parts.items()})
        return loss

    def _noise(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training noise and timesteps for x0, from the step's generator (``step_generator``).

        Per micro-batch under gradient accumulation; outside a training step (a direct call) the
        global generator.
        """
        g = self.step_generator(x0.device)
        k = self.schedule.sample_timesteps(x0.shape[0], x0.device, g)
        return torch.randn(x0.shape, generator=g, device=x0.device, dtype=x0.dtype), k

    def _learner_losses(self, v_n: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> dict[str, torch.Tensor]:
        mu = self.vnorm(self.centres.target(labels))
        s0 = mu if self.learner_target == "centre" else v_n
        noise, k = self._noise(s0)
        out, hidden = self.learner(self.schedule.add_noise(s0, noise, k), k, [v_n])
        return {
            "diffusion": self.weights["diffusion"] * _masked_mean(self.schedule.loss(out, s0, noise), valid),
            "centre": self.weights["centre"] * _masked_mean(_distance(self.centre_loss, hidden, mu), valid),
        }

    def _translator_losses(self, v_n: torch.Tensor, t0: torch.Tensor, valid: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            s = self.semantic(v_n)
        noise, k = self._noise(t0)
        t_k = self.schedule.add_noise(t0, noise, k)
        out, _ = self.translator(t_k, k, [s, v_n])
        # the one-step t_0 estimate, weighted by abar_k: at high noise it is ill-defined (ltbench's choice)
        abar = self.schedule.alphas_cumprod[k]
        align = abar * _distance(self.align_loss, self.schedule.predict_x0(t_k, out, k), t0)
        return {
            "diffusion": self.weights["diffusion"] * _masked_mean(self.schedule.loss(out, t0, noise), valid),
            "align": self.weights["align"] * _masked_mean(align, valid),
        }

    # ---- record ----------------------------------------------------------------------------------
    def method_protocol(self) -> dict[str, Any]:
        hp = self.hparams
        parts = {"learner": self.learner, "translator": self.translator, "head": self.head}
        diffusion = self.variant != "projection"
        sampler = {"name": "DDIM", "eta": 0.0, "steps": self.sample_steps, "seed": self.sample_seed}
        sampler["start"] = "one seeded noise vector shared by the batch"
        return {
            "card": "SeDA (reconstructed from the abstract)",
            "variant": self.variant,
            "text_model": hp.text_model,
            "text_pretrained": hp.text_pretrained,
            "text_templates": list(self.templates),
            "text_dim": int(self.text_raw.shape[1]),
            "text_source": self.text_source,
            "text_target": (
                "the image's own texts (data item_texts): mean of their L2-normalised embeddings, normalised; training only"
                if self.text_source == "item" else "the class's text feature (multi-label: mean over positives)"
            ),
            "feature_norm": {"visual": self.vnorm.mode, "text": self.tnorm.mode},
            "centres": {"momentum": self.centres.momentum, "stage1_sampler": self.stage1_sampler or "data's"},
            "diffusion": self.schedule.describe() if diffusion else None,
            "sampler": sampler if diffusion else None,
            "learner_target": self.learner_target if self.learner is not None else None,
            "denoiser": {"arch": hp.arch, "width": hp.width, "depth": hp.depth, "heads": hp.heads, "pfin": hp.pfin},
            "losses": {"centre": self.centre_loss, "align": self.align_loss, **{f"{k}_weight": v for k, v in self.weights.items()}},
            "classifier": self.classifier,
            "parameters": {n: param_count(m) for n, m in parts.items() if m is not None},
            "test_time_inputs": "image only",
        }


__all__ = ["SeDA"]
