"""De-confound-TDE: the causal-norm head's maths, the head direction, counterfactual inference, DDP, CLI."""

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from ltbench.methods import TDE
from ltbench.methods.tde import counterfactual_logits
from ltbench.models.heads import CausalNormHead
from tests.helpers import REPO, run_two_processes

COUNTS = [50, 20, 5, 1]
FACTS = dict(backbone="tiny_cnn", in_chans=1, num_classes=4, train_class_counts=COUNTS, class_names=list("abcd"))
TDE_DIGITS = str(REPO / "configs" / "tde_digits_lt.yaml")
QUIET = ["--trainer.enable_progress_bar", "false"]


def _x(n=6, seed=0):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _feats(n=7, f=16, seed=0, nonneg=True):
    x = torch.randn(n, f, generator=torch.Generator().manual_seed(seed)).double()
    return x.relu() + 0.01 if nonneg else x


def _model(**kw):
    torch.manual_seed(0)
    return TDE(**{**FACTS, **kw})


# ---- the head ---------------------------------------------------------------------------------
def test_training_logits_lie_strictly_inside_tau():
    head = CausalNormHead(16, 5, num_heads=2, tau=16.0).double()
    x = _feats(50, nonneg=False) * torch.logspace(-3, 3, 50, dtype=torch.float64).unsqueeze(1)
    assert head(x).abs().max() < 16.0
    with torch.no_grad():  # the worst case: every head's feature along a class weight, which is huge
        head.weight[0] = x[0] * 1e9
    y = head(x[:1])
    assert y[0, 0] < 16.0 and y[0, 0] > 16.0 * (1 - 1e-6)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 2.0, 3.0])
def test_tde_logits_bounded_by_tau_times_max_1_and_alpha_minus_1(alpha):
    """||x - alpha cos d||^2 = 1 + cos^2 (alpha^2 - 2 alpha): the bound is tau for alpha in [0, 2]."""
    head = CausalNormHead(16, 5, num_heads=2, tau=16.0).double()
    x, d = _feats(200, seed=1), _feats(1, seed=2)[0]
    y, _ = counterfactual_logits(head, x, d, alpha)
    assert y.abs().max() < 16.0 * max(1.0, abs(alpha - 1.0))


def test_k2_equals_two_k1_heads_on_channel_halves_at_half_scale():
    two = CausalNormHead(16, 5, num_heads=2, tau=16.0).double()
    a, b = CausalNormHead(8, 5, num_heads=1, tau=8.0).double(), CausalNormHead(8, 5, num_heads=1, tau=8.0).double()
    with torch.no_grad():
        a.weight.copy_(two.weight[:, :8])
        b.weight.copy_(two.weight[:, 8:])
    x, d = _feats(), _feats(1, seed=3)[0]
    assert torch.allclose(two(x), a(x[:, :8]) + b(x[:, 8:]), atol=1e-12)
    tde2, _ = counterfactual_logits(two, x, d, 1.5)
    tde_a, _ = counterfactual_logits(a, x[:, :8], d[:8], 1.5)
    tde_b, _ = counterfactual_logits(b, x[:, 8:], d[8:], 1.5)
    assert torch.allclose(tde2, tde_a + tde_b, atol=1e-12)


def test_head_refuses_a_head_count_that_does_not_divide_the_features():
    with pytest.raises(ValueError, match="num_heads=3 must divide"):
        CausalNormHead(16, 5, num_heads=3)


# ---- counterfactual inference ------------------------------------------------------------------
def _reference_tde(x, w, d, alpha, tau, gamma, k):
    """The card's formula, written out per head with numpy."""
    n, f = x.shape
    c, h = w.shape[0], f // k
    out = np.zeros((n, c))
    for j in range(k):
        xs, ws, ds = x[:, j * h:(j + 1) * h], w[:, j * h:(j + 1) * h], d[j * h:(j + 1) * h]
        x_hat = xs / np.linalg.norm(xs, axis=1, keepdims=True)
        w_tilde = ws / (np.linalg.norm(ws, axis=1, keepdims=True) + gamma)
        d_hat = ds / np.linalg.norm(ds)
        cos = x_hat @ d_hat
        out += (tau / k) * (x_hat @ w_tilde.T - alpha * cos[:, None] * (d_hat @ w_tilde.T)[None, :])
    return out


@pytest.mark.parametrize("k", [1, 2, 4])
def test_subtraction_matches_an_independent_numpy_reference(k):
    head = CausalNormHead(16, 5, num_heads=k, tau=16.0, gamma=1 / 32).double()
    x, d = _feats(9, seed=4), _feats(1, seed=5)[0] * 37.0
    got, cos = counterfactual_logits(head, x, d, 1.7)
    ref = _reference_tde(x.numpy(), head.weight.detach().numpy(), d.numpy(), 1.7, 16.0, 1 / 32, k)
    assert np.allclose(got.detach().numpy(), ref, atol=1e-10)
    assert cos.shape == (9, k)


