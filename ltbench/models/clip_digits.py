"""A tiny CLIP pretrained on captioned digits, so the embedded suite's prompt learners start from a tower
that knows its classes, as CLIP knows ImageNet's, instead of a random one.

``clip_pretrained: ltbench-digits`` (any open_clip model; ``ltbench-tiny-clip`` in the configs) trains
both towers of the model, from a seeded random init, on scikit-learn's digits *outside* the Digits
test split (``DigitsLT``'s split_seed 0, 50 per digit), every digit 0-9 included, as CLIP's
pre-training data covers the concepts later called "new". Each image is paired with a caption drawn
from ``CAPTION_TEMPLATES`` and the loss is CLIP's image-to-text cross-entropy against the ten class
captions of the step's template (with the learnable logit scale). Inputs follow the prompt learners'
path: the Digits normalisation, channels repeated, bicubic resize, per-sample augmented views.

The weights are cached under ``$LTBENCH_CACHE`` (default ``~/.cache/ltbench``) in a file named by a
hash of everything that determines them (model config, recipe, data indices), written atomically,
so the pre-training runs once per machine (about half a minute on a CPU).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ltbench.models.clip_text import DIGITS_TAG
from ltbench.records import atomic_path, cache_root
CAPTION_TEMPLATES = (
    "a photo of a {}.", "a bad photo of a {}.", "a origami {}.", "itap of a {}.", "a drawing of a {}.",
    "a photo of the number {}.", "a blurry photo of a {}.", "{}.",
)  # fmt: skip
RECIPE = {"version": 1, "steps": 300, "batch": 128, "lr": 2e-3, "weight_decay": 0.1, "seed": 0, "augment": "aug1"}


def _pretraining_images() -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Normalised digits (N, 1, 8, 8) outside DigitsLT's test split, their labels, and their indices."""
    from ltbench.data.digits import DigitsLT

    splits = DigitsLT(imb_ratio=1)._splits
    keep = np.setdiff1d(np.arange(len(splits["targets"])), splits["test"])
    x = torch.from_numpy(splits["images"][keep]).unsqueeze(1)
    return (x - 0.5) / 0.5, torch.from_numpy(splits["targets"][keep]), keep


def digits_clip_checkpoint(model_name: str, recipe: Optional[dict] = None) -> Path:
    """The cached weights file of ``model_name`` pretrained on captioned digits; trained now if missing."""
    from ltbench.models.clip_text import CONFIG_DIR
    from ltbench.data.longtail import indices_sha256

    recipe = {**RECIPE, **(recipe or {})}
    x, y, keep = _pretraining_images()
    config = CONFIG_DIR / f"{model_name}.json"
    key = hashlib.sha256(
        json.dumps({"model": model_name, "config": config.read_text() if config.is_file() else None, "recipe": recipe,
                    "templates": CAPTION_TEMPLATES, "data": indices_sha256(keep)}, sort_keys=True).encode()
    ).hexdigest()[:16]  # fmt: skip
    path = cache_root() / f"{model_name}-{DIGITS_TAG}-{key}.pt"
    if not path.is_file():
        state = _pretrain(model_name, x, y, recipe)
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    return path


def _pretrain(model_name: str, x: torch.Tensor, y: torch.Tensor, recipe: dict) -> dict[str, torch.Tensor]:
    import open_clip

    from ltbench.models.clip_prompt import fit_input
    from ltbench.models.clip_text import class_prompts, register_configs
    from ltbench.models.device_augment import AUGMENT_SETS, random_views

    register_configs()
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(recipe["seed"])
    try:
        clip = open_clip.create_model(model_name, force_custom_text=True)
        tokenizer = open_clip.get_tokenizer(model_name)
        names = [str(d) for d in range(10)]
        captions = torch.stack([tokenizer(class_prompts(names, t)) for t in CAPTION_TEMPLATES])  # (T, 10, L)
        size = clip.visual.image_size
        size = tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size))
        opt = torch.optim.AdamW(clip.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe["lr"], total_steps=recipe["steps"], pct_start=0.1)
        clip.train()
        for _ in range(recipe["steps"]):  # a fixed pre-training recipe, not a training step of a method
            idx = torch.randint(0, len(x), (recipe["batch"],))
            views = random_views(fit_input(x[idx], size), 1, size, AUGMENT_SETS[recipe["augment"]])
            template = int(torch.randint(0, len(CAPTION_TEMPLATES), ()))
            image = F.normalize(clip.encode_image(views), dim=-1)
            text = F.normalize(clip.encode_text(captions[template]), dim=-1)
            loss = F.cross_entropy(clip.logit_scale.exp() * image @ text.T, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                clip.logit_scale.clamp_(0, 4.6052)  # CLIP's cap at 100
        return {k: v.detach().clone() for k, v in clip.state_dict().items()}
    finally:
        torch.random.set_rng_state(gen_state)


__all__ = ["DIGITS_TAG", "CAPTION_TEMPLATES", "RECIPE", "digits_clip_checkpoint", "cache_dir"]
