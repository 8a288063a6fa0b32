"""Baselines a fair table needs: softmax CE, logit adjustment, balanced softmax, cosine classifier, cRT;
for multi-label data BCE, ASL, focal and DB-Focal."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ltbench.losses import DBSettings, asymmetric_loss, class_frequencies, db_focal_loss, focal_loss
from ltbench.methods.base import LTMethod
from ltbench.methods.stages import Stage
from ltbench.models.heads import CosineHead


class CrossEntropy(LTMethod):
    """Plain softmax cross-entropy (BCE for multi-label data) with a linear classifier.

    ``neck_dim`` puts a linear projection with dropout before the classifier, as DB-Loss's "PFC"
    neck (2048 -> 256, dropout 0.5) does.
    """

    def __init__(self, neck_dim: Optional[int] = None, neck_dropout: float = 0.0, **kwargs: Any) -> None:
        self._neck = (neck_dim, neck_dropout)
        super().__init__(**kwargs)
        self.head = self.build_head()

    def build_head(self) -> nn.Module:
        neck_dim, dropout = self._neck
        classifier = self.build_classifier(neck_dim or self.backbone.num_features)
        if not neck_dim:
            return classifier
        return nn.Sequential(nn.Linear(self.backbone.num_features, neck_dim), nn.Dropout(dropout), classifier)

    def build_classifier(self, in_features: int) -> nn.Module:
        return nn.Linear(in_features, self.num_classes)

    def log_prior(self) -> torch.Tensor:
        """log of the training label frequencies (counts clamped to 1 so an empty class stays finite)."""
        counts = torch.tensor(self.train_class_counts, dtype=torch.float32).clamp_min(1.0)
        return (counts / counts.sum()).log()


class LogitAdjustment(CrossEntropy):
    """Post-hoc logit adjustment (Menon et al., ICLR'21): train with CE, predict with logits - tau * log prior."""

    def __init__(self, tau: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tau = tau
        self.register_buffer("prior", self.log_prior(), persistent=False)

    def inference_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self(x) - self.tau * self.prior


class BalancedSoftmax(CrossEntropy):
    """Logit-adjusted loss: CE on logits + tau * log prior (tau = 1 is Balanced Softmax, Ren et al., NeurIPS'20).

    Inference uses the raw logits.
    """

    tasks = ("multiclass",)

    def __init__(self, tau: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tau = tau
        self.register_buffer("prior", self.log_prior(), persistent=False)

    def training_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits + self.tau * self.prior, target)


class CosineClassifier(CrossEntropy):
    """CE over scaled cosine logits s * cos(x, w_c); ``squash: true`` is OLTR's CosNorm classifier."""

    def __init__(self, scale: float = 16.0, learn_scale: bool = False, squash: bool = False, **kwargs: Any) -> None:
        self._head_args = (scale, learn_scale, squash)
        super().__init__(**kwargs)

    def build_classifier(self, in_features: int) -> nn.Module:
        scale, learn_scale, squash = self._head_args
        return CosineHead(in_features, self.num_classes, scale=scale, learn_scale=learn_scale, squash=squash)


class CRT(CrossEntropy):
    """Decoupling's classifier re-training (Kang et al., ICLR'20).

    Stage 1 trains everything with instance sampling; stage 2 re-initialises the classifier and
    re-trains only it, on a frozen backbone, with a class-balanced sampler and a restarted schedule.
    """

    def __init__(
        self,
        crt_epochs: int = 10,
        crt_sampler: str = "class_balanced",
        crt_lr_scale: float = 1.0,
        representation_epochs: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.crt_epochs = crt_epochs
        self.crt_sampler = crt_sampler
        self.crt_lr_scale = crt_lr_scale
        self.representation_epochs = representation_epochs

    def stages(self) -> list[Stage]:
        return [
            Stage("representation", epochs=self.representation_epochs, sampler="instance"),
            Stage(
                "classifier",
                epochs=self.crt_epochs,
                sampler=self.crt_sampler,
                train=("head",),
                reinit=("head",),
                lr_scale=self.crt_lr_scale,
            ),
        ]


class _MultiLabelBaseline(CrossEntropy):
    """A linear classifier trained with a multi-label loss."""

    tasks = ("multilabel",)


class BCE(_MultiLabelBaseline):
    """Binary cross-entropy over sigmoid logits, the multi-label baseline."""


class ASL(_MultiLabelBaseline):
    """Asymmetric loss (Ridnik et al., ICCV'21): gamma- 4, gamma+ 0, probability margin 0.05."""

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gamma_neg, self.gamma_pos, self.clip = gamma_neg, gamma_pos, clip

    def training_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return asymmetric_loss(logits, target, self.gamma_neg, self.gamma_pos, self.clip)


class Focal(_MultiLabelBaseline):
    """Sigmoid focal loss (Lin et al., ICCV'17) in DB-Loss's setting: gamma 2, balance 2, no alpha."""

    def __init__(self, gamma: float = 2.0, balance: float = 2.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gamma, self.balance = gamma, balance

    def training_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return focal_loss(logits, target, self.gamma, self.balance)


class DBFocal(_MultiLabelBaseline):
    """Distribution-balanced loss with focal (Wu et al., ECCV'20); defaults are the COCO-LT settings.

    Re-sampling is part of the method (its re-balanced weights correct class-aware sampling's
    redundancy), so it trains with ``sampler`` (class-aware, as published) whatever the data says.
    """

    def __init__(self, db: DBSettings = DBSettings(), sampler: Optional[str] = "class_aware", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sampler = sampler
        self.db = DBSettings(**db) if isinstance(db, dict) else db
        self.hparams.db = asdict(self.db)
        self.register_buffer("class_freq", class_frequencies(self.train_class_counts), persistent=False)

    def training_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return db_focal_loss(logits, target, self.class_freq, self.num_train, self.db)

    def stages(self) -> list[Stage]:
        return [Stage("train", sampler=self.sampler)]
