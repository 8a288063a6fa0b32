"""CDC and its baselines: Dempster fusion against hand computation and its algebra, opinions, the trusted
CE against its formula, prompted text encoding through open_clip's own tower, frozen towers, per-template
views made in one tower call, the base-to-new protocol (no mixing, reproducible K shots), checkpoints
without the towers, and CLI runs (zero-shot test-only, CDC fit) that write Base/New/HM and uncertainty."""

import json

import numpy as np
import pytest
import torch
from scipy.special import digamma, gammaln

from ltbench.cli import main, run
from ltbench.data import BaseToNew, DigitsLT
from ltbench.data.base_to_new import harmonic_mean, kshot_indices
from ltbench.errors import LTBenchError
from ltbench.losses import dirichlet_kl_to_uniform, trusted_cross_entropy
from ltbench.methods import CDC, CoOp, CrossEntropy, ZeroShotCLIP
from ltbench.metrics import UncertaintyAccuracy
from ltbench.models.clip_prompt import TINY_CLIP, FrozenCLIP
from ltbench.models.device_augment import AUGMENT_SETS, random_views
from ltbench.models.evidential import Opinion, combine, evidence, fuse, opinion_from_evidence
from tests.helpers import REPO

NAMES = ["zero", "one", "two", "three", "four"]
TINY = dict(clip_model=TINY_CLIP, clip_pretrained=None, num_classes=5, class_names=NAMES, in_chans=1)
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
RANDOM_TOWER = ["--model.init_args.clip_pretrained", "null"]  # plumbing checks need no pre-trained tower


def _cdc(**kw):
    torch.manual_seed(0)
    return CDC(**{**TINY, **kw})


def _op(b, u):
    return Opinion(torch.tensor(b, dtype=torch.float64), torch.tensor(u, dtype=torch.float64))


