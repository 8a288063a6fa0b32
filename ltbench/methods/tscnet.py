"""TSCNet (Yan et al., arXiv 2505.08173): multi-scale causal intervention on a ViT, two stages in one fit.

A confounder dictionary Z (K background prototypes, prior P(z)) is built at the start of ``fit``
(``ltbench.models.confounders``; cached on disk) or read from a file. Then:

- patch level: at every block, ``num_tokens`` rows of Z per sample, drawn uniformly with
  replacement and mapped by that block's own Linear(D, D), join the block's input and leave its
  output (``ltbench.models.vit_driver``);
- feature level: f~ = f + CCIM(f, Z, P(z)) on the pooled feature (``ltbench.models.ccim``);
- classifier: TDE's causal-norm head with its moving-average direction (``ltbench.models.heads``);
  at inference TDE's counterfactual subtraction (``inference: tde``) or the plain causal-norm
  logits (``plain``, what the released wrapper returns).

Stage 1 (HCRL) trains the token maps, CCIM, the classifier and the last ViT blocks with CE.
Stage 2 (CLBC) trains the same set on a re-balanced sampler with a Fourier counterfactual view
x_F of each image: 1.5 CE(x) + 1.0 CE(x_F) + 1.0 MSE(f~(x), f~(x_F)). The card
(docs/methods/tscnet.md) gives every value's source.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Optional

import torch
import torch.nn.functional as F
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from timm.layers import trunc_normal_
from torch import nn

from ltbench.data.fourier import Box, amplitude_mix
from ltbench.distributed import all_reduce_sum
from ltbench.errors import LTBenchError
from ltbench.methods.base import LTMethod
from ltbench.methods.stages import Stage
from ltbench.models.ccim import CCIM, Strategy
from ltbench.models.confounders import (
    TooFewVectors,
    background_features,
    check_dictionary,
    default_cache_dir,
    dictionary_key,
    kmeans_dictionary,
    load_dictionary_file,
    save_dictionary,
    state_sha256,
)
from ltbench.models.heads import CausalNormHead, accumulate_direction, counterfactual_logits
from ltbench.models.vit_driver import Pool, check_vit, embed, pool, run_blocks

#: key of the dictionary-token draws at validation, test and predict (hashed with each sample's index)
EVAL_DRAW_SEED = 0
#: seed of the dictionary pass's keyed training transforms: fixed, as the cached dictionary's key has no run seed
DICTIONARY_SEED = 0
#: bump when the dictionary builder changes, so cached dictionaries are rebuilt (2: keyed views)
BUILDER_VERSION = 2


def index_draws(index: torch.Tensor, blocks: int, tokens: int, k: int, seed: int = EVAL_DRAW_SEED) -> torch.Tensor:
    """(blocks, B, tokens) rows in [0, k) from a splitmix64-style hash of (seed, sample index, block, token)."""
    key = (
        index.long().view(1, -1, 1) * (blocks * tokens)
        + torch.arange(blocks, device=index.device).view(-1, 1, 1) * tokens
        + torch.arange(tokens, device=index.device).view(1, 1, -1)
    )
    x = key * -7046029254386353131 + seed  # int64 arithmetic wraps: 0x9E3779B97F4A7C15
    x = (x ^ (x >> 30)) * -4658895280553007687  # 0xBF58476D1CE4E5B9
    x = (x ^ (x >> 27)) * -7723592293110705685  # 0x94D049BB133111EB
    return (x ^ (x >> 31)) % k


class TSCNet(LTMethod):
    """TSCNet on any timm ViT; ``clbc_epochs: 0`` trains stage 1 (HCRL) only."""

    tasks = ("multiclass",)

    def __init__(
        self,
        num_confounders: int = 256,
        dictionary: Optional[str] = None,
        dictionary_prior: Optional[str] = None,
        bg_threshold: float = 0.5,
        cache_dir: Optional[str] = None,
        patch_intervention: bool = True,
        num_tokens: int = 10,
        feature_intervention: bool = True,
        ccim: Strategy = "additive",
        ccim_dim: int = 256,
        feature: Pool = "gap",
        trainable_blocks: int = 2,
        inference: Literal["tde", "plain"] = "tde",
        alpha: float = 0.4,
        num_heads: int = 2,
        tau: float = 16.0,
        gamma: float = 0.003125,
        mu: float = 0.8,
        hcrl_epochs: Optional[int] = 39,
        clbc_epochs: int = 39,
        clbc_sampler: str = "effective_number",
        fourier_max: float = 1.2,
        fourier_ratio: float = 0.9,
        fourier_box: Box = "official",
        loss_weights: tuple[float, float, float] = (1.5, 1.0, 1.0),
        curriculum: bool = False,
        curriculum_accept: float = 0.6,
        curriculum_step: float = 0.05,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            num_confounders: K, dictionary rows (256 in the released dictionary).
            dictionary: a dictionary file instead of building one: ``.pt`` with {"Z": (K, D), "prior": (K,)},
                or ``.npy`` Z (K, D) (the released layout) with ``dictionary_prior`` a ``.npy`` (K,) or (K, 1)
                (uniform when not given).
            bg_threshold: a patch is background when its class-token rollout relevance, min-max scaled
                over the image's patches, is below this value (ours).
            cache_dir: where built dictionaries are cached (default ``$LTBENCH_CACHE/tscnet`` or
                ``~/.cache/ltbench/tscnet``).
            patch_intervention / num_tokens: dictionary tokens per sample at every block (10 released).
            feature_intervention / ccim / ccim_dim: CCIM on the pooled feature, ``additive`` (released) or
                ``dot``; projection width 256 (released).
            feature: ``gap`` (mean of patch tokens before the final norm, released) or ``cls``.
            trainable_blocks: the last ViT blocks that train with the intervention modules (2 released);
                -1 trains the whole backbone (for a backbone without pretrained weights).
            inference: ``tde`` (counterfactual subtraction with ``alpha``) or ``plain`` causal-norm logits.
            alpha, num_heads, tau, gamma, mu: the classifier's values from the released ``opts.py``.
            hcrl_epochs, clbc_epochs: epochs of stage 1 (None: what trainer.max_epochs leaves) and 2 (0: none).
            clbc_sampler: stage-2 sampler, ``effective_number`` (released ``cb_resample``) or ``class_aware``.
            fourier_max, fourier_ratio, fourier_box: lambda ~ U(0, fourier_max); mixed box covers
                ``fourier_ratio`` of the area; ``official`` or ``symmetric`` box (``ltbench.data.fourier``).
            loss_weights: stage-2 weights of CE(x), CE(x_F) and MSE(f~(x), f~(x_F)).
            curriculum: per-class lambda bound ``curriculum_step * level_c`` (at most ``fourier_max``),
                the level rising after an epoch whose counterfactual accuracy on class c reaches
                ``curriculum_accept`` and falling otherwise (prepared, never wired in the release).
        """
        super().__init__(**kwargs)
        for name, value, allowed in (
            ("inference", inference, ("tde", "plain")),
            ("clbc_sampler", clbc_sampler, ("effective_number", "class_aware", "class_balanced", "square_root", "instance")),
        ):
            if value not in allowed:
                raise LTBenchError(f"model.init_args.{name}={value!r}; expected one of {', '.join(allowed)}")
        if len(loss_weights) != 3:
            raise LTBenchError(f"model.init_args.loss_weights={list(loss_weights)}; expected three weights: CE(x), CE(x_F), MSE")
        vit = check_vit(self.backbone.model, f"backbone {self.hparams.backbone!r}")
        depth, dim = len(vit.blocks), self.backbone.num_features
        if not -1 <= trainable_blocks <= depth:
            raise LTBenchError(f"model.init_args.trainable_blocks={trainable_blocks}; expected -1 (all) or 0..{depth}, the backbone's blocks")
        self.num_confounders, self.bg_threshold = num_confounders, bg_threshold
        self.dictionary_file, self.dictionary_prior_file = dictionary, dictionary_prior
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.num_tokens, self.feature = num_tokens, feature
        self.trainable_blocks = trainable_blocks
        self.inference, self.alpha, self.mu = inference, float(alpha), float(mu)
        self.hcrl_epochs, self.clbc_epochs, self.clbc_sampler = hcrl_epochs, clbc_epochs, clbc_sampler
        self.fourier_max, self.fourier_ratio, self.fourier_box = float(fourier_max), float(fourier_ratio), fourier_box
        self.loss_weights = tuple(float(w) for w in loss_weights)
        self.curriculum, self.curriculum_accept, self.curriculum_step = curriculum, curriculum_accept, curriculum_step

        self.register_buffer("dict_z", torch.zeros(num_confounders, dim))
        self.register_buffer("dict_prior", torch.zeros(num_confounders))
        self.register_buffer("dict_ready", torch.zeros((), dtype=torch.bool))
        self.token_proj = nn.ModuleList(nn.Linear(dim, dim) for _ in range(depth)) if patch_intervention else None
        if self.token_proj is not None:
            for lin in self.token_proj:
                trunc_normal_(lin.weight, std=0.02)
                nn.init.zeros_(lin.bias)
        self.ccim = CCIM(dim, dim, ccim_dim, ccim) if feature_intervention else None
        self.head = CausalNormHead(dim, self.num_classes, num_heads, tau, gamma, "causal")
        self.register_buffer("embed_mean", torch.zeros(dim))
        self.register_buffer("curriculum_level", torch.zeros(self.num_classes, dtype=torch.long))
        self.register_buffer("_cf_correct", torch.zeros(self.num_classes), persistent=False)
        self.register_buffer("_cf_seen", torch.zeros(self.num_classes), persistent=False)
        self.dictionary_info: dict[str, Any] = {}
        self._eval_index: Optional[torch.Tensor] = None

    # ---- the network ---------------------------------------------------------------------------
    def trainable_prefixes(self) -> tuple[str, ...]:
        if self.trainable_blocks < 0:
            return ("token_proj", "ccim", "head", "backbone")
        depth = len(self.backbone.model.blocks)
        blocks = tuple(f"backbone.model.blocks.{i}" for i in range(depth - self.trainable_blocks, depth))
        return ("token_proj", "ccim", "head", *blocks)

    def _draws(self, batch: int, device: torch.device) -> torch.Tensor:
        """Dictionary rows (blocks, B, num_tokens), uniform with replacement.

        In training from the step's generator; at validation, test and predict a hash of each
        sample's dataset index, so a sample meets the same tokens whatever the batch size or the
        number of processes (1 and N processes report the same numbers).
        """
        blocks = len(self.token_proj)
        if self.training:
            shape = (blocks, batch, self.num_tokens)
            return torch.randint(self.num_confounders, shape, device=device, generator=self.step_generator(device))
        index = self._eval_index
        if index is None or len(index) != batch:
            index = torch.arange(batch, device=device)
        return index_draws(index.to(device), blocks, self.num_tokens, self.num_confounders)

    def _evaluate(self, metric: Any, batch: Any, *args: Any) -> None:
        self._eval_index = batch[2]
        try:
            super()._evaluate(metric, batch, *args)
        finally:
            self._eval_index = None

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        self._eval_index = batch[2]
        try:
            return super().predict_step(batch, batch_idx, dataloader_idx)
        finally:
            self._eval_index = None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """f~ (B, D): the ViT with dictionary tokens at every block, pooled, plus CCIM's g(f)."""
        vit = self.backbone.model
        tokens = embed(vit, x)
        extra = None
        if self.token_proj is not None:
            rows = self._draws(x.shape[0], x.device)

            def extra(i: int) -> torch.Tensor:
                # map the K rows once, then gather: the same tokens as mapping the B x num_tokens draws
                return self.token_proj[i](self.dict_z)[rows[i]]

        f = pool(vit, run_blocks(vit, tokens, extra), self.feature)
        if self.ccim is not None:
            f = f + self.ccim(f, self.dict_z, self.dict_prior).to(f.dtype)
        return f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Causal-norm training logits."""
        return self.head(self.features(x))

    def inference_logits(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.features(x)
        if self.inference == "plain":
            return self.head(feats)
        return counterfactual_logits(self.head, feats, self.embed_mean, self.alpha)[0]

    # ---- training ------------------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        train = self.trainable_prefixes()
        stages = [Stage("hcrl", epochs=self.hcrl_epochs, train=train)]
        if self.clbc_epochs:
            stages.append(Stage("clbc", epochs=self.clbc_epochs, sampler=self.clbc_sampler, train=train))
        return stages

    def _stage_index(self) -> int:
        return self.plan.index_at(self.current_epoch) if self.plan is not None else 0

    def fourier_view(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x_F for a normalised batch: mixed on the pixel scale, clipped and truncated as uint8 would be.

        The batch is un-normalised first (exact: normalisation is per-channel affine), so the DC
        term mixes as on the raw image; the partner is another sample of the (re-balanced) batch.
        """
        b = x.shape[0]
        gen = self.step_generator(x.device)
        partner = (torch.arange(b, device=x.device) + torch.randint(1, max(b, 2), (b,), device=x.device, generator=gen)) % b
        bound = torch.full((b,), self.fourier_max, device=x.device)
        if self.curriculum:
            bound = (self.curriculum_step * self.curriculum_level[y].float()).clamp(max=self.fourier_max)
        lam = torch.rand(b, device=x.device, generator=gen) * bound
        mean, std = self._pixel_stats(x)
        raw = x.float() * std + mean
        mixed = amplitude_mix(raw, raw[partner], lam, self.fourier_ratio, self.fourier_box)
        mixed = torch.floor(mixed.clamp(0.0, 1.0) * 255.0) / 255.0
        return ((mixed - mean) / std).to(x.dtype)

    def _pixel_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dm = self.trainer.datamodule if self._trainer is not None else None
        if dm is None or not hasattr(dm, "normalization"):
            raise LTBenchError("TSCNet stage 2 needs an ltbench data module (its channel mean/std undo the normalisation)")
        return dm.normalization(x.device)

    def stage_loss(self, x: torch.Tensor, y: torch.Tensor, clbc: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One step's loss: CE (HCRL), or the CLBC sum with its parts; updates the head direction."""
        if not clbc:
            feats = self.features(x)
            accumulate_direction(self.embed_mean, feats.detach(), self.mu)
            return F.cross_entropy(self.head(feats), y), {}
        b = x.shape[0]
        feats = self.features(torch.cat([x, self.fourier_view(x, y)]))
        logits = self.head(feats)
        accumulate_direction(self.embed_mean, feats[:b].detach(), self.mu)
        w_ce, w_cf, w_align = self.loss_weights
        ce, ce_cf = F.cross_entropy(logits[:b], y), F.cross_entropy(logits[b:], y)
        align = F.mse_loss(feats[:b], feats[b:])
        if self.curriculum:
            with torch.no_grad():
                self._cf_correct.index_add_(0, y, (logits[b:].argmax(-1) == y).float())
                self._cf_seen.index_add_(0, y, torch.ones_like(y, dtype=torch.float32))
        return w_ce * ce + w_cf * ce_cf + w_align * align, {"train/ce": ce, "train/ce_cf": ce_cf, "train/align": align}

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y, _ = batch
        loss, parts = self.stage_loss(x, y, clbc=self._stage_index() > 0)
        if parts:
            self.log_dict(parts)
        self._nonfinite |= ~torch.isfinite(loss.detach())
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if self.curriculum and self._stage_index() > 0:
            correct, seen = all_reduce_sum(torch.stack([self._cf_correct, self._cf_seen]))
            up = correct >= self.curriculum_accept * seen
            top = int(self.fourier_max / self.curriculum_step + 1e-9)
            step = torch.where(up, 1, -1) * (seen > 0)
            self.curriculum_level.copy_((self.curriculum_level + step).clamp(0, top))
            self._cf_correct.zero_()
            self._cf_seen.zero_()

    # ---- the confounder dictionary ---------------------------------------------------------------
    def on_fit_start(self) -> None:
        """Build, load or reuse the dictionary once per run, before any training step.

        A checkpoint restored before this hook already holds it. Rank 0 does the work and broadcasts
        the result (or its error) to the other ranks.
        """
        if bool(self.dict_ready):
            return
        result: Any = None
        if self.trainer.is_global_zero:
            try:
                result = self.obtain_dictionary()
            except LTBenchError as e:
                result = e
        if self.trainer.world_size > 1:
            result = self.trainer.strategy.broadcast(result, src=0)
        if isinstance(result, LTBenchError):
            raise result
        z, prior, info = result
        self.dict_z.copy_(z.to(self.dict_z))
        self.dict_prior.copy_(prior.to(self.dict_prior))
        self.dict_ready.fill_(True)
        self.dictionary_info = info

    def obtain_dictionary(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        k, d = self.num_confounders, self.backbone.num_features
        if self.dictionary_file:
            try:
                z, prior = load_dictionary_file(self.dictionary_file, self.dictionary_prior_file, k, d)
            except LTBenchError as e:
                raise LTBenchError(f"TSCNet: {e} (model.init_args.num_confounders={k}, backbone feature size {d})") from e
            return z, prior, {"source": "file", "path": str(self.dictionary_file), "prior_path": self.dictionary_prior_file}
        fields = self._dictionary_fields()
        key = dictionary_key(fields)
        path = (self.cache_dir or default_cache_dir()) / f"{fields['dataset']}-{key}.pt"
        if path.is_file():
            try:
                data = torch.load(path, map_location="cpu", weights_only=True)
                z, prior = check_dictionary(data["Z"], data["prior"], k, d, str(path))
                rank_zero_info(f"ltbench: TSCNet dictionary reused from {path}")
                return z, prior, {"source": "cache", "path": str(path), "key": key, **json.loads(data["meta"])}
            except Exception as e:  # a damaged cache entry is rebuilt, not fatal
                rank_zero_warn(f"TSCNet: cached dictionary {path} unreadable ({e}); rebuilding it")
        z, prior, n = self.build_dictionary()
        meta = {"num_background_images": n, "fields": fields}
        save_dictionary(path, z, prior, meta)
        rank_zero_info(f"ltbench: TSCNet dictionary (K={k}, {n} background vectors) built and cached at {path}")
        return z, prior, {"source": "built", "path": str(path), "key": key, **meta}

    def _dictionary_fields(self) -> dict[str, Any]:
        """Everything the built dictionary depends on: data split, backbone and its weights, K, the builder, the
        pass's batch size (device-decoded crops are drawn per batch), precision, and the training views it reads."""
        dm = self.trainer.datamodule
        proto = dm.protocol() if dm is not None and hasattr(dm, "protocol") else {}
        extras = dm.protocol_extras() if dm is not None and hasattr(dm, "protocol_extras") else {}
        return {
            "dataset": proto.get("dataset", "data"),
            "num_train": proto.get("num_train"),
            "train_class_counts": self.train_class_counts,
            "split": extras,
            "input_size": proto.get("input_size"),
            "backbone": self.hparams.backbone,
            "backbone_kwargs": self.hparams.backbone_kwargs,
            "weights_sha256": state_sha256(self.backbone),
            "num_confounders": self.num_confounders,
            "bg_threshold": self.bg_threshold,
            "builder": BUILDER_VERSION,
            "pass_batch_size": dm.eval_batch_size if dm is not None else None,  # device-decoded crops are drawn per batch
            "precision": str(getattr(self.trainer, "precision", None)),
            # the views the pass reads: where they are decoded and the host-side training transform
            "decode": getattr(dm, "decode", None),
            "train_transform": repr(getattr(dm.dataset("train"), "transform", None)) if dm is not None else None,
        }

    @torch.no_grad()
    def build_dictionary(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Rollout-separated background features of every training image (stage-0 ViT), then k-means.

        The images are training views, as the released code's hooks for the pass (the ``backdoor`` and
        ``gradcam`` data modes) read them with the training transform; host-side draws are keyed by
        (``DICTIONARY_SEED``, position), so the views are the same whatever ``num_workers`` or earlier
        draws; crops drawn on the device come from generators of that seed (``dm.keyed_pass``). It runs in
        a forked random state, so the run's own random stream is untouched.
        """
        dm = self.trainer.datamodule
        if dm is None:
            raise LTBenchError("TSCNet builds its dictionary from the training split: run it with an ltbench data module")
        loader = dm._loader(dm.dataset("train"), dm.eval_batch_size, shuffle=False, key_seed=DICTIONARY_SEED, collate_fn=dm.train_collate_fn())
        devices = [self.device] if self.device.type == "cuda" else []

        def batches():
            for batch in loader:
                # as Lightning moves a batch: tensors only (device-decoded file bytes stay on the host)
                yield dm.on_after_batch_transfer(move_data_to_device(batch, self.device), 0)[0]

        with torch.random.fork_rng(devices=devices), dm.keyed_pass(DICTIONARY_SEED):
            torch.manual_seed(DICTIONARY_SEED)
            with self.trainer.precision_plugin.forward_context():
                feats = background_features(self.backbone.model, batches(), self.bg_threshold)
        try:
            z, prior = kmeans_dictionary(feats, self.num_confounders, seed=0)
        except TooFewVectors:
            raise LTBenchError(
                f"TSCNet: {len(feats)} training images have background patches, fewer than num_confounders={self.num_confounders}; "
                "lower model.init_args.num_confounders or raise model.init_args.bg_threshold"
            ) from None
        return z, prior, len(feats)

    # ---- checkpoint and record -----------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["tscnet"] = {"dictionary": self.dictionary_info}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        info = dict(checkpoint.get("tscnet", {}).get("dictionary", {}))
        self.dictionary_info = info | {"restored_from_checkpoint": True} if info else {}

    def method_protocol(self) -> dict[str, Any]:
        depth = len(self.backbone.model.blocks)
        return {
            "inference": f"TDE, alpha={self.alpha:g}" if self.inference == "tde" else "plain causal-norm logits",
            "tde_alpha": self.alpha if self.inference == "tde" else 0.0,
            "tde_mu": f"{self.mu:g} fixed",
            "feature": self.feature,
            "dictionary": self.dictionary_info,
            "num_confounders": self.num_confounders,
            "patch_intervention": f"{self.num_tokens} tokens x {depth} blocks" if self.token_proj is not None else "off",
            "feature_intervention": f"CCIM {self.ccim.strategy}" if self.ccim is not None else "off",
            "trainable": list(self.trainable_prefixes()),
            "clbc": None if not self.clbc_epochs else {
                "sampler": self.clbc_sampler,
                "fourier": f"lambda ~ U(0, {self.fourier_max:g}), {self.fourier_box} box over {self.fourier_ratio:g} of the area, "
                "on the transformed batch (un-normalised), partner from the batch",
                "loss_weights": list(self.loss_weights),
                "curriculum": self.curriculum,
            },
        }


__all__ = ["TSCNet"]
