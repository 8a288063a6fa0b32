"""SeDA (reconstructed from the abstract): the diffusion maths, the statistics, inference without text, stages, resume."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ltbench.runner import run
from ltbench.errors import LTBenchError
from ltbench.methods import SeDA
from ltbench.methods.stages import StagePlan
from ltbench.models.clip_text import TINY_TEXT
from ltbench.models.feature_diffusion import NoiseSchedule, VectorDenoiser
from ltbench.models.feature_stats import ClassCentres, FeatureNorm
from tests.helpers import REPO, load_benchmark_script, run_two_processes

COUNTS = [50, 20, 5, 1]
FACTS = dict(backbone="tiny_cnn", in_chans=1, num_classes=4, train_class_counts=COUNTS, class_names=list("abcd"))
TINY = dict(text_model=TINY_TEXT, width=16, depth=1, heads=2, sample_steps=4, num_train_timesteps=50)
QUIET = ["--trainer.enable_progress_bar", "false"]


def _model(**kw):
    torch.manual_seed(0)
    m = SeDA(**{**FACTS, **TINY, **kw})
    m.text_raw.copy_(torch.randn(4, m.text_raw.shape[1], generator=torch.Generator().manual_seed(1)))
    m.tnorm.fit(m.text_raw)
    m.entered_stage = len(m.stages()) - 1  # evaluate the SeDA path, as after fit
    return m.eval()


def _x(n=6, seed=0):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


# ---- the noise schedule ------------------------------------------------------------------------
@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_forward_noising_matches_the_closed_form_and_diffusers(schedule):
    from diffusers import DDPMScheduler

    sched = NoiseSchedule(200, schedule)
    betas = DDPMScheduler(num_train_timesteps=200, beta_schedule=schedule).betas.double()
    abar = torch.cumprod(1.0 - betas, 0)  # independent of the module's buffer
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(32, 8, generator=g), torch.randn(32, 8, generator=g)
    t = torch.randint(0, 200, (32,), generator=g)
    expected = abar[t].sqrt().unsqueeze(1) * x0.double() + (1 - abar[t]).sqrt().unsqueeze(1) * noise.double()
    got = sched.add_noise(x0, noise, t)
    assert torch.allclose(got.double(), expected, atol=1e-5)
    assert torch.allclose(got, sched.ddpm.add_noise(x0, noise, t), atol=1e-6)
    assert abar[0] > 0.99 and (schedule == "squaredcos_cap_v2" or abar[-1] < 0.9)


@pytest.mark.parametrize("prediction", ["epsilon", "sample"])
def test_denoising_loss_is_zero_for_a_perfect_predictor(prediction):
    sched = NoiseSchedule(100, prediction=prediction)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    t = torch.randint(0, 100, (16,), generator=g)
    x_t = sched.add_noise(x0, noise, t)
    perfect = noise if prediction == "epsilon" else x0
    assert torch.equal(sched.loss(perfect, x0, noise), torch.zeros(16))
    assert sched.loss(perfect + 0.1, x0, noise).min() > 0
    assert torch.allclose(sched.predict_x0(x_t, perfect, t), x0, atol=1e-4)


def test_ddim_sampler_is_seeded_alone_and_recovers_x0_from_a_perfect_predictor():
    sched = NoiseSchedule(100, prediction="sample")
    target = torch.randn(5, 8, generator=torch.Generator().manual_seed(3))
    out = sched.sample(lambda x, t: target, target.shape, 5, seed=0, device=torch.device("cpu"))
    assert torch.allclose(out, target, atol=1e-5)  # DDIM's last step lands on the predicted x0
    eps = NoiseSchedule(100, prediction="epsilon")
    noisy = lambda x, t: torch.sin(x) + t.float().unsqueeze(1) / 100  # noqa: E731
    torch.manual_seed(1)
    a = eps.sample(noisy, (4, 8), 5, seed=7, device=torch.device("cpu"))
    torch.manual_seed(2)
    b = eps.sample(noisy, (4, 8), 5, seed=7, device=torch.device("cpu"))
    c = eps.sample(noisy, (4, 8), 5, seed=8, device=torch.device("cpu"))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_denoiser_architectures_and_interactions_give_the_stated_shapes():
    x, t, conds = torch.randn(3, 12), torch.tensor([0, 5, 9]), [torch.randn(3, 7), torch.randn(3, 5)]
    for arch, inter in [("mlp", "add"), ("mlp", "xattn"), ("mlp", "gated"), ("transformer", "add")]:
        out, hidden = VectorDenoiser(12, [7, 5], width=16, depth=2, arch=arch, interaction=inter, heads=2, hidden_dim=7)(x, t, conds)
        assert out.shape == (3, 12) and hidden.shape == (3, 7)
    with pytest.raises(ValueError, match="interaction='film'"):
        VectorDenoiser(12, [7], width=16, interaction="film")


# ---- statistics --------------------------------------------------------------------------------
def _batches(multilabel=False):
    g = torch.Generator().manual_seed(0)
    out = []
    for n in (7, 5, 9):
        feats = torch.randn(n, 6, generator=g).double()
        if multilabel:
            labels = (torch.rand(n, 4, generator=g) < 0.4).double()
        else:
            labels = F.one_hot(torch.randint(0, 3, (n,), generator=g), 4).double()  # class 3 never appears
        out.append((feats, labels))
    return out


@pytest.mark.parametrize("multilabel", [False, True])
def test_running_centres_equal_an_independent_per_class_mean(multilabel):
    batches = _batches(multilabel)
    centres = ClassCentres(4, 6, momentum=None).double()
    for feats, labels in batches:
        centres.update(feats, labels)
    feats = torch.cat([f for f, _ in batches])
    labels = torch.cat([lab for _, lab in batches])
    for c in range(4):
        members = feats[labels[:, c] > 0]
        expected = members.mean(0) if len(members) else torch.zeros(6, dtype=torch.float64)
        assert torch.allclose(centres.centres[c], expected, atol=1e-12), c
        assert centres.counts[c] == len(members)


def test_centre_ema_follows_the_per_class_rule_and_leaves_absent_classes_untouched():
    m = 0.7
    centres = ClassCentres(4, 6, momentum=m).double()
    expected = {}
    for feats, labels in _batches():
        before = centres.centres.clone()
        centres.update(feats, labels)
        for c in range(4):
            members = feats[labels[:, c] > 0]
            if not len(members):
                assert torch.equal(centres.centres[c], before[c])
                continue
            expected[c] = members.mean(0) if c not in expected else m * expected[c] + (1 - m) * members.mean(0)
            assert torch.allclose(centres.centres[c], expected[c], atol=1e-12)
    assert torch.equal(centres.centres[3], torch.zeros(6, dtype=torch.float64))
    two_hot = torch.tensor([[1.0, 0.0, 1.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(centres.target(two_hot)[0], (centres.centres[0] + centres.centres[2]) / 2)


def test_feature_standardisation_uses_the_exact_statistics_of_all_updates():
    norm = FeatureNorm(6, "standardise").double()
    batches = _batches()
    x = torch.randn(4, 6, dtype=torch.float64)
    assert torch.allclose(norm(x), x / (1 + 1e-5) ** 0.5)  # identity before any update
    for feats, _ in batches:
        norm.update(feats)
    allf = torch.cat([f for f, _ in batches])
    assert torch.allclose(norm.mean, allf.mean(0), atol=1e-6)
    assert torch.allclose(norm.var, allf.var(0, unbiased=False), atol=1e-5)
    assert torch.allclose(FeatureNorm(6, "l2")(x).norm(dim=1), torch.ones(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="feature normalisation 'batch'"):
        FeatureNorm(6, "batch")


def _rank_batches(rank):
    """Different data per rank, uneven sizes; the multilabel rows exercise multi-hot counts."""
    return [b for i, b in enumerate(_batches(multilabel=True)) if i % 2 == rank or i == 2]


def _stats_worker(rank, world, port, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    centres, norm = ClassCentres(4, 6, momentum=0.5).double(), FeatureNorm(6, "standardise").double()
    for feats, labels in _rank_batches(rank):
        centres.update(feats, labels)
        norm.update(feats)
    out.put((rank, centres.centres.tolist(), centres.counts.tolist(), norm.mean.tolist(), norm.var.tolist()))
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_gloo_statistics_equal_the_global_batch():
    got = {r[0]: r[1:] for r in run_two_processes(_stats_worker, results=2)}
    assert got[0] == got[1]
    centres, norm = ClassCentres(4, 6, momentum=0.5).double(), FeatureNorm(6, "standardise").double()
    for (f0, l0), (f1, l1) in zip(_rank_batches(0), _rank_batches(1)):
        centres.update(torch.cat([f0, f1]), torch.cat([l0, l1]))
        norm.update(torch.cat([f0, f1]))
    for value, expected in zip(got[0], (centres.centres, centres.counts, norm.mean, norm.var)):
        assert torch.allclose(torch.tensor(value, dtype=torch.float64), expected, atol=1e-9)


# ---- the method --------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["full", "stage1", "projection"])
def test_inference_is_deterministic_and_independent_of_the_batch(variant):
    m = _model(variant=variant)
    x = _x(6)
    with torch.no_grad():
        torch.manual_seed(1)
        a = m.inference_logits(x)
        torch.manual_seed(2)
        b = m.inference_logits(x)
        part = m.inference_logits(x[:2])
    assert torch.equal(a, b)
    assert torch.allclose(part, a[:2], atol=1e-5)
    if variant != "projection":
        m.sample_seed = 5
        with torch.no_grad():
            assert not torch.allclose(m.inference_logits(x), a)


@pytest.mark.parametrize("classifier", ["linear", "cosine", "text_similarity"])
def test_no_ground_truth_text_is_read_at_test_time(classifier, monkeypatch):
    kw = dict(classifier=classifier, classifier_epochs=0) if classifier == "text_similarity" else dict(classifier=classifier)
    m = _model(**kw)
    assert not any("open_clip" in type(mod).__module__ for mod in m.modules())  # no text tower in the model
    x = _x(5)
    with torch.no_grad():
        before = m.inference_logits(x)

    def refuse(*args, **kwargs):
        raise AssertionError("a per-sample text target was read at test time")

    monkeypatch.setattr(m, "text_target", refuse)
    monkeypatch.setattr(m, "_labels", refuse)
    with torch.no_grad():
        assert torch.equal(m.inference_logits(x), before)
        if classifier != "text_similarity":  # the class text features do not enter the [v; t_hat] head at all
            m.text_raw.normal_()
            m.tnorm.fit(m.text_raw)
            assert torch.equal(m.inference_logits(x), before)


def test_stage_trainable_sets_are_as_stated():
    m = _model()
    plan = StagePlan(m.stages(), 30)
    assert [s.name for s in plan.stages] == ["backbone", "semantic_learner", "semantic_translator", "classifier"]
    expected = {"backbone": ("backbone", "pre_head"), "semantic_learner": ("learner",), "semantic_translator": ("translator",), "classifier": ("head",)}
    for stage in plan.stages:
        m.train()
        m._apply_stage_modes(stage)
        trained = {n.split(".")[0] for n, p in m.named_parameters() if p.requires_grad}
        assert trained == set(expected[stage.name]), stage.name
        assert all(not mod.training for n, mod in m.named_modules() if n and n.split(".")[0] not in expected[stage.name])
    assert [s.name for s in _model(variant="projection").stages()] == ["backbone", "projection", "classifier"]
    assert [s.name for s in _model(variant="stage1").stages()] == ["backbone", "semantic_learner", "classifier"]
    assert plan.stages[-1].reinit == ("head",)


def test_a_training_step_of_each_stage_trains_only_its_part_and_updates_centres_in_stage_1():
    m = _model()
    m.train()
    x, y = _x(8), torch.tensor([0, 0, 1, 1, 2, 0, 1, 2])
    plan = StagePlan(m.stages(), 30)
    m.plan = plan
    for i, stage in enumerate(plan.stages):
        m._apply_stage_modes(stage)
        m.entered_stage = i
        m.log = m.log_dict = lambda *a, **k: None
        m.zero_grad()
        m._stage_name = lambda name=stage.name: name
        loss = m.training_step((x, y, torch.arange(8)), 0)
        loss.backward()
        grads = {n.split(".")[0] for n, p in m.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        assert grads == set(stage.train), stage.name
        if stage.name == "semantic_learner":
            assert m.centres.counts.tolist() == [3.0, 3.0, 2.0, 0.0]


def test_bad_options_are_one_clear_error():
    with pytest.raises(LTBenchError, match="text_similarity .* classifier_epochs: 0"):
        SeDA(**FACTS, **TINY, classifier="text_similarity")
    with pytest.raises(LTBenchError, match="variant='both'"):
        SeDA(**FACTS, **TINY, variant="both")
    with pytest.raises(LTBenchError, match="unknown template set 'fancy'"):
        SeDA(**FACTS, **TINY, templates="fancy")


def test_multilabel_targets_average_the_positive_classes():
    m = _model(task="multilabel")
    labels = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    t = m.text_target(labels)
    assert torch.allclose(t[0], (m.class_text()[0] + m.class_text()[2]) / 2) and torch.equal(t[1], torch.zeros_like(t[1]))


# ---- end to end --------------------------------------------------------------------------------
SEDA_DIGITS = str(REPO / "configs" / "seda_digits_lt.yaml")
SHORT = ["--model.init_args.pretrain_epochs", "1", "--model.init_args.learner_epochs", "1", "--model.init_args.translator_epochs", "2",
         "--model.init_args.classifier_epochs", "1", "--trainer.max_epochs", "5"]  # fmt: skip


def _record(cli) -> dict:
    return json.loads(Path(cli.model.record_path).read_text())


@pytest.mark.slow
def test_a_run_resumed_mid_stage_2_finishes_bit_identical(tmp_path):
    cfg = ["--config", SEDA_DIGITS, *SHORT, *QUIET]
    straight = run(["fit", *cfg, "--run_dir", str(tmp_path / "s")])
    stop = ["--test_after_fit", "false", "--trainer.callbacks+=tests.helpers.StopAfterEpoch", "--trainer.callbacks.epoch", "2"]
    stopped = run(["fit", *cfg, "--run_dir", str(tmp_path / "r"), *stop])
    assert stopped.model.entered_stage == 2  # stopped after the first of two translator epochs
    resumed = run(["fit", *cfg, "--run_dir", str(tmp_path / "r"), "--ckpt_path", "last"])
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    rec = _record(straight)
    assert rec["metrics"] == _record(resumed)["metrics"]
    proto = rec["protocol"]
    assert proto["card"] == "SeDA (reconstructed from the abstract)" and proto["feature_norm"] == {"visual": "standardise", "text": "standardise"}
    assert proto["sampler"]["steps"] == 5 and [s["name"] for s in proto["stages"]] == ["backbone", "semantic_learner", "semantic_translator", "classifier"]


@pytest.mark.slow
def test_micro_batches_of_one_accumulated_step_draw_their_own_noise_and_timesteps(tmp_path, monkeypatch):
    drawn = []
    noise_of = SeDA._noise

    def recording(self, x0):
        noise, k = noise_of(self, x0)
        drawn.append((self._stage_name(), self.global_step, noise, k))
        return noise, k

    monkeypatch.setattr(SeDA, "_noise", recording)
    short = ["--model.init_args.pretrain_epochs", "1", "--model.init_args.learner_epochs", "1", "--model.init_args.translator_epochs", "1",
             "--model.init_args.classifier_epochs", "1", "--trainer.max_epochs", "4", "--trainer.limit_train_batches", "4",
             "--trainer.accumulate_grad_batches", "2", "--test_after_fit", "false"]  # fmt: skip
    run(["fit", "--config", SEDA_DIGITS, *short, *QUIET, "--run_dir", str(tmp_path)])
    assert [d[0] for d in drawn] == ["semantic_learner"] * 4 + ["semantic_translator"] * 4
    for a, b in zip(drawn[::2], drawn[1::2]):  # the two micro-batches of one optimiser step
        assert a[:2] == b[:2]
        assert not torch.equal(a[2], b[2]) and not torch.equal(a[3], b[3])


@pytest.mark.slow
def test_the_checkpoint_tests_without_the_text_tower(tmp_path, monkeypatch):
    cli = run(["fit", "--config", SEDA_DIGITS, *SHORT, *QUIET, "--run_dir", str(tmp_path)])
    ckpt = Path(cli.trainer.checkpoint_callback.last_model_path)
    import ltbench.methods.seda as seda

    monkeypatch.setattr(seda, "class_text_features", lambda *a, **k: (_ for _ in ()).throw(AssertionError("text tower built at test")))
    again = run(["test", "--config", SEDA_DIGITS, *SHORT, *QUIET, "--run_dir", str(tmp_path / "t"), "--ckpt_path", str(ckpt)])
    assert _record(again)["metrics"] == _record(cli)["metrics"]


@pytest.mark.slow
def test_stage_cost_benchmark_times_every_stage_and_inference():
    rows = load_benchmark_script("seda_stage_cost").measure(SEDA_DIGITS, batch_size=8, steps=2, warmup=1)
    assert [r["stage"] for r in rows] == ["backbone", "semantic_learner", "semantic_translator", "classifier", "inference"]
    assert all(r["ms_per_step"] > 0 for r in rows)


@pytest.mark.slow
def test_multilabel_digits_fit_trains_every_stage_and_reports_map(tmp_path):
    cli = run(["fit", "--config", SEDA_DIGITS, "--data", str(REPO / "configs" / "data" / "digits_ml_lt.yaml"), *SHORT, *QUIET,
               "--run_dir", str(tmp_path)])  # fmt: skip
    rec = _record(cli)
    assert rec["task"] == "multilabel" and 0.0 < rec["metrics"]["mAP"] <= 1.0
    assert cli.model.centres.counts.sum() > 0 and bool(cli.model.text_ready)


@pytest.mark.slow
def test_training_steps_of_every_stage_read_nothing_back_to_the_host(tmp_path):
    from ltbench.sync_check import NoSyncInSteps

    cli = run(["fit", "--config", SEDA_DIGITS, *SHORT, *QUIET, "--run_dir", str(tmp_path), "--test_after_fit", "false",
               "--trainer.callbacks+=ltbench.sync_check.NoSyncInSteps"])  # fmt: skip
    guard = next(cb for cb in cli.trainer.callbacks if isinstance(cb, NoSyncInSteps))
    assert guard.steps == cli.trainer.global_step > 0 and cli.model.entered_stage == 3