def _random_opinions(m, b=3, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return opinion_from_evidence(torch.rand(m, b, k, generator=g, dtype=torch.float64) * 5)


# ---- Dempster's rule ---------------------------------------------------------------------------------
def test_fusion_equals_a_hand_computation():
    a, b = _op([0.5, 0.2], 0.3), _op([0.1, 0.6], 0.3)
    out = combine(a, b)
    # C = 0.5 * 0.6 + 0.2 * 0.1 = 0.32; b_0 = (0.05 + 0.15 + 0.03) / 0.68; b_1 = (0.12 + 0.06 + 0.18) / 0.68; u = 0.09 / 0.68
    assert torch.allclose(out.belief, torch.tensor([0.23, 0.36], dtype=torch.float64) / 0.68)
    assert torch.allclose(out.uncertainty, torch.tensor(0.09 / 0.68, dtype=torch.float64))


def test_fusion_is_commutative_and_associative():
    ops = _random_opinions(3)
    a, b, c = (Opinion(ops.belief[i], ops.uncertainty[i]) for i in range(3))
    ab, ba = combine(a, b), combine(b, a)
    assert torch.allclose(ab.belief, ba.belief) and torch.allclose(ab.uncertainty, ba.uncertainty)
    left, right = combine(combine(a, b), c), combine(a, combine(b, c))
    assert torch.allclose(left.belief, right.belief, atol=1e-12) and torch.allclose(left.uncertainty, right.uncertainty, atol=1e-12)
    folded = fuse(ops)
    assert torch.allclose(folded.belief, left.belief) and torch.allclose(folded.uncertainty, left.uncertainty)


def test_fusion_of_one_opinion_is_that_opinion():
    ops = _random_opinions(1)
    out = fuse(ops)
    assert torch.equal(out.belief, ops.belief[0]) and torch.equal(out.uncertainty, ops.uncertainty[0])


def test_fusion_runs_in_float32_and_clamps_total_conflict():
    a = Opinion(torch.tensor([1.0, 0.0], dtype=torch.bfloat16), torch.tensor(0.0, dtype=torch.bfloat16))
    b = Opinion(torch.tensor([0.0, 1.0], dtype=torch.bfloat16), torch.tensor(0.0, dtype=torch.bfloat16))
    out = combine(a, b)  # C = 1: the clamp keeps it finite
    assert out.belief.dtype == torch.float32 and torch.isfinite(out.belief).all()


@pytest.mark.parametrize("fn", ["softplus", "exp", "relu"])
def test_belief_and_uncertainty_sum_to_one_with_u_in_0_1(fn):
    logits = torch.tensor([[-300.0, 0.0, 5.0, 300.0], [0.0, 0.0, 0.0, 0.0]])
    op = opinion_from_evidence(evidence(logits, fn, temperature=1.0, clamp=10.0))
    assert torch.isfinite(op.belief).all()
    assert torch.allclose(op.belief.sum(-1) + op.uncertainty, torch.ones(2))
    assert ((op.uncertainty > 0) & (op.uncertainty <= 1)).all()
    fused = fuse(opinion_from_evidence(evidence(torch.randn(4, 6, 4) * 50, fn)))
    assert torch.allclose(fused.belief.sum(-1) + fused.uncertainty, torch.ones(6), atol=1e-5)
    assert ((fused.uncertainty > 0) & (fused.uncertainty <= 1)).all()
    assert torch.allclose(Opinion(*op).alpha() - 1, evidence(logits, fn, 1.0, 10.0), rtol=1e-4, atol=1e-3)


def test_unknown_evidence_function_is_refused():
    with pytest.raises(ValueError, match="softplus, exp or relu"):
        evidence(torch.zeros(2), "sigmoid")


# ---- trusted cross-entropy ---------------------------------------------------------------------------
def test_trusted_ce_equals_its_formula():
    alpha = np.array([[2.0, 5.0, 1.5], [1.0, 1.2, 9.0]])
    y = np.array([1, 0])
    lam = 0.3
    want = []
    for a, t in zip(alpha, y):
        s = a.sum()
        ce = digamma(s) - digamma(a[t])
        at = a.copy()
        at[t] = 1.0
        st, k = at.sum(), len(at)
        kl = gammaln(st) - gammaln(k) - gammaln(at).sum() + ((at - 1) * (digamma(at) - digamma(st))).sum()
        want.append(ce + lam * kl)
    got = trusted_cross_entropy(torch.tensor(alpha), torch.tensor(y), lam)
    assert np.allclose(got.numpy(), want)


def test_trusted_ce_kl_is_zero_without_non_target_evidence():
    alpha = torch.tensor([[1.0, 7.0, 1.0]])
    y = torch.tensor([1])
    assert torch.allclose(trusted_cross_entropy(alpha, y, 1.0), trusted_cross_entropy(alpha, y, 0.0))
    assert float(dirichlet_kl_to_uniform(torch.ones(1, 3))) == pytest.approx(0.0, abs=1e-6)
    assert float(trusted_cross_entropy(torch.tensor([[1.0, 1.0, 9.0]]), torch.tensor([1]), 1.0)) > float(
        trusted_cross_entropy(torch.tensor([[1.0, 1.0, 9.0]]), torch.tensor([1]), 0.0)
    )


# ---- the CLIP service ----------------------------------------------------------------------------------
def test_prompted_encoding_goes_through_open_clips_own_tower():
    """Contexts equal to the embeddings of "a photo of a" give open_clip's own encode_text of the full sentence."""
    m = _cdc()
    clip = m.clip
    ctx = clip.context_from_template("a photo of a {}.", 4).unsqueeze(0)
    ours = clip.encode_with_context(ctx, NAMES)[0]
    tokens = clip.tokenizer([f"a photo of a {n}." for n in NAMES])
    with torch.no_grad():
        theirs = clip.clip.encode_text(tokens)
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert torch.allclose(m.t0_text(), torch.nn.functional.normalize(theirs, dim=-1), atol=1e-5)


def test_towers_get_no_gradient_stay_in_eval_and_do_not_change():
    m = _cdc()
    m.train()
    assert not m.clip.clip.training and all(not mod.training for mod in m.clip.clip.modules())
    before = {k: v.clone() for k, v in m.clip.clip.state_dict().items()}
    ctx0 = m.contexts.detach().clone()
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1.0)
    x, y = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 4, 0])
    for _ in range(2):
        opt.zero_grad()
        loss = m.training_loss(m(x), y)
        loss.backward()
        opt.step()
    assert all(p.grad is None and not p.requires_grad for p in m.clip.parameters())
    assert all(torch.equal(before[k], v) for k, v in m.clip.clip.state_dict().items())
    assert not torch.equal(m.contexts.detach(), ctx0)