def test_method_inference_uses_the_buffer_and_alpha():
    m = _model(alpha=1.5).eval()
    x = _x()
    with torch.no_grad():
        m.embed_mean.copy_(torch.rand(64) * 5)
        feats = m.backbone(x).double()
        ref = _reference_tde(feats.numpy(), m.head.weight.double().numpy(), m.embed_mean.double().numpy(), 1.5, 16.0, 1 / 32, 2)
        assert np.allclose(m.inference_logits(x).numpy(), ref, atol=1e-4)


@pytest.mark.parametrize("kw", [dict(alpha=0.0), dict(alpha=2.0, tde=False)])
def test_alpha_zero_or_tde_off_gives_the_training_logits(kw):
    m = _model(**kw).eval()
    x = _x()
    with torch.no_grad():
        m.embed_mean.copy_(torch.rand(64) + 0.1)
        assert torch.equal(m.inference_logits(x), m(x))


def test_scaling_the_moving_average_changes_nothing():
    m = _model(alpha=1.0).eval()
    x = _x()
    with torch.no_grad():
        m.embed_mean.copy_(torch.rand(64) + 0.1)
        base = m.inference_logits(x)
        for scale in (1e-3, 0.5, 7.0, 1e4):
            m.embed_mean.mul_(scale)
            assert torch.allclose(m.inference_logits(x), base, atol=1e-5)
            m.embed_mean.div_(scale)


def test_a_zero_buffer_leaves_the_logits_unchanged():
    m = _model(alpha=3.0).eval()
    x = _x()
    with torch.no_grad():
        assert torch.allclose(m.inference_logits(x), m(x))


def test_k1_tde_is_logits_minus_cos_times_a_class_bias():
    head = CausalNormHead(16, 5, num_heads=1, tau=16.0).double()
    x, d = _feats(seed=6), _feats(1, seed=7)[0]
    d_hat = d / d.norm()
    b = 16.0 * (head.normalized_weight().flatten(-2) @ d_hat)
    cos = F.normalize(x, dim=1) @ d_hat
    got, _ = counterfactual_logits(head, x, d, 2.5)
    assert torch.allclose(got, head(x) - 2.5 * cos[:, None] * b[None], atol=1e-12)


# ---- the head direction ------------------------------------------------------------------------
def test_buffer_accumulates_in_training_and_never_in_evaluation():
    m = _model()
    assert m.embed_mean.abs().sum() == 0 and "embed_mean" in m.state_dict()
    m.train()
    m(_x(seed=1))
    first = m.embed_mean.clone()
    assert first.abs().sum() > 0 and (first >= 0).all()  # post-ReLU pooled features
    m(_x(seed=2))
    assert not torch.equal(m.embed_mean, first)
    m.eval()
    frozen = m.embed_mean.clone()
    with torch.no_grad():
        m(_x(seed=3))
        m.inference_logits(_x(seed=4))
        m.validation_step((_x(seed=5), torch.zeros(6, dtype=torch.long), torch.arange(6)), 0)
        m.test_step((_x(seed=6), torch.zeros(6, dtype=torch.long), torch.arange(6)), 0)
        m.predict_step((_x(seed=7), torch.zeros(6, dtype=torch.long), torch.arange(6)), 0)
    assert torch.equal(m.embed_mean, frozen)


def test_accumulation_is_the_unnormalised_official_rule():
    m = _model(mu=0.9)
    f1, f2 = torch.rand(5, 64), torch.rand(3, 64)
    m.accumulate(f1)
    m.accumulate(f2)
    assert torch.allclose(m.embed_mean, 0.9 * f1.mean(0) + f2.mean(0))


def test_buffer_is_checkpointed_and_restored():
    m = _model()
    m.train()
    m(_x())
    fresh = _model()
    fresh.load_state_dict(m.state_dict())
    assert torch.equal(fresh.embed_mean, m.embed_mean)


def test_lr_rule_for_mu():
    m = _model(mu=0.9, mu_schedule="lr")
    opt = torch.optim.SGD(m.parameters(), lr=0.2)
    m._trainer = SimpleNamespace(optimizers=[opt], current_epoch=0, global_rank=0)
    try:
        for lr, mu in [(0.2, 0.9), (0.02, 0.9), (0.01, 0.95), (0.0, 1.0)]:
            opt.param_groups[0]["lr"] = lr
            m.on_train_epoch_start()
            assert m.mu == pytest.approx(mu)
        fixed = _model(mu=0.9)
        fixed._trainer = m._trainer
        fixed.on_train_epoch_start()
        assert fixed.mu == 0.9
    finally:
        m._trainer = None


def _batches(rank):
    """Different data per rank and uneven sizes (5 and 3), two steps."""
    return [_x(5 if rank == 0 else 3, seed=10 * step + rank) for step in range(2)]


def _frozen_bn_model():
    """Training mode with the backbone's BN in eval, so a sample's feature does not depend on its batch."""
    m = _model(mu=0.9)
    m.train()
    m.backbone.eval()
    return m


