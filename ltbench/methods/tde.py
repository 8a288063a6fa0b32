"""De-confound-TDE (Tang, Huang, Zhang, NeurIPS'20): causal-norm training, counterfactual inference.

Training is plain cross-entropy (BCE for multi-label data) on the multi-head causal-norm classifier
(``ltbench.models.heads.CausalNormHead``), while a moving average of the detached pooled training
features estimates the head direction d. At validation, test and predict, the total direct effect

    TDE_i = (tau / K) * sum_k < x_k / ||x_k|| - alpha * cos(x_k, d_k) * d_k / ||d_k|| , w_ik / (||w_ik|| + gamma) >

removes the part of each logit that the head direction explains. ``alpha`` never touches training,
so it can be changed on a trained checkpoint (``ltbench test ... --model.init_args.alpha 2.0``;
``ltbench tde-alpha-sweep`` for a curve). ``tde: false`` is the paper's
De-confound row; ``norm: cosine`` / ``capsule`` are its Cosine(-TDE) and Capsule(-TDE) rows.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

import torch
from torchmetrics import MeanMetric

from ltbench.methods.base import LTMethod
from ltbench.models.heads import CausalNormHead, Norm, accumulate_direction, counterfactual_logits

#: the official code's mu rule: mu = 1 - (1 - mu0) * min(MU_LR_SCALE * lr, 1), set at each epoch start
MU_LR_SCALE = 50.0


class TDE(LTMethod):
    """De-confound-TDE; ``tde: false`` (or ``alpha: 0``) is De-confound, the causal-norm head alone."""

    def __init__(
        self,
        alpha: float = 3.0,
        tde: bool = True,
        num_heads: int = 2,
        tau: float = 16.0,
        gamma: float = 1.0 / 32.0,
        norm: Norm = "causal",
        mu: float = 0.9,
        mu_schedule: Literal["fixed", "lr"] = "fixed",
        **kwargs: Any,
    ) -> None:
        """
        Args:
            alpha: strength of the counterfactual subtraction at inference (3.0 ImageNet-LT/Places-LT,
                1.0 CIFAR-10-LT, 1.5 CIFAR-100-LT); not used in training.
            tde: apply TDE at inference; false gives the De-confound row.
            num_heads: K, the number of channel chunks; must divide the feature size.
            tau: logit scale; every training logit lies in (-tau, tau).
            gamma: the causal norm's weight-norm offset, w / (||w|| + gamma).
            norm: ``causal`` (the method), ``cosine`` or ``capsule`` (the paper's ablations).
            mu: decay of the head-direction accumulation d <- mu * d + batch mean.
            mu_schedule: ``fixed`` keeps ``mu`` (the official CIFAR rule); ``lr`` sets
                mu_e = 1 - (1 - mu) * min(50 * lr_e, 1) at each epoch start from the largest current
                learning rate (the official rule for ImageNet-LT and Places-LT).
        """
        super().__init__(**kwargs)
        if mu_schedule not in ("fixed", "lr"):
            raise ValueError(f"mu_schedule={mu_schedule!r}; expected 'fixed' or 'lr'")
        self.alpha, self.tde = float(alpha), tde
        self.mu0, self.mu_schedule = float(mu), mu_schedule
        self.mu = self.mu0
        self.head = CausalNormHead(self.backbone.num_features, self.num_classes, num_heads, tau, gamma, norm)
        self.register_buffer("embed_mean", torch.zeros(self.backbone.num_features))
        self.test_cos = MeanMetric()
        self._last_cos: Optional[torch.Tensor] = None
        self._mean_cos: Optional[float] = None

    # ---- training ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Causal-norm logits; in training mode the batch also feeds the head direction."""
        feats = self.backbone(x)
        if self.training:
            self.accumulate(feats.detach())
        return self.head(feats)

    def accumulate(self, feats: torch.Tensor) -> None:
        """d <- mu * d + the global batch mean (``accumulate_direction``)."""
        accumulate_direction(self.embed_mean, feats, self.mu)

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        if self.mu_schedule == "lr" and self._trainer is not None and self.trainer.optimizers:
            lr = max(g["lr"] for opt in self.trainer.optimizers for g in opt.param_groups)
            self.mu = 1.0 - (1.0 - self.mu0) * min(MU_LR_SCALE * lr, 1.0)

    # ---- inference -----------------------------------------------------------------------------
    def inference_logits(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        logits, self._last_cos = counterfactual_logits(self.head, feats, self.embed_mean, self.alpha if self.tde else 0.0)
        return logits

    def test_step(self, batch: Any, batch_idx: int) -> None:
        super().test_step(batch, batch_idx)
        if self._last_cos is not None:
            self.test_cos.update(self._last_cos)

    def on_test_epoch_end(self) -> None:
        """mean cos(x, d) over the test set, for the README's heuristic alpha * mean(cos) ~ 1."""
        self._mean_cos = float(self.test_cos.compute()) if self.test_cos.update_called else None
        self.test_cos.reset()
        super().on_test_epoch_end()

    def method_protocol(self) -> dict[str, Any]:
        alpha = self.alpha if self.tde else 0.0
        return {
            "inference": f"TDE, alpha={alpha:g}" if alpha else "causal-norm logits (De-confound, no TDE)",
            "tde_alpha": alpha,
            "tde_norm": self.head.norm,
            "tde_mu": f"{self.mu0:g} fixed" if self.mu_schedule == "fixed" else f"1 - {1 - self.mu0:g} * min({MU_LR_SCALE:g} * lr, 1) per epoch",
            "tde_test_mean_cos": self._mean_cos,
        }


__all__ = ["TDE", "counterfactual_logits", "MU_LR_SCALE"]