def test_templates_start_from_different_hand_crafted_templates():
    m = _cdc()
    ctx = m.contexts.detach()
    assert ctx.shape == (4, 4, m.clip.width)
    assert all(not torch.allclose(ctx[i], ctx[j]) for i in range(4) for j in range(i + 1, 4))


# ---- per-template views -------------------------------------------------------------------------------
def test_views_differ_and_the_image_tower_runs_once_per_step():
    m = _cdc()
    calls = []
    visual = m.clip.clip.visual
    original = visual.forward
    visual.forward = lambda x: calls.append(x.shape[0]) or original(x)
    x = torch.randn(3, 1, 8, 8)
    out = m(x)
    assert calls == [4 * 3] and out["logits"].shape == (4, 3, 5)
    views = m.views(x).view(4, 3, 3, *m.clip.image_size)
    for b in range(3):
        for i in range(4):
            for j in range(i + 1, 4):
                assert not torch.allclose(views[i, b], views[j, b])
    calls.clear()
    m.eval()
    m.inference_outputs(x)
    assert calls == [3]  # evaluation: every template scores the one plain view


def test_random_views_give_each_sample_its_own_draw():
    x = torch.rand(1, 3, 8, 8).expand(5, -1, -1, -1)  # five copies of one image
    torch.manual_seed(0)
    v = random_views(x, 2, (16, 16), AUGMENT_SETS["aug2"])
    assert v.shape == (10, 3, 16, 16)
    assert all(not torch.allclose(v[i], v[j]) for i in range(10) for j in range(i + 1, 10))
    torch.manual_seed(0)
    assert torch.equal(v, random_views(x, 2, (16, 16), AUGMENT_SETS["aug2"]))


# ---- inference and the record's uncertainty ---------------------------------------------------------------
def test_prediction_is_the_fused_belief_argmax_with_its_uncertainty():
    m = _cdc().eval()
    x = torch.randn(4, 1, 8, 8)
    out = m.inference_outputs(x)
    logits = m.cosine_logits(m.image_features(x), m.template_text())
    fused = fuse(opinion_from_evidence(evidence(logits, "softplus")))
    assert torch.equal(out["scores"].argmax(-1), fused.belief.argmax(-1))
    assert torch.allclose(out["uncertainty"], fused.uncertainty)
    assert torch.allclose(out["scores"].sum(-1), torch.ones(4))


def test_uncertainty_accuracy_bins():
    metric = UncertaintyAccuracy(bins=2)
    metric.update(torch.tensor([0.1, 0.2, 0.9, 0.8]), torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 0, 0]), torch.arange(4))
    r = metric.compute()
    assert r["bin_count"].tolist() == [2, 2] and r["bin_acc"].tolist() == [1.0, 0.5]
    assert float(r["mean_u"]) == pytest.approx(0.5)


def test_baselines_zero_shot_has_nothing_to_train_and_coop_one_template():
    torch.manual_seed(0)
    zs = ZeroShotCLIP(**TINY)
    assert not any(p.requires_grad for p in zs.parameters() if not any(p is q for q in zs.clip.parameters()))
    assert sum(p.numel() for p in zs.parameters() if p.requires_grad) == 0
    coop = CoOp(**TINY, n_ctx=4)
    assert coop.contexts.shape == (1, 4, coop.clip.width)
    assert coop(torch.randn(2, 1, 8, 8)).shape == (2, 5)


def test_checkpoints_hold_prompts_not_towers():
    m = _cdc()
    state = m.state_dict()
    assert "contexts" in state and not any(k.startswith("clip.clip.") for k in state)
    other = _cdc()
    other.contexts.data.zero_()
    other.load_state_dict(state)  # strict: the towers come from the model itself
    assert torch.equal(other.contexts, m.contexts)


def test_closed_set_methods_refuse_other_classes():
    ce = CrossEntropy(backbone="tiny_cnn", num_classes=5, class_names=NAMES, in_chans=1)
    ce.use_class_sets([NAMES])
    with pytest.raises(LTBenchError, match="open-vocabulary method: ZeroShotCLIP, CoOp, CoCoOp, MaPLe, CDC\\)"):
        ce.use_class_sets([NAMES, ["five", "six"]])


