import math

import pytest
import torch

from ltbench.methods.optim import OptimizerConfig, SchedulerConfig, build_optimizer, lr_factor, step_progress


def _torch_factors(make_sched, steps):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = make_sched(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_matches_torch():
    spe, epochs = 10, 5
    cfg = SchedulerConfig(name="cosine")
    ours = [lr_factor(cfg, step_progress(cfg, s, spe), epochs) for s in range(spe * epochs)]
    ref = _torch_factors(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=spe * epochs), spe * epochs)
    assert ours == pytest.approx(ref, abs=1e-9)


def test_onecycle_matches_torch():
    """torch ends phase one at step pct*T - 1 of a T-1 step span; the same point here is (pct*T - 1)/(T - 1)."""
    steps = 100
    cfg = SchedulerConfig(name="onecycle", pct_start=(0.2 * steps - 1) / (steps - 1), div_factor=25, final_div_factor=1e4)
    ours = [lr_factor(cfg, step_progress(cfg, s, 1), steps - 1) for s in range(steps)]
    ref = _torch_factors(
        lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=1.0, total_steps=steps, pct_start=0.2, div_factor=25, final_div_factor=1e4),
        steps,
    )
    assert ours == pytest.approx(ref, rel=1e-6, abs=1e-9)


def test_bbn_warmup_multistep_epoch_convention():
    """TDE/BBN CIFAR schedule: lr 0.2, epochs 1-4 at 0.093, 0.12, 0.147, 0.173, then 0.2, 0.002, 2e-5."""
    cfg = SchedulerConfig(name="multistep", warmup_epochs=5, warmup_start_factor=1 / 3, milestones=[120, 160], gamma=0.01, interval="epoch")
    spe = 7
    lr = lambda epoch: 0.2 * lr_factor(cfg, step_progress(cfg, epoch * spe + 3, spe), 200)  # noqa: E731
    assert [round(lr(e), 3) for e in range(4)] == [0.093, 0.12, 0.147, 0.173]
    assert lr(4) == pytest.approx(0.2) and lr(118) == pytest.approx(0.2)
    assert lr(119) == pytest.approx(0.002) and lr(158) == pytest.approx(0.002)
    assert lr(159) == pytest.approx(2e-5) and lr(199) == pytest.approx(2e-5)


def test_step_warmup_is_linear():
    cfg = SchedulerConfig(name="constant", warmup_epochs=2, warmup_start_factor=0.0)
    assert [lr_factor(cfg, t, 10) for t in (0.0, 0.5, 1.0, 2.0, 5.0)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    assert math.isclose(lr_factor(SchedulerConfig(name="cosine", min_factor=0.1), 10, 10), 0.1)


def test_no_decay_groups_and_optimizers():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    opt = build_optimizer(net.named_parameters(), OptimizerConfig(name="adamw", lr=1e-3, weight_decay=0.1, no_decay_norm_bias=True))
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert [len(g["params"]) for g in opt.param_groups] == [1, 3]
    sgd = build_optimizer(net.named_parameters(), OptimizerConfig())
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.9


def test_adam_family_runs_fused_and_matches_the_per_tensor_update():
    """Fused by default for Adam/AdamW (one kernel, not a loop over tensors); the same update up to rounding."""
    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Linear(7, 3)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    start = nets[0][0].weight.detach().clone()
    cfgs = [OptimizerConfig(name="adamw", lr=1e-2, weight_decay=0.1), OptimizerConfig(name="adamw", lr=1e-2, weight_decay=0.1, fused=False)]
    opts = [build_optimizer(n.named_parameters(), c) for n, c in zip(nets, cfgs)]
    assert opts[0].param_groups[0]["fused"] is True and not opts[1].param_groups[0]["fused"]
    x = torch.randn(16, 5)
    for _ in range(5):
        for net, opt in zip(nets, opts):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert (nets[0][0].weight - start).abs().max() > 1e-3
    sgd = build_optimizer(nets[0].named_parameters(), OptimizerConfig())
    assert not sgd.param_groups[0]["fused"]


def test_fused_gives_way_where_the_trainer_cannot_step_it():
    """fp16 loss scaling with gradient clipping: the default falls back to the unfused update; an explicit
    ``fused: true`` is refused in one line naming the key (Lightning would raise mid-fit)."""
    from ltbench.errors import LTBenchError
    from ltbench.methods.optim import use_fused

    params = list(torch.nn.Linear(3, 2).parameters())
    assert use_fused(params, OptimizerConfig(name="adamw")) is True
    assert use_fused(params, OptimizerConfig(name="adamw"), allowed=False) is False
    opt = build_optimizer([("w", p) for p in params], OptimizerConfig(name="adamw"), fused_allowed=False)
    assert not opt.param_groups[0]["fused"]
    with pytest.raises(LTBenchError, match="optimizer.fused false"):
        use_fused(params, OptimizerConfig(name="adamw", fused=True), allowed=False)


def test_warmup_steps_need_a_per_step_schedule():
    with pytest.raises(ValueError, match="warmup_steps counts optimiser steps"):
        SchedulerConfig(warmup_steps=100, interval="epoch")
