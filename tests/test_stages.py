import pytest
import torch

from ltbench.runner import run
from ltbench.methods.stages import Stage, StagePlan
from tests.helpers import CE_DIGITS


def test_plan_resolves_open_stage_and_maps_epochs():
    plan = StagePlan([Stage("a"), Stage("b", epochs=3, sampler="class_balanced")], max_epochs=10)
    assert [s.epochs for s in plan.stages] == [7, 3]
    assert plan.starts == [0, 7]
    assert [plan.index_at(e) for e in (0, 6, 7, 9)] == [0, 0, 1, 1]
    assert plan.sampler_schedule() == [(0, None), (7, "class_balanced")]


@pytest.mark.parametrize(
    "stages,max_epochs,match",
    [
        ([Stage("a", 2), Stage("b", 3)], 4, "total 5 epochs but trainer.max_epochs is 4"),
        ([Stage("a"), Stage("b", 3)], 3, "leaves no epochs"),
        ([Stage("a"), Stage("b")], 5, "at most one stage"),
        ([], 5, "at least one stage"),
    ],
)
def test_plan_errors_name_the_setting(stages, max_epochs, match):
    with pytest.raises(ValueError, match=match):
        StagePlan(stages, max_epochs)


def _fit(tmp_path, *extra):
    args = ["fit", "--config", CE_DIGITS, "--run_dir", str(tmp_path), "--trainer.enable_progress_bar", "false", "--test_after_fit", "false", *extra]
    return run(args)


@pytest.mark.slow
def test_crt_freezes_backbone_reinits_head_and_switches_sampler(tmp_path):
    """cRT's first stage equals a plain CE run of the same length; its second changes only the head."""
    ce = _fit(tmp_path, "--trainer.max_epochs", "2", "--name", "ce")
    crt = _fit(
        tmp_path,
        "--model", "ltbench.methods.CRT",
        "--model.init_args.backbone", "tiny_cnn",
        "--model.init_args.representation_epochs", "2",
        "--model.init_args.crt_epochs", "2",
        "--trainer.max_epochs", "4",
        "--name", "crt",
    )
    ce_bb, crt_bb = ce.model.backbone.state_dict(), crt.model.backbone.state_dict()
    assert ce_bb.keys() == crt_bb.keys()
    for k in ce_bb:  # weights and batch-norm statistics untouched in stage 2
        assert torch.equal(ce_bb[k], crt_bb[k]), k
    assert not torch.allclose(ce.model.head.weight, crt.model.head.weight)
    assert crt.datamodule.sampler_schedule == [(0, "instance"), (2, "class_balanced")]
    assert crt.trainer.train_dataloader.sampler.mode_at(crt.trainer.current_epoch - 1) == "class_balanced"
    assert crt.model.entered_stage == 1


def test_crt_stage_total_must_match_trainer(tmp_path):
    from ltbench.errors import LTBenchError

    with pytest.raises(LTBenchError, match="set trainer.max_epochs: 5"):
        _fit(
            tmp_path,
            "--model", "ltbench.methods.CRT",
            "--model.init_args.backbone", "tiny_cnn",
            "--model.init_args.representation_epochs", "3",
            "--model.init_args.crt_epochs", "2",
            "--trainer.max_epochs", "4",
        )


@pytest.mark.slow
def test_freeze_prefixes_and_norm_eval_hold_for_the_whole_run(tmp_path):
    """DB-Loss-style backbone freezing: listed parameters never move, no BN statistic updates."""
    from ltbench.methods import CrossEntropy

    torch.manual_seed(0)
    init = CrossEntropy(backbone="tiny_cnn", in_chans=1, num_classes=10).backbone.state_dict()
    cli = _fit(tmp_path, "--trainer.max_epochs", "2", "--model.init_args.freeze", "[backbone.model.conv1]", "--model.init_args.norm_eval", "true")
    after = cli.model.backbone.state_dict()
    for k, v in init.items():
        if k.startswith("model.conv1.") or "running_" in k or "num_batches_tracked" in k:
            assert torch.equal(v, after[k]), k
    assert not torch.equal(init["model.conv2.conv.weight"], after["model.conv2.conv.weight"])
    assert not any(p.requires_grad for p in cli.model.backbone.model.conv1.parameters())


def test_neck_and_warmup_steps():
    from dataclasses import replace

    from ltbench.methods import CrossEntropy
    from ltbench.methods.optim import SchedulerConfig, lr_factor

    m = CrossEntropy(backbone="tiny_cnn", in_chans=1, num_classes=10, neck_dim=8, neck_dropout=0.5)
    assert [type(x).__name__ for x in m.head] == ["Linear", "Dropout", "Linear"] and m.head[2].in_features == 8
    cfg = SchedulerConfig(name="multistep", warmup_steps=500, warmup_start_factor=1 / 3, milestones=[5, 7])
    resolved = replace(cfg, warmup_epochs=cfg.warmup_steps / 121)  # VOC-LT: 500 iterations are 4.1 epochs
    assert lr_factor(resolved, 250 / 121, 8) == pytest.approx(1 / 3 + (2 / 3) * 0.5)
    assert lr_factor(resolved, 5.0, 8) == pytest.approx(0.1)