def test_the_advice_lists_the_registered_open_vocabulary_methods(monkeypatch):
    import ltbench.methods as registry

    class PromptSRC(CoOp):
        pass

    monkeypatch.setattr(registry, "PromptSRC", PromptSRC, raising=False)
    monkeypatch.setattr(registry, "__all__", [*registry.__all__, "PromptSRC"])
    ce = CrossEntropy(backbone="tiny_cnn", num_classes=5, class_names=NAMES, in_chans=1)
    with pytest.raises(LTBenchError, match="method: ZeroShotCLIP, CoOp, CoCoOp, MaPLe, CDC, PromptSRC\\)"):
        ce.use_class_sets([NAMES, ["five", "six"]])


def test_class_sets_switch_text_embeddings():
    m = _cdc().eval()
    m.use_class_sets([NAMES, ["five", "six"]])
    m.activate_class_set(1)
    assert m.inference_outputs(torch.randn(2, 1, 8, 8))["scores"].shape == (2, 2)
    assert m.t0_text().shape[0] == 2
    m.activate_class_set(0)
    assert m.inference_outputs(torch.randn(2, 1, 8, 8))["scores"].shape == (2, 5)


def test_bad_options_fail_in_one_line():
    with pytest.raises(LTBenchError, match="backbone must be null"):
        CDC(**TINY, backbone="tiny_cnn")
    with pytest.raises(LTBenchError, match="context_inits"):
        CDC(**TINY, num_templates=5)
    with pytest.raises(LTBenchError, match="augmentation"):
        CDC(**TINY, augmentation="aug9")


# ---- base-to-new ------------------------------------------------------------------------------------------
def _b2n(shots=16, seed=0):
    return BaseToNew(DigitsLT(imb_ratio=1), shots=shots, shot_seed=seed)


def test_base_and_new_never_mix_in_training():
    dm = _b2n()
    assert dm.class_names == ["0", "1", "2", "3", "4"] and dm.num_classes == 5
    assert dm.train_class_counts == [16] * 5
    inner_train = dm.data.train_targets[dm._train_positions]
    assert set(inner_train.tolist()) <= {0, 1, 2, 3, 4}
    ds = dm.dataset("train")
    assert sorted({int(ds[i][1]) for i in range(len(ds))}) == [0, 1, 2, 3, 4]
    sets = dm.test_class_sets()
    assert [s.name for s in sets] == ["base", "new"] and sets[1].class_names == ["5", "6", "7", "8", "9"]
    dm.setup("test")
    base, new = dm.test_dataloader()
    inner_test = dm.data.split_targets("test")
    assert set(inner_test[base.dataset.positions].tolist()) == {0, 1, 2, 3, 4}
    assert set(inner_test[new.dataset.positions].tolist()) == {5, 6, 7, 8, 9}
    assert set(new.dataset.labels.tolist()) == {0, 1, 2, 3, 4}  # labelled among the new classes
    assert set(dm.dataset("val").labels.tolist()) <= {0, 1, 2, 3, 4}


def test_kshot_draw_is_reproducible_from_the_seed():
    a, b, c = _b2n(seed=3)._train_positions, _b2n(seed=3)._train_positions, _b2n(seed=4)._train_positions
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    targets = np.array([0] * 5 + [1] * 20 + [2] * 3)
    pos = kshot_indices(targets, np.array([0, 1, 2]), 4, 0)
    assert np.bincount(targets[pos]).tolist() == [4, 4, 3]  # a class with fewer images than K gives all
    assert harmonic_mean(0.8, 0.6) == pytest.approx(2 * 0.48 / 1.4)


def test_base_to_new_halves_an_odd_class_count_like_coop():
    inner = DigitsLT(imb_ratio=1)
    inner.__dict__["class_names"] = [str(i) for i in range(7)]  # seven classes: CoOp's base = first ceil(7 / 2)
    base, new = BaseToNew(inner, shots=2)._classes
    assert base.tolist() == [0, 1, 2, 3] and new.tolist() == [4, 5, 6]


