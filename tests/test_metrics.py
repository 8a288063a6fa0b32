import math
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
from sklearn.metrics import average_precision_score, recall_score
from torch.utils.data import DistributedSampler

from ltbench.metrics import ShotGroupAccuracy, ShotGroupAveragePrecision, first_occurrence, group_means
from tests.helpers import run_two_processes

C = 7
GROUPS = {"many": [True, True, False, False, False, False, False], "medium": [False, False, True, True, False, False, False], "few": [False] * 4 + [True] * 3}


def _random_single(n=211, seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, C, (n,), generator=g)
    scores = torch.rand(n, C, generator=g)
    scores[torch.arange(n), target] += torch.rand(n, generator=g)  # better than chance
    return scores.softmax(-1), target


def _reference_acc(scores, target):
    preds = scores.argmax(1).numpy()
    per_class = recall_score(target.numpy(), preds, labels=list(range(C)), average=None, zero_division=np.nan)
    groups = {k: np.nanmean(per_class[np.array(v)]) for k, v in GROUPS.items()}
    return (preds == target.numpy()).mean(), per_class, groups


def test_accuracy_matches_sklearn():
    scores, target = _random_single()
    m = ShotGroupAccuracy(C, GROUPS)
    for chunk in range(0, len(target), 50):
        m.update(scores[chunk : chunk + 50], target[chunk : chunk + 50], torch.arange(chunk, min(chunk + 50, len(target))))
    res = m.compute()
    acc, per_class, groups = _reference_acc(scores, target)
    assert res["acc"].item() == pytest.approx(acc)
    assert np.allclose(res["per_class"].numpy(), per_class)
    for k, v in groups.items():
        assert res[f"acc_{k}"].item() == pytest.approx(v)


def test_accuracy_absent_class_and_empty_group_are_nan_not_zero():
    target = torch.tensor([0, 0, 1, 1])
    preds = torch.tensor([0, 1, 1, 1])
    groups = {"many": [True, False, False], "medium": [False, True, True], "few": [False, False, False]}
    m = ShotGroupAccuracy(3, groups)
    m.update(preds, target, torch.arange(4))
    res = m.compute()
    assert math.isnan(res["per_class"][2].item())
    assert res["acc_medium"].item() == 1.0  # class 2 has no test image: left out, not counted as 0
    assert math.isnan(res["acc_few"].item())


def test_duplicate_indices_counted_once():
    scores, target = _random_single(40)
    m = ShotGroupAccuracy(C, GROUPS)
    m.update(scores, target, torch.arange(40))
    m.update(scores[:5], target[:5], torch.arange(5))  # what a padding sampler repeats
    correct = (scores.argmax(1) == target).double().numpy()
    assert m.compute()["acc"].item() == pytest.approx(correct.mean(), abs=1e-7)  # the 40 samples, each once
    assert m.compute()["acc"].item() != pytest.approx(np.concatenate([correct, correct[:5]]).mean(), abs=1e-7)
    assert m.compute()["num_samples"].item() == 40


def test_first_occurrence():
    idx = torch.tensor([5, 3, 5, 9, 3])
    assert first_occurrence(idx).tolist() == [1, 0, 3]


def test_group_means_nan_for_empty():
    out = group_means(torch.tensor([1.0, float("nan"), 0.5]), {"a": torch.tensor([True, True, False]), "b": torch.tensor([False, True, False])})
    assert out["a"].item() == 1.0 and math.isnan(out["b"].item())


def _random_multi(n=157, seed=0):
    g = torch.Generator().manual_seed(seed)
    target = (torch.rand(n, C, generator=g) < torch.linspace(0.5, 0.05, C)).long()
    target[:3] = 0  # images without labels are negatives everywhere
    scores = (torch.rand(n, C, generator=g) + 0.5 * target).clamp(max=1)
    scores = (scores * 10).round() / 10  # ties
    return scores, target


def test_average_precision_matches_sklearn_with_ties():
    scores, target = _random_multi()
    target[:, 6] = 0  # a class without positives
    m = ShotGroupAveragePrecision(C, GROUPS)
    m.update(scores, target, torch.arange(len(target)))
    res = m.compute()
    ref = np.array([average_precision_score(target[:, c].numpy(), scores[:, c].numpy()) if target[:, c].any() else np.nan for c in range(C)])
    assert np.allclose(res["per_class"].numpy(), ref, equal_nan=True)
    assert res["mAP"].item() == pytest.approx(np.nanmean(ref))
    assert res["mAP_few"].item() == pytest.approx(np.nanmean(ref[4:]))


def _ddp_worker(rank, world, port, kind, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    scores, target = _random_single() if kind == "single" else _random_multi()
    m = ShotGroupAccuracy(C, GROUPS) if kind == "single" else ShotGroupAveragePrecision(C, GROUPS)
    # the evaluation sampler Lightning uses under DDP pads the last shard with repeated samples
    sampler = DistributedSampler(range(len(target)), num_replicas=world, rank=rank, shuffle=False)
    idx = torch.tensor(list(sampler))
    for chunk in idx.split(16):
        m.update(scores[chunk], target[chunk], chunk)
    res = m.compute()
    if rank == 0:
        out.put({k: v.tolist() for k, v in res.items()})
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.parametrize("kind", ["single", "multi"])
def test_two_process_gloo_equals_one_process(kind):
    (got,) = run_two_processes(_ddp_worker, kind)
    scores, target = _random_single() if kind == "single" else _random_multi()
    assert len(target) % 2 == 1  # odd: the sampler really padded a duplicate
    single = ShotGroupAccuracy(C, GROUPS) if kind == "single" else ShotGroupAveragePrecision(C, GROUPS)
    single.update(scores, target, torch.arange(len(target)))
    ref = {k: v.tolist() for k, v in single.compute().items()}
    assert got["num_samples"] == ref["num_samples"] == len(target)
    for k in ref:
        assert np.allclose(got[k], ref[k], equal_nan=True), k
