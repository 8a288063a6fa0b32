"""CDC-like (partially verified): Zhang, Li, Liu, Qiang, "Rethinking Misalignment in Vision-Language Model
Adaptation from a Causal Perspective", NeurIPS'24. No code is public; see docs/methods/cdc.md for what
is confirmed and what is ours.

Confirmed structure: M learnable text templates plus the frozen hand-crafted t0, frozen CLIP towers,
a different image augmentation per template (VSD), per-template predictions fused with
Dempster-Shafer evidence theory (DSTC), and three losses: trusted cross-entropy, diversity,
consistency. Every inferred form is an option here.

A training step makes M augmented views of the batch on the device and runs the image tower once on
the (M * B) batch; template m scores view m. At evaluation every template scores the plain view.
With ``prompt_style: maple`` each template is a set of MaPLe's coupled text and vision prompts, so view m
goes through the image tower under template m's prompts, and evaluation runs the tower M times.
Per template, logits -> evidence -> Dirichlet opinion; the M opinions fuse with Dempster's rule in
template order; the prediction is the argmax of the fused belief (scores: the fused Dirichlet's mean)
and the fused uncertainty u goes with it.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

import torch
import torch.nn.functional as F

from ltbench.errors import LTBenchError
from ltbench.losses import trusted_cross_entropy
from ltbench.methods.clip_prompt import CLIPPromptMethod
from ltbench.models.device_augment import AUGMENT_SETS, random_views
from ltbench.models.evidential import EvidenceFn, Opinion, evidence, fuse, opinion_from_evidence

#: ImageNet templates of CLIP's prompt ensemble, one per learnable template (spec section 3.5's reading)
TEMPLATE_INITS = ["a photo of a {}.", "a bad photo of a {}.", "a origami {}.", "itap of a {}."]


class CDC(CLIPPromptMethod):
    """M learnable templates with per-template views, Dempster-Shafer fusion, trusted CE + diversity + consistency."""

    def __init__(
        self,
        num_templates: int = 4,
        n_ctx: int = 4,
        context_inits: Optional[list[str]] = None,
        prompt_style: Literal["coop", "maple"] = "coop",
        prompt_depth: int = 9,
        augmentation: Literal["aug1", "aug2", "none"] = "aug1",
        evidence_fn: EvidenceFn = "softplus",
        evidence_temperature: float = 1.0,
        evidence_clamp: float = 10.0,
        fusion_min_normaliser: float = 1e-6,
        kl_anneal_epochs: Optional[float] = None,
        kl_max_weight: float = 0.01,
        lambda_div: float = 0.1,
        lambda_con: float = 1.0,
        consistency: Literal["t0_embed", "t0_pred"] = "t0_embed",
        **kwargs: Any,
    ) -> None:
        """
        Args:
            num_templates: M learnable templates (paper's main setting: 4).
            n_ctx: context tokens per template (CoOp-style: 4; MaPLe's: 2).
            context_inits: one hand-crafted template per learnable one (default: 4 of CLIP's ImageNet templates).
            prompt_style: ``coop`` (learnable text contexts) or ``maple`` (each template a set of MaPLe's coupled
                text and vision prompts, so the image tower runs once per template, at evaluation too).
            prompt_depth: layers with prompts under ``maple`` (MaPLe: 9).
            augmentation: per-template views, ``aug1`` (common augmentations), ``aug2`` (plus a random-resized
                crop), or ``none`` (every template sees the plain view).
            evidence_fn: logits -> evidence: ``softplus`` (TMC), ``exp`` (of logits / temperature clamped to
                +-evidence_clamp) or ``relu``.
            evidence_temperature: logits are divided by it before the evidence function.
            fusion_min_normaliser: lower clamp of 1 - C in Dempster's rule.
            kl_anneal_epochs: the KL term's weight grows as min(1, global_step / steps of this many epochs);
                null: half the training epochs.
            kl_max_weight: the KL weight the ramp ends at (TMC: 1; ours 0.01: with CLIP logits every class has
                evidence, and a full-weight KL term drags all logits down; see the card).
            lambda_div: weight of the diversity loss (mean cosine between templates' class embeddings).
            lambda_con: weight of the consistency loss with t0.
            consistency: ``t0_embed`` (1 - cos between each template's and t0's class embedding, KgCoOp-like) or
                ``t0_pred`` (KL from t0's zero-shot prediction to each template's).
        """
        super().__init__(**kwargs)
        inits = list(context_inits or TEMPLATE_INITS)
        if num_templates < 1:
            raise LTBenchError(f"CDC: num_templates={num_templates}; expected at least 1")
        if len(inits) < num_templates:
            raise LTBenchError(f"CDC: {num_templates} templates but {len(inits)} context_inits; give one per template")
        if augmentation != "none" and augmentation not in AUGMENT_SETS:
            raise LTBenchError(f"CDC: augmentation {augmentation!r}; expected one of {', '.join(AUGMENT_SETS)} or none")
        evidence(torch.zeros(1), evidence_fn)  # refuse an unknown evidence function now
        if prompt_style == "maple":
            self.init_multimodal_prompts(inits[:num_templates], n_ctx, prompt_depth)
        elif prompt_style == "coop":
            self.init_contexts(inits[:num_templates], n_ctx)
        else:
            raise LTBenchError(f"CDC: prompt_style {prompt_style!r}; expected coop or maple")
        self.prompt_style = prompt_style
        self.num_templates = num_templates
        self.augmentation = augmentation
        self.evidence_fn, self.evidence_temperature, self.evidence_clamp = evidence_fn, evidence_temperature, evidence_clamp
        self.fusion_min_normaliser = fusion_min_normaliser
        self.kl_anneal_epochs, self.kl_max_weight = kl_anneal_epochs, kl_max_weight
        self.lambda_div, self.lambda_con, self.consistency = lambda_div, lambda_con, consistency
        self._anneal_steps = 1

    # ---- views and logits ------------------------------------------------------------------------
    def views(self, x: torch.Tensor) -> torch.Tensor:
        """(M * B, 3, S, S): template m's augmented view of every sample, S the tower's input size."""
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        return random_views(x, self.num_templates, self.clip.image_size, AUGMENT_SETS[self.augmentation])

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training: logits (M, B, C) of each template on its own view, the templates' class embeddings (M, C, E),
        the image embeddings (M or 1, B, E) and, for MaPLe-style prompts with ``t0_pred``, the views' embeddings
        without prompts (the zero-shot teacher's)."""
        seen, fitted = (x, False) if self.augmentation == "none" else (self.views(x), True)
        if fitted:
            seen = seen.view(self.num_templates, x.shape[0], *seen.shape[1:])
        image = self.template_image_features(seen, fitted)
        text = self.template_text()
        out = {"logits": self.cosine_logits(image, text), "text": text, "image": image}
        if self.prompts is not None and self.consistency == "t0_pred":  # the teacher is zero-shot: no learned vision prompts
            plain = self.image_features(seen.flatten(0, 1) if fitted else seen, fitted)
            out["zero_shot_image"] = plain.view(self.num_templates, x.shape[0], -1) if fitted else plain.unsqueeze(0)
        return out

    def opinions(self, logits: torch.Tensor) -> Opinion:
        """Per-template Dirichlet opinions (M, B, C) / (M, B) from logits."""
        e = evidence(logits, self.evidence_fn, self.evidence_temperature, self.evidence_clamp)
        return opinion_from_evidence(e)

    def fused(self, logits: torch.Tensor) -> Opinion:
        return fuse(self.opinions(logits), self.fusion_min_normaliser)

    def inference_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every template scores the plain view; scores are the fused Dirichlet's mean (argmax = the fused
        belief's), with the fused uncertainty."""
        logits = self.cosine_logits(self.template_image_features(x), self.template_text())
        fused = self.fused(logits)
        alpha = fused.alpha()
        return {"scores": alpha / alpha.sum(-1, keepdim=True), "uncertainty": fused.uncertainty}

    def inference_logits(self, x: torch.Tensor) -> torch.Tensor:
        """log of the fused Dirichlet mean (softmax of it gives back the scores)."""
        return self.inference_outputs(x)["scores"].log()

    # ---- losses ----------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        trainer = self.trainer
        epochs = self.kl_anneal_epochs if self.kl_anneal_epochs is not None else (trainer.max_epochs or 2) / 2
        per_epoch = max(1, int(trainer.num_training_batches) // max(trainer.accumulate_grad_batches, 1))
        self._anneal_steps = max(1, round(epochs * per_epoch))

    def kl_weight(self) -> float:
        """kl_max_weight * min(1, global step / annealing steps): tied to the global step, so a resumed run
        continues the ramp."""
        return self.kl_max_weight * min(1.0, self.global_step / self._anneal_steps)

    def training_loss(self, out: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        logits, text = out["logits"], out["text"]
        ops = self.opinions(logits)
        fused = fuse(ops, self.fusion_min_normaliser)
        alphas = torch.cat([ops.alpha(), fused.alpha().unsqueeze(0)])  # (M + 1, B, C)
        lam = self.kl_weight()
        tce = trusted_cross_entropy(alphas.flatten(0, 1), target.repeat(alphas.shape[0]), lam).view(alphas.shape[0], -1)
        loss_tce = tce.sum(0).mean()  # TMC: sum over views and the fused opinion, mean over the batch
        loss_div = self.diversity_loss(text)
        loss_con = self.consistency_loss(text, out.get("zero_shot_image", out["image"]), logits)
        if self._trainer is not None:
            self.log_dict({"train/tce": loss_tce, "train/div": loss_div, "train/con": loss_con, "train/kl_weight": lam})
        return loss_tce + self.lambda_div * loss_div + self.lambda_con * loss_con

    def diversity_loss(self, text: torch.Tensor) -> torch.Tensor:
        """Mean cosine between different templates' embeddings of the same class (0 for M = 1)."""
        m = text.shape[0]
        if m < 2:
            return text.new_zeros(())
        sim = torch.einsum("mce,nce->mnc", text, text)
        off = 1.0 - torch.eye(m, dtype=sim.dtype, device=sim.device).unsqueeze(-1)  # a mask index would sync
        return (sim * off).sum() / (m * (m - 1) * sim.shape[-1])

    def consistency_loss(self, text: torch.Tensor, image: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        t0 = self.t0_text()
        if self.consistency == "t0_embed":
            return (1.0 - (text * t0.unsqueeze(0)).sum(-1)).mean()
        with torch.no_grad():
            zero_shot = F.log_softmax(self.cosine_logits(image, t0), dim=-1).expand_as(logits)
        return F.kl_div(F.log_softmax(logits, dim=-1), zero_shot, log_target=True, reduction="none").sum(-1).mean()

    def method_protocol(self) -> dict[str, Any]:
        hp = self.hparams
        return {
            **super().method_protocol(),
            "prompts": f"CDC-like: {self.num_templates} learnable templates x {hp.get('n_ctx')} tokens + t0, " + (
                f"MaPLe-style (depth {hp.get('prompt_depth')}, sentences {list(self.sentences)})" if self.prompts is not None else "CoOp-style"
            ),
            "context_inits": list(hp.get("context_inits") or TEMPLATE_INITS)[: self.num_templates],
            "augmentation": self.augmentation,
            "evidence": {"fn": self.evidence_fn, "temperature": self.evidence_temperature, "clamp": self.evidence_clamp},
            "fusion": f"Dempster's rule in template order, float32+, 1 - C >= {self.fusion_min_normaliser}",
            "kl_anneal_steps": self._anneal_steps,
            "kl_max_weight": self.kl_max_weight,
            "loss": f"TCE(all templates + fused) + {self.lambda_div} div + {self.lambda_con} con({self.consistency})",
        }


__all__ = ["CDC", "TEMPLATE_INITS"]