# ---- through the CLI ----------------------------------------------------------------------------------
def test_zero_shot_tests_without_training(tmp_path):
    main(["test", "--config", str(REPO / "configs" / "zeroshot_digits_b2n.yaml"), "--run_dir", str(tmp_path), *RANDOM_TOWER, *QUIET])
    rec = json.loads(next(tmp_path.rglob("record.json")).read_text())
    assert rec["method"] == "ZeroShotCLIP" and rec["protocol"]["eval_protocol"] == "base_to_new"
    assert set(rec["metrics"]) >= {"base", "new", "hm"}
    assert rec["metrics"]["hm"] == pytest.approx(harmonic_mean(rec["metrics"]["base"], rec["metrics"]["new"]))
    assert rec["num_test_samples"] == 500 and rec["protocol"]["trainable_params"] == 0
    assert rec["per_class_sets"]["new"]["class_names"] == ["5", "6", "7", "8", "9"]


@pytest.mark.slow
def test_cdc_fit_on_digits_base_to_new_records_uncertainty(tmp_path):
    cli = run(["fit", "--config", str(REPO / "configs" / "cdc_digits_b2n.yaml"), "--run_dir", str(tmp_path), "--trainer.max_epochs", "2", *RANDOM_TOWER, *QUIET])
    rec = json.loads(cli.model.record_path.read_text())
    assert rec["method"] == "CDC" and {"base", "new", "hm", "base_mean_u", "new_mean_u"} <= set(rec["metrics"])
    u = rec["uncertainty"]["base"]
    assert 0 < u["mean_u"] <= 1 and sum(u["bin_count"]) == 250
    assert rec["protocol"]["trainable_params"] == 4 * 4 * 64
    ckpt = torch.load(next(tmp_path.rglob("last.ckpt")), weights_only=True)
    assert not any(k.startswith("clip.clip.") for k in ckpt["state_dict"])


def test_few_shot_keeps_every_class_and_the_test_split():
    from ltbench.data import FewShot

    dm = FewShot(DigitsLT(imb_ratio=1), shots=4, shot_seed=0)
    assert dm.class_names == [str(d) for d in range(10)] and dm.train_class_counts == [4] * 10
    assert not hasattr(dm, "test_class_sets") and len(dm.dataset("test")) == 500
    assert dm.protocol()["eval_protocol"] == "few_shot" and dm.protocol()["dataset"] == "DigitsLT"


def test_a_protocol_names_its_dataset_from_its_own_attributes():
    """A FewShot subclass's record says its own protocol; the base does not branch on subclass names."""
    from ltbench.data import FewShot

    class Transductive(FewShot):
        protocol_name = "transductive"

    class Renamed(BaseToNew):
        protocol_name = "base_to_new_v2"

    assert Transductive(DigitsLT(imb_ratio=1), shots=2, shot_seed=0).protocol()["dataset"] == "DigitsLT"
    proto = Renamed(DigitsLT(imb_ratio=1), shots=2, shot_seed=0).protocol()
    assert proto["eval_protocol"] == "base_to_new_v2" and proto["dataset"] == "DigitsLT base-to-new"


