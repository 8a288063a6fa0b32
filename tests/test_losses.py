"""Multi-label losses: each one's defining property, against independent re-computations."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ltbench.losses import DBSettings, asymmetric_loss, db_focal_loss, focal_loss, rebalance_weight


def _batch(seed=0, b=6, c=5):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, generator=g) * 3
    target = (torch.rand(b, c, generator=g) < 0.4).long()
    target[0] = 0  # an image without labels
    return logits, target


def test_asl_reduces_to_bce_without_focusing_or_margin():
    logits, target = _batch()
    ref = F.binary_cross_entropy_with_logits(logits, target.float())
    assert asymmetric_loss(logits, target, gamma_neg=0, gamma_pos=0, clip=0).item() == pytest.approx(ref.item(), rel=1e-5)


def test_asl_matches_the_formula():
    logits, target = _batch(1)
    p = torch.sigmoid(logits).double().numpy()
    y = target.double().numpy()
    pm = np.maximum(p - 0.05, 0)
    ref = -(y * np.log(np.maximum(p, 1e-8)) + (1 - y) * np.log(np.maximum(1 - pm, 1e-8)) * pm**4).mean()
    assert asymmetric_loss(logits, target).item() == pytest.approx(ref, rel=1e-5)


def test_asl_easy_negatives_below_the_margin_cost_and_move_nothing():
    logits = torch.tensor([[-4.0, -3.5, 2.0]], requires_grad=True)  # p = 0.018, 0.029 < 0.05
    target = torch.tensor([[0, 0, 0]])
    loss = asymmetric_loss(logits, target)
    loss.backward()
    assert logits.grad[0, 0].item() == 0 and logits.grad[0, 1].item() == 0
    assert logits.grad[0, 2].item() > 0
    only_hard = asymmetric_loss(torch.tensor([[2.0]]), torch.tensor([[0]]))
    assert loss.item() * 3 == pytest.approx(only_hard.item(), rel=1e-6)


def test_asl_focusing_weights_carry_no_gradient():
    logits = torch.tensor([[1.0]], requires_grad=True)
    asymmetric_loss(logits, torch.tensor([[0]]), gamma_neg=4, clip=0).backward()
    p = torch.sigmoid(torch.tensor(1.0))
    assert logits.grad.item() == pytest.approx((p**4 * p).item(), rel=1e-5)  # p^4 * d/ds[-log(1-p)]


def test_focal_matches_formula_and_reduces_to_scaled_bce():
    logits, target = _batch(2)
    p = torch.sigmoid(logits)
    pt = torch.where(target.bool(), p, 1 - p)
    bce = F.binary_cross_entropy_with_logits(logits, target.float(), reduction="none")
    assert focal_loss(logits, target).item() == pytest.approx((2 * (1 - pt) ** 2 * bce).mean().item(), rel=1e-5)
    assert focal_loss(logits, target, gamma=0, balance=1).item() == pytest.approx(bce.mean().item(), rel=1e-6)


def test_rebalance_weight_is_the_smoothed_sampling_ratio():
    freq = torch.tensor([100.0, 10.0, 2.0])
    target = torch.tensor([[1, 1, 0], [0, 0, 1], [0, 0, 0]]).float()
    w = rebalance_weight(target, freq, DBSettings())
    inv = 1 / freq.numpy()
    r0 = inv / (inv[0] + inv[1])
    assert np.allclose(w[0].numpy(), 0.1 + 1 / (1 + np.exp(-10 * (r0 - 0.2))), atol=1e-6)
    assert np.allclose(w[1].numpy(), 0.1 + 1 / (1 + np.exp(-10 * (inv / inv[2] - 0.2))), atol=1e-6)
    assert np.allclose(w[2].numpy(), 1.1)  # no labels: r = inf


def _official_db_focal(logits, target, freq, n, s):
    """The official ResampleLoss (wutong16/DistributionBalancedLoss, resample_loss.py), step by step,
    in float64: rebalance weight, bias -log(N/n - 1) * init_bias / neg_scale, negative scaling of
    logits and weights, focal factor from the unweighted BCE, balance_param, mean."""
    y = target.double()
    z = logits.double()
    f = freq.double()
    inv = 1 / f
    r = inv.unsqueeze(0) / (y * inv).sum(1, keepdim=True)
    weight = torch.sigmoid(s.map_beta * (r - s.map_gamma)) + s.map_alpha
    bias = -torch.log(n / f - 1) * s.init_bias / s.neg_scale
    z = z + bias
    z = z * (1 - y) * s.neg_scale + z * y
    weight = weight / s.neg_scale * (1 - y) + weight * y
    bce = -(y * torch.log(torch.sigmoid(z)) + (1 - y) * torch.log(1 - torch.sigmoid(z)))
    pt = torch.exp(-bce)
    loss = s.balance * (1 - pt) ** s.focal_gamma * (weight * bce)
    return loss.mean()


@pytest.mark.parametrize("settings", [DBSettings(), DBSettings(neg_scale=5.0, map_gamma=0.3)], ids=["coco", "voc"])
def test_db_focal_matches_the_official_resample_loss_term_by_term(settings):
    logits, target = _batch(3)
    freq = torch.tensor([300.0, 80.0, 30.0, 9.0, 2.0])
    n = 400
    x = logits.clone().requires_grad_(True)
    loss = db_focal_loss(x, target, freq, n, settings)
    loss.backward()
    xr = logits.double().clone().requires_grad_(True)
    ref = _official_db_focal(xr, target, freq, n, settings)
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(x.grad.double(), xr.grad, rtol=1e-4, atol=1e-7)


def test_db_bias_is_init_bias_over_neg_scale():
    """On positives alone (no negative scaling), without weights or focus, DB is BCE of s + b with
    b = -log(N/n - 1) * init_bias / neg_scale: the bias shrinks as neg_scale grows."""
    logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(5))
    target = torch.ones(4, 3, dtype=torch.long)
    freq, n = torch.tensor([200.0, 20.0, 2.0]), 400
    for neg_scale in (1.0, 2.0, 5.0):
        s = DBSettings(neg_scale=neg_scale, init_bias=0.5, rebalance=False, focal=False)
        bias = -torch.log(n / freq - 1) * 0.5 / neg_scale
        ref = F.binary_cross_entropy_with_logits(logits + bias, target.float())
        assert db_focal_loss(logits, target, freq, n, s).item() == pytest.approx(ref.item(), rel=1e-6)


def test_db_without_its_parts_is_bce():
    logits, target = _batch(4)
    plain = DBSettings(neg_scale=1.0, init_bias=0.0, rebalance=False, focal=False)
    ref = F.binary_cross_entropy_with_logits(logits, target.float())
    assert db_focal_loss(logits, target, torch.ones(5) * 10, 50, plain).item() == pytest.approx(ref.item(), rel=1e-6)
