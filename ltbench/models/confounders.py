"""Confounder dictionaries: background prototypes Z (K, D) and their prior P(z) (K,).

Built as the CCIM/CONTA family does and as TSCNet's released code presumes (its builder is not
released): attention rollout of the class token separates object from background on each training
image, the background patch tokens of the stage-0 ViT are averaged into one vector per image, and
k-means over those vectors gives Z (the centroids) and P(z_k) (each cluster's share of images).
Dictionaries are cached on disk under a key of everything they depend on; a user may also give one
as a file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import numpy as np
import torch
from torch import nn

from ltbench.errors import LTBenchError
from ltbench.models.vit_driver import attention_maps, attention_rollout, embed, run_blocks
from ltbench.records import atomic_path, cache_root


class TooFewVectors(LTBenchError):
    """Fewer vectors than dictionary rows; the caller knows which of its settings to change."""


def default_cache_dir() -> Path:
    """``$LTBENCH_CACHE/tscnet``, else ``~/.cache/ltbench/tscnet``."""
    return cache_root() / "tscnet"


def state_sha256(module: nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names, shapes, dtypes, bytes): the weights' identity."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def dictionary_key(fields: dict[str, Any]) -> str:
    """A short stable hash of the fields a dictionary depends on."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:24]


@torch.no_grad()
def background_features(model: nn.Module, batches: Iterable[torch.Tensor], threshold: float) -> torch.Tensor:
    """One vector per image: the mean of its background patch tokens after the last block (before the norm).

    A patch is background when its rollout relevance from the class token, min-max scaled over the
    image's patches, is below ``threshold`` (so the least relevant patch always is, unless the map is
    flat). Images without a background patch give no vector.
    """
    was_training = model.training
    model.eval()
    out = []
    try:
        for x in batches:
            with attention_maps(model, mean_heads=True) as maps:
                tokens = run_blocks(model, embed(model, x))
            p = model.num_prefix_tokens
            relevance = attention_rollout(maps)[:, 0, p:]
            lo, hi = relevance.amin(dim=1, keepdim=True), relevance.amax(dim=1, keepdim=True)
            background = (relevance - lo) < threshold * (hi - lo)
            w = background.to(tokens.dtype).unsqueeze(-1)
            feats = (tokens[:, p:] * w).sum(1) / w.sum(1).clamp_min(1.0)
            out.append(feats[background.any(dim=1)].float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def kmeans_dictionary(features: torch.Tensor, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Z = k-means centroids (scikit-learn, k-means++, seeded); P(z_k) = share of vectors in cluster k."""
    n = len(features)
    if n < k:
        raise TooFewVectors(f"{n} vectors for a dictionary of {k} rows; k-means needs at least one vector per row")
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(features.double().numpy())
    prior = np.bincount(km.labels_, minlength=k) / n
    return torch.from_numpy(km.cluster_centers_).float(), torch.from_numpy(prior).float()


def check_dictionary(z: Any, prior: Any, k: int, d: int, source: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, D) float Z and (K,) prior (a (K, 1) column accepted), finite; else one error naming ``source``."""
    z = torch.as_tensor(np.asarray(z) if not isinstance(z, torch.Tensor) else z)
    prior = torch.as_tensor(np.asarray(prior) if not isinstance(prior, torch.Tensor) else prior)
    if prior.ndim == 2 and prior.shape[1] == 1:
        prior = prior[:, 0]
    if tuple(z.shape) != (k, d) or tuple(prior.shape) != (k,):
        raise LTBenchError(
            f"{source}: dictionary of shape {tuple(z.shape)} with prior {tuple(prior.shape)}; expected Z ({k}, {d}) "
            f"and P(z) ({k},) or ({k}, 1)"
        )
    if not (z.is_floating_point() and prior.is_floating_point()) or not (torch.isfinite(z).all() and torch.isfinite(prior).all()):
        raise LTBenchError(f"{source}: dictionary and prior must be finite floating-point arrays")
    return z.float(), prior.float()


def load_dictionary_file(path: Union[str, Path], prior_path: Optional[Union[str, Path]], k: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A user's dictionary: ``.pt`` holding {"Z", "prior"}, or ``.npy`` Z with an optional ``.npy`` prior (uniform if none)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise LTBenchError(f"dictionary file {path} does not exist; expected a .pt with Z ({k}, {d}) and prior ({k},), or a .npy Z")
    try:
        if path.suffix == ".pt":
            data = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(data, dict) or "Z" not in data or "prior" not in data:
                raise LTBenchError(f"{path}: expected a dict with keys 'Z' ({k}, {d}) and 'prior' ({k},)")
            z, prior = data["Z"], data["prior"]
        elif path.suffix == ".npy":
            z = np.load(path, allow_pickle=False)
            if prior_path is not None:
                pp = Path(prior_path).expanduser()
                try:
                    prior = np.load(pp, allow_pickle=False)
                except Exception as e:
                    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                    raise LTBenchError(f"cannot read prior file {pp} ({first}); expected a .npy of shape ({k},) or ({k}, 1)") from e
            else:
                prior = np.full((len(z) if z.ndim else 0,), 1.0 / max(len(z) if z.ndim else 1, 1), dtype=np.float32)
        else:
            raise LTBenchError(f"dictionary file {path}: expected a .pt or .npy file")
    except LTBenchError:
        raise
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise LTBenchError(f"cannot read dictionary file {path} ({first}); expected Z ({k}, {d}) and prior ({k},)") from e
    return check_dictionary(z, prior, k, d, str(path))


def save_dictionary(path: Path, z: torch.Tensor, prior: torch.Tensor, meta: dict[str, Any]) -> None:
    """Atomically write {"Z", "prior", "meta"} (readable with ``torch.load(weights_only=True)``)."""
    with atomic_path(path) as tmp:
        torch.save({"Z": z.contiguous(), "prior": prior.contiguous(), "meta": json.dumps(meta, default=str)}, tmp)


__all__ = [
    "TooFewVectors",
    "default_cache_dir",
    "state_sha256",
    "dictionary_key",
    "background_features",
    "kmeans_dictionary",
    "check_dictionary",
    "load_dictionary_file",
    "save_dictionary",
]
