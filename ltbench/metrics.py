"""Long-tail evaluation metrics on torchmetrics.

States are concatenated per sample together with each sample's dataset index, so the duplicates
that a distributed sampler pads in are dropped before computing: one process and N processes give
the same numbers. Group scores are means of per-class scores over shot groups; an empty group is
NaN (reported as n/a), never 0.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torchmetrics import Metric
from torchmetrics.functional.classification import multiclass_accuracy
from torchmetrics.utilities import dim_zero_cat

GROUPS = ("many", "medium", "few")


def first_occurrence(index: torch.Tensor) -> torch.Tensor:
    """Positions of the first occurrence of each distinct value of ``index``, in ascending value order."""
    uniq, inverse = torch.unique(index, return_inverse=True)
    pos = torch.arange(index.numel(), device=index.device)
    first = torch.full((uniq.numel(),), index.numel(), dtype=pos.dtype, device=index.device)
    return first.scatter_reduce_(0, inverse, pos, reduce="amin")


def group_means(per_class: torch.Tensor, groups: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Mean of the finite per-class scores in each group; NaN when a group has none."""
    out = {}
    for name, mask in groups.items():
        vals = per_class[mask.to(per_class.device)]
        vals = vals[~torch.isnan(vals)]
        out[name] = vals.mean() if vals.numel() else torch.tensor(float("nan"), device=per_class.device)
    return out


class ShotGroupAccuracy(Metric):
    """Top-1 accuracy overall (micro, as papers report), per class, and per shot group."""

    full_state_update = False

    def __init__(self, num_classes: int, groups: Mapping[str, Sequence[bool]], **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.group_masks = {k: torch.as_tensor(list(v), dtype=torch.bool) for k, v in groups.items()}
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.add_state("index", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor, index: torch.Tensor) -> None:
        """``preds``: predicted labels (N,) or scores (N, C); ``target``: labels (N,)."""
        if preds.ndim == 2:
            preds = preds.argmax(dim=1)
        self.preds.append(preds.detach())
        self.target.append(target.detach())
        self.index.append(index.detach())

    def compute(self) -> dict[str, torch.Tensor]:
        preds, target, index = (dim_zero_cat(s) for s in (self.preds, self.target, self.index))
        keep = first_occurrence(index)
        preds, target = preds[keep], target[keep]
        per_class = multiclass_accuracy(
            preds, target, num_classes=self.num_classes, average=None, validate_args=False
        )
        support = torch.bincount(target, minlength=self.num_classes)
        per_class = torch.where(support > 0, per_class, torch.full_like(per_class, float("nan")))
        result = {"acc": (preds == target).float().mean(), "per_class": per_class, "num_samples": torch.tensor(len(target))}
        result.update({f"acc_{k}": v for k, v in group_means(per_class, self.group_masks).items()})
        return result


class ShotGroupAveragePrecision(Metric):
    """Exact (unbinned) per-class AP, mAP over all classes, and per shot-group mAP (multi-label).

    Images without any label count as negatives for every class. Scores must already be
    probabilities: ltbench applies the sigmoid, never torchmetrics' per-batch auto-detection.
    """

    full_state_update = False

    def __init__(self, num_classes: int, groups: Mapping[str, Sequence[bool]], **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.group_masks = {k: torch.as_tensor(list(v), dtype=torch.bool) for k, v in groups.items()}
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.add_state("index", default=[], dist_reduce_fx="cat")

    def update(self, scores: torch.Tensor, target: torch.Tensor, index: torch.Tensor) -> None:
        self.scores.append(scores.detach().float())
        self.target.append(target.detach())
        self.index.append(index.detach())

    def compute(self) -> dict[str, torch.Tensor]:
        from torchmetrics.functional.classification import multilabel_average_precision

        scores, target, index = (dim_zero_cat(s) for s in (self.scores, self.target, self.index))
        keep = first_occurrence(index)
        scores, target = scores[keep], target[keep].long()
        per_class = multilabel_average_precision(
            scores, target, num_labels=self.num_classes, average=None, thresholds=None, validate_args=False
        )
        positives = target.sum(0)
        per_class = torch.where(positives > 0, per_class, torch.full_like(per_class, float("nan")))
        result = {"mAP": torch.nanmean(per_class), "per_class": per_class, "num_samples": torch.tensor(len(target))}
        result.update({f"mAP_{k}": v for k, v in group_means(per_class, self.group_masks).items()})
        return result


class UncertaintyAccuracy(Metric):
    """Mean predictive uncertainty u and accuracy against it: accuracy in u quantile bins (equal counts, so
    the bins stay informative when u is concentrated; edges and counts given), and the mean u of correct
    and of wrong predictions. A trustworthy u is low where accuracy is high."""

    full_state_update = False

    def __init__(self, bins: int = 5, **kwargs) -> None:
        super().__init__(**kwargs)
        self.bins = bins
        self.add_state("u", default=[], dist_reduce_fx="cat")
        self.add_state("correct", default=[], dist_reduce_fx="cat")
        self.add_state("index", default=[], dist_reduce_fx="cat")

    def update(self, uncertainty: torch.Tensor, preds: torch.Tensor, target: torch.Tensor, index: torch.Tensor) -> None:
        if preds.ndim == 2:
            preds = preds.argmax(dim=1)
        self.u.append(uncertainty.detach().float())
        self.correct.append(preds.detach() == target.detach())
        self.index.append(index.detach())

    def compute(self) -> dict[str, torch.Tensor]:
        u, correct, index = (dim_zero_cat(s) for s in (self.u, self.correct, self.index))
        keep = first_occurrence(index)
        u, correct = u[keep], correct[keep].float()
        edges = torch.quantile(u.double(), torch.linspace(0, 1, self.bins + 1, dtype=torch.float64, device=u.device)).to(u.dtype)
        which = torch.bucketize(u, edges[1:-1], right=True)
        counts = torch.bincount(which, minlength=self.bins)
        hits = torch.bincount(which, weights=correct, minlength=self.bins)
        nan = torch.tensor(float("nan"), device=u.device)
        return {
            "mean_u": u.mean(),
            "mean_u_correct": u[correct > 0].mean() if (correct > 0).any() else nan,
            "mean_u_wrong": u[correct == 0].mean() if (correct == 0).any() else nan,
            "bin_edges": edges,
            "bin_count": counts,
            "bin_acc": torch.where(counts > 0, hits / counts.clamp_min(1), nan),
        }