def _ddp_worker(rank, world, port, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    m = _frozen_bn_model()
    for x in _batches(rank):
        m(x)
    gathered = [torch.zeros_like(m.embed_mean) for _ in range(world)]
    dist.all_gather(gathered, m.embed_mean)
    if rank == 0:
        out.put([g.tolist() for g in gathered])
    dist.barrier()
    dist.destroy_process_group()


def test_two_process_gloo_keeps_the_buffer_equal_and_global():
    (got,) = run_two_processes(_ddp_worker)
    rank0, rank1 = (torch.tensor(g) for g in got)
    assert torch.equal(rank0, rank1)
    single = _frozen_bn_model()
    with torch.no_grad():
        steps = [single.backbone(torch.cat([_batches(0)[s], _batches(1)[s]])).mean(0) for s in range(2)]
    assert torch.allclose(rank0, 0.9 * steps[0] + steps[1], atol=1e-5)


# ---- ablations and tasks -----------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["causal", "cosine", "capsule"])
@pytest.mark.parametrize("tde", [True, False])
@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_ablation_options_construct_and_train_a_step(norm, tde, task):
    m = _model(norm=norm, tde=tde, alpha=1.0, task=task)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    labels = torch.tensor([0, 1, 2, 3, 0, 0])
    y = labels if task == "multiclass" else F.one_hot(labels, 4)
    m.train()
    loss = m.training_loss(m(_x()), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and m.head.weight.grad is not None and m.embed_mean.abs().sum() > 0
    m.eval()
    with torch.no_grad():
        logits, train_logits = m.inference_logits(_x(seed=1)), m(_x(seed=1))
        scores = m.scores(logits)
    assert torch.isfinite(logits).all() and scores.shape == (6, 4)
    assert torch.equal(logits, train_logits) != tde
    assert train_logits.abs().max() < 16.0


def test_capsule_and_cosine_norms():
    x = _feats(5, seed=8)
    cap = CausalNormHead(16, 3, num_heads=2, norm="capsule").double()
    cosine = CausalNormHead(16, 3, num_heads=2, norm="cosine").double()
    chunks = x.unflatten(-1, (2, 8))
    r = chunks.norm(dim=-1, keepdim=True)
    assert torch.allclose(cap.normalized_input(x), r / (1 + r) * chunks / r)
    assert torch.allclose(cosine.normalized_weight().norm(dim=-1), torch.ones(3, 2, dtype=torch.float64))
    causal_w = CausalNormHead(16, 3, num_heads=2).double().normalized_weight()
    assert (causal_w.norm(dim=-1) < 1).all()


def test_inference_settings_are_recorded():
    m = _model(alpha=2.0, tde=False)
    assert m.hparams["alpha"] == 2.0 and m.hparams["tde"] is False
    assert m.method_protocol()["tde_alpha"] == 0.0
    assert _model(alpha=2.0).method_protocol()["tde_alpha"] == 2.0


# ---- end to end ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from ltbench.runner import run

    root = tmp_path_factory.mktemp("tde")
    cli = run(["fit", "--config", TDE_DIGITS, "--run_dir", str(root), *QUIET, "--trainer.max_epochs", "8", "--test_after_fit", "false"])
    return root, Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"


def _test_record(root, ckpt, version, *extra):
    from ltbench.runner import run

    cli = run(["test", "--config", TDE_DIGITS, "--ckpt_path", str(ckpt), "--run_dir", str(root), "--version", version, *QUIET, *extra])
    return json.loads(Path(cli.model.record_path).read_text())


@pytest.mark.slow
def test_alpha_override_at_test_time_changes_the_record_without_retraining(trained):
    root, ckpt = trained
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    zero = _test_record(root, ckpt, "a0", "--model.init_args.alpha", "0")
    strong = _test_record(root, ckpt, "a3", "--model.init_args.alpha", "3.0")
    off = _test_record(root, ckpt, "off", "--model.init_args.tde", "false")
    assert zero["protocol"]["tde_alpha"] == 0.0 and strong["protocol"]["tde_alpha"] == 3.0
    assert zero["config"]["model"]["init_args"]["alpha"] == 0.0 and strong["config"]["model"]["init_args"]["alpha"] == 3.0
    assert strong["metrics"] != zero["metrics"]
    assert off["metrics"] == zero["metrics"] and off["per_class"] == zero["per_class"]
    assert 0 < strong["protocol"]["tde_test_mean_cos"] <= 1
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() == digest


@pytest.mark.slow
def test_alpha_sweep_reports_one_row_per_alpha(trained, capsys):
    from ltbench.commands.tde_alpha_sweep import main

    root, ckpt = trained
    rows = main(["--config", TDE_DIGITS, "--ckpt_path", str(ckpt), "--alphas", "0", "3", "--run_dir", str(root), "--json", str(root / "sweep.json")])
    assert [r["alpha"] for r in rows] == [0.0, 3.0]
    zero = _test_record(root, ckpt, "ref0", "--model.init_args.alpha", "0")
    assert {k: rows[0][k] for k in zero["metrics"]} == zero["metrics"]
    assert rows[1]["acc"] != rows[0]["acc"]
    assert json.loads((root / "sweep.json").read_text())[1]["alpha"] == 3.0
    assert "| alpha | acc |" in capsys.readouterr().out