def test_digits_pretrained_tower_is_cached_by_its_recipe(tmp_path, monkeypatch):
    """``ltbench-digits``: trained once from a seeded init on digits outside the test split, then loaded from the cache."""
    from ltbench.models import clip_digits

    monkeypatch.setenv("LTBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(clip_digits, "RECIPE", {**clip_digits.RECIPE, "steps": 2, "batch": 8})
    _, _, keep = clip_digits._pretraining_images()
    assert len(keep) == 1797 - 500  # the Digits test images are never seen
    torch.manual_seed(123)
    path = clip_digits.digits_clip_checkpoint(TINY_CLIP)
    after = torch.rand(1)
    torch.manual_seed(123)
    assert torch.equal(after, torch.rand(1))  # the caller's random stream is left as it was
    stamp = path.stat().st_mtime_ns
    assert clip_digits.digits_clip_checkpoint(TINY_CLIP) == path and path.stat().st_mtime_ns == stamp
    random = FrozenCLIP(TINY_CLIP, None)
    loaded = FrozenCLIP(TINY_CLIP, "ltbench-digits")
    assert not torch.equal(random.clip.visual.proj, loaded.clip.visual.proj)
    assert torch.equal(loaded.clip.visual.proj, torch.load(path, weights_only=True)["visual.proj"])
    assert loaded.weights_file == path.name and random.weights_file is None  # named in the run record


def test_predict_over_base_and_new_returns_scores_uncertainty_and_the_set(tmp_path):
    import lightning as L

    torch.manual_seed(0)
    dm = _b2n(shots=2)
    m = CDC(clip_model=TINY_CLIP, clip_pretrained=None, num_classes=dm.num_classes, class_names=dm.class_names, in_chans=1)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    base, new = trainer.predict(m, datamodule=dm)
    assert base[0]["scores"].shape[1] == 5 and new[0]["scores"].shape[1] == 5
    assert (base[0]["class_set"] == 0).all() and (new[0]["class_set"] == 1).all()
    assert ((base[0]["uncertainty"] > 0) & (base[0]["uncertainty"] <= 1)).all()
    assert m.active_classes == dm.class_names  # back on the training classes afterwards


def test_cocoop_prompts_depend_on_the_image_and_train_the_meta_net():
    from ltbench.methods import CoCoOp

    torch.manual_seed(0)
    m = CoCoOp(**TINY, n_ctx=4)
    x = torch.randn(3, 1, 8, 8)
    logits = m(x)
    assert logits.shape == (3, 5)
    logits.logsumexp(-1).sum().backward()
    assert m.contexts.grad is not None and all(p.grad is not None for p in m.meta_net.parameters())
    assert all(p.grad is None for p in m.clip.parameters())
    with torch.no_grad():  # a zero meta-net shift gives CoOp's prompts for every image
        for p in m.meta_net[-1].parameters():
            p.zero_()
        coop_text = torch.nn.functional.normalize(m.clip.encode_with_context(m.contexts, NAMES)[0], dim=-1)
        assert torch.allclose(m(x), m.cosine_logits(m.image_features(x), coop_text), atol=1e-5)


@pytest.mark.slow
def test_prompts_trained_on_some_classes_test_on_another_dataset(tmp_path):
    """Cross-dataset: a checkpoint holds class-agnostic prompts, so `ltbench test` scores the target's own classes."""
    cfg = str(REPO / "configs" / "cdc_digits_b2n.yaml")
    run(["fit", "--config", cfg, "--run_dir", str(tmp_path), "--trainer.max_epochs", "1", "--test_after_fit", "false", *RANDOM_TOWER, *QUIET])
    ckpt = next(tmp_path.rglob("last.ckpt"))
    cli = run(["test", "--config", cfg, "--data", str(REPO / "configs" / "data" / "digits_lt.yaml"), "--ckpt_path", str(ckpt),
               "--run_dir", str(tmp_path / "xd"), *RANDOM_TOWER, *QUIET])  # fmt: skip
    rec = json.loads(cli.model.record_path.read_text())
    assert rec["dataset"] == "DigitsLT" and len(rec["per_class"]["class_names"]) == 10 and "acc" in rec["metrics"]
    trained = torch.load(ckpt, weights_only=True)["state_dict"]["contexts"]
    assert torch.equal(cli.model.contexts.detach(), trained)


@pytest.mark.slow
def test_cdc_resumed_after_its_first_epoch_ends_bit_identical(tmp_path):
    """CDC draws its per-template views from the global generator inside every step: a resumed epoch
    must make the same draws as the uninterrupted run (the base replays the loader's seed draw)."""
    from ltbench.runner import run

    cfg = ["--config", str(REPO / "configs" / "cdc_digits_lt.yaml"), "--trainer.max_epochs", "2", "--test_after_fit", "false",
           "--trainer.enable_progress_bar", "false", "--trainer.check_val_every_n_epoch", "1"]  # fmt: skip
    straight = run(["fit", *cfg, "--run_dir", str(tmp_path / "s")])
    run(["fit", *cfg, "--run_dir", str(tmp_path / "r"), "--trainer.callbacks+=tests.helpers.StopAfterEpoch", "--trainer.callbacks.epoch", "0"])
    resumed = run(["fit", *cfg, "--run_dir", str(tmp_path / "r"), "--ckpt_path", "last"])
    assert torch.equal(straight.model.contexts, resumed.model.contexts)
