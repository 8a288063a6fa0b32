import numpy as np
import pytest

from ltbench.data.longtail import (
    MULTI_LABEL_RULE,
    SINGLE_LABEL_RULE,
    ShotRule,
    exp_profile,
    imbalance_profile,
    indices_sha256,
    ldam_subsample,
    step_profile,
)


def test_exp_profile_cifar10_rho100():
    assert exp_profile(5000, 10, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


@pytest.mark.parametrize(
    "n_max,c,rho,total,groups",
    [
        (5000, 10, 100, 12406, (8, 2, 0)),
        (5000, 10, 50, 13996, (9, 1, 0)),
        (5000, 10, 10, 20431, (10, 0, 0)),
        (500, 100, 100, 10847, (35, 35, 30)),
        (500, 100, 50, 12608, (41, 41, 18)),
        (500, 100, 10, 19573, (69, 31, 0)),
        (500, 100, 200, 9502, (30, 31, 39)),
    ],
)
def test_cifar_lt_sizes_and_groups(n_max, c, rho, total, groups):
    counts = exp_profile(n_max, c, rho)
    assert sum(counts) == total
    g = SINGLE_LABEL_RULE.groups(counts)
    assert (g["many"].sum(), g["medium"].sum(), g["few"].sum()) == groups


def test_step_profile():
    assert step_profile(500, 4, 10) == [500, 500, 50, 50]
    assert imbalance_profile("step", 500, 5, 10) == [500, 500, 50, 50, 50]
    with pytest.raises(ValueError, match="imb_ratio"):
        imbalance_profile("exp", 500, 5, 0.5)


def _ldam_reference(targets, counts, seed):
    """LDAM-DRW's own procedure with the legacy global NumPy RNG."""
    np.random.seed(seed)
    out = []
    targets_np = np.array(targets, dtype=np.int64)
    for c, n in enumerate(counts):
        idx = np.where(targets_np == c)[0]
        np.random.shuffle(idx)
        out.extend(idx[:n].tolist())
    return out


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_ldam_subsample_matches_reference(seed):
    rng = np.random.RandomState(123)
    targets = rng.permutation(np.repeat(np.arange(10), 300))
    counts = exp_profile(300, 10, 50)
    got = ldam_subsample(targets, counts, seed)
    assert got.tolist() == _ldam_reference(targets, counts, seed)
    assert np.bincount(targets[got], minlength=10).tolist() == counts
    assert indices_sha256(got) == indices_sha256(_ldam_reference(targets, counts, seed))
    assert indices_sha256(got) != indices_sha256(ldam_subsample(targets, counts, seed + 1))


def test_ldam_subsample_rejects_too_many():
    with pytest.raises(ValueError, match="class 1 has 2 images"):
        ldam_subsample([0, 0, 0, 1, 1], [3, 3])


def test_shot_rule_boundaries():
    counts = [101, 100, 20, 19]
    single = SINGLE_LABEL_RULE.groups(counts)
    assert single["many"].tolist() == [True, False, False, False]
    assert single["few"].tolist() == [False, False, False, True]
    multi = MULTI_LABEL_RULE.groups(counts)
    assert multi["many"].tolist() == [True, True, False, False]
    for rule in (single, multi):
        assert (rule["many"].astype(int) + rule["medium"] + rule["few"] == 1).all()
    with pytest.raises(ValueError):
        ShotRule(many_min=10, few_max=10)
