"""TSCNet: the ViT driver, the confounder dictionary, CCIM, the Fourier view, the sampler, stages, resume."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.plugins.precision import Precision

from ltbench.data import DigitsLT
from ltbench.data.fourier import amplitude_mix, box_mask
from ltbench.data.samplers import LTSampler, class_index_lists, draw_epoch, effective_number_weights
from ltbench.errors import LTBenchError
from ltbench.methods import TSCNet
from ltbench.methods.tscnet import index_draws
from ltbench.models.ccim import CCIM
from ltbench.models.confounders import load_dictionary_file
from ltbench.models.heads import counterfactual_logits
from ltbench.models.vit_driver import attention_maps, attention_rollout, embed, pool, run_blocks
from tests.helpers import REPO

TINY_VIT = dict(img_size=8, patch_size=2, embed_dim=32, depth=4, num_heads=2)
QUIET = ["--trainer.enable_progress_bar", "false"]


def _model(**kw) -> TSCNet:
    args = dict(backbone="vit_tiny_patch16_224", backbone_kwargs=TINY_VIT, in_chans=1, num_classes=10, num_confounders=8)
    return TSCNet(**(args | kw))


def _fit_ready(m: TSCNet, dm: DigitsLT) -> TSCNet:
    """What on_fit_start needs of a trainer, without running one."""
    m._trainer = SimpleNamespace(datamodule=dm, precision_plugin=Precision(), is_global_zero=True, world_size=1)
    return m


@pytest.fixture(scope="module")
def digits():
    dm = DigitsLT()
    dm.setup("fit")
    return dm


# ---- patch-level intervention ----------------------------------------------------------------------
def test_appended_tokens_enter_each_block_and_never_leave_it():
    torch.manual_seed(0)
    m = _model().eval()
    m.dict_z.normal_()
    vit = m.backbone.model
    n = 1 + 16
    seen_in, seen_out = [], []

    def record(_m, i, o):
        seen_in.append(i[0].shape)
        seen_out.append(o)

    hooks = [b.register_forward_hook(record) for b in vit.blocks]
    x = torch.randn(3, 1, 8, 8)
    feat = m.features(x)
    m.ccim = None
    no_ccim = m.features(x)
    for h in hooks:
        h.remove()
    assert seen_in == [torch.Size([3, n + 10, 32])] * 8  # every block sees its own 10 dictionary tokens
    last = seen_out[-1]
    # the pooled feature is the mean of the last block's patch tokens, never of the appended ones
    assert torch.allclose(no_ccim, last[:, 1:n].mean(1), atol=1e-6)
    assert not torch.allclose(no_ccim, last[:, 1:].mean(1), atol=1e-3)
    assert feat.shape == no_ccim.shape == (3, 32)


def test_dictionary_tokens_are_drawn_per_block_and_sample_and_mapped_by_their_block():
    torch.manual_seed(0)
    m = _model().train()
    m.dict_z.normal_()
    rows = m._draws(5, torch.device("cpu"))
    assert rows.shape == (4, 5, 10) and rows.min() >= 0 and rows.max() < 8
    assert len({tuple(r.flatten().tolist()) for r in rows}) == 4  # independent draws per block
    got = m.token_proj[2](m.dict_z)[rows[2]]
    want = torch.stack([torch.stack([m.token_proj[2](m.dict_z[j]) for j in rows[2, b]]) for b in range(5)])
    assert torch.allclose(got, want, atol=1e-6)


def test_evaluation_draws_follow_the_sample_not_the_batch_and_training_draws_vary():
    torch.manual_seed(0)
    m = _model()
    m.dict_z.normal_()
    x = torch.randn(6, 1, 8, 8)
    index = torch.tensor([3, 10, 7, 0, 5, 123456])
    m.eval()
    m._eval_index = index
    full = m.inference_logits(x)
    m._eval_index = index[[4, 2, 0]]
    part = m.inference_logits(x[[4, 2, 0]])
    assert torch.allclose(full[[4, 2, 0]], part, atol=1e-5)  # other batch, same sample: same tokens
    rows = index_draws(torch.arange(20000), 4, 10, 8)
    assert rows.min() == 0 and rows.max() == 7
    freq = torch.bincount(rows.flatten(), minlength=8).float() / rows.numel()
    assert (freq - 1 / 8).abs().max() < 0.003  # uniform over the K rows
    assert not torch.equal(rows[0], rows[1]) and not torch.equal(rows[:, 0], rows[:, 1])
    m.train()
    assert not torch.equal(m.features(x), m.features(x))


def test_driver_without_extra_tokens_is_timms_own_forward():
    torch.manual_seed(0)
    m = _model().eval()
    vit = m.backbone.model
    x = torch.randn(2, 1, 8, 8)
    tokens = run_blocks(vit, embed(vit, x))
    assert torch.allclose(vit.norm(tokens), vit.forward_features(x), atol=1e-6)
    assert torch.allclose(pool(vit, tokens, "cls"), vit.forward_features(x)[:, 0], atol=1e-6)


def test_attention_maps_are_softmax_qk_and_rollout_multiplies_them():
    torch.manual_seed(0)
    vit = _model().eval().backbone.model
    x = torch.randn(2, 1, 8, 8)
    fused = [b.attn.fused_attn for b in vit.blocks]
    with attention_maps(vit) as maps, torch.no_grad():
        tokens = embed(vit, x)
        inputs = []
        for b in vit.blocks:
            inputs.append(tokens)
            tokens = b(tokens)
    assert [b.attn.fused_attn for b in vit.blocks] == fused and len(maps) == 4
    b0, t0 = vit.blocks[0], inputs[0]
    qkv = F.linear(b0.norm1(t0), b0.attn.qkv.weight, b0.attn.qkv.bias).reshape(2, 17, 3, 2, 16).permute(2, 0, 3, 1, 4)
    want = (qkv[0] @ qkv[1].transpose(-2, -1) / math.sqrt(16)).softmax(-1)
    assert torch.allclose(maps[0], want, atol=1e-5)
    eye = torch.eye(17)
    joint = attention_rollout(maps[:2])
    assert torch.allclose(joint, (maps[1].mean(1) + eye) @ (maps[0].mean(1) + eye), atol=1e-5)
    with attention_maps(vit, mean_heads=True) as means, torch.no_grad():
        run_blocks(vit, embed(vit, x))
    assert torch.allclose(attention_rollout(means), attention_rollout(maps), atol=1e-5)


# ---- CCIM --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["additive", "dot"])
def test_ccim_equals_the_formula(strategy):
    torch.manual_seed(0)
    ccim = CCIM(12, 12, hidden=6, strategy=strategy)
    f, z, prior = torch.randn(3, 12), torch.randn(5, 12), torch.rand(5)
    wq, wk = ccim.query.weight, ccim.key.weight
    want = torch.zeros(3, 12)
    for b in range(3):
        if strategy == "additive":
            e = torch.stack([(ccim.score.weight[0] * torch.tanh(wq @ f[b] + wk @ z[j])).sum() for j in range(5)])
        else:
            e = torch.stack([(wq @ f[b]) @ (wk @ z[j]) / math.sqrt(12) for j in range(5)])
        a = torch.exp(e - e.max()) / torch.exp(e - e.max()).sum()
        want[b] = sum(a[j] * prior[j] * z[j] for j in range(5))
    assert torch.allclose(ccim(f, z, prior), want, atol=1e-5)
    assert torch.equal(ccim(f, z, torch.zeros(5)), torch.zeros(3, 12))  # P(z) = 0: nothing is added


# ---- the Fourier counterfactual ----------------------------------------------------------------------
@pytest.mark.parametrize("size,box", [(8, "official"), (32, "symmetric"), (9, "symmetric")])
def test_fourier_view_keeps_phase_and_changes_only_the_central_amplitude(size, box):
    torch.manual_seed(0)
    x, partner = torch.rand(4, 3, size, size, dtype=torch.float64), torch.rand(4, 3, size, size, dtype=torch.float64)
    assert torch.allclose(amplitude_mix(x, partner, torch.zeros(4), box=box), x, atol=1e-10)  # lambda = 0: the input
    lam = torch.rand(4, dtype=torch.float64)  # < 1, so every mixed amplitude stays >= 0
    out = amplitude_mix(x, partner, lam, box=box)
    fx, fo = torch.fft.fft2(x), torch.fft.fft2(out)
    # the output's spectrum is the input's phase times a non-negative amplitude
    rot = fo * fx.conj()
    assert torch.allclose(rot.imag, torch.zeros_like(rot.imag), atol=1e-8) and (rot.real > -1e-8).all()
    mask = torch.fft.ifftshift(box_mask(size, size, 0.9, box), dim=(-2, -1))
    assert torch.allclose(fo.abs()[..., ~mask], fx.abs()[..., ~mask], atol=1e-8)  # outside the box unchanged
    want = (1 - lam.view(-1, 1, 1, 1)) * fx.abs() + lam.view(-1, 1, 1, 1) * torch.fft.fft2(partner).abs()
    assert torch.allclose(fo.abs()[..., mask], want[..., mask], atol=1e-8)


def test_official_box_is_the_released_one():
    m = box_mask(32, 32, 0.9, "official")[:, 16]
    assert m.nonzero().flatten().tolist() == list(range(1, 31))  # h_crop 30 from h//2 - 15: frequencies -15..+14
    assert box_mask(224, 224, 0.9)[:, 112].sum() == int(224 * math.sqrt(0.9)) == 212


def test_fourier_view_on_a_normalised_batch_equals_mixing_the_raw_image():
    """Un-normalising first makes the DC term mix as on the raw pixels; then clip and uint8 truncation."""
    torch.manual_seed(0)
    m = _model(fourier_max=1.2)
    mean, std = torch.tensor([0.4]).view(1, 1, 1, 1), torch.tensor([0.2]).view(1, 1, 1, 1)
    m._pixel_stats = lambda x: (mean, std)
    raw = torch.randint(0, 256, (6, 1, 8, 8)).float() / 255
    y = torch.zeros(6, dtype=torch.long)
    torch.manual_seed(1)
    got = m.fourier_view((raw - mean) / std, y)
    torch.manual_seed(1)
    partner = (torch.arange(6) + torch.randint(1, 6, (6,))) % 6
    lam = torch.rand(6) * 1.2
    mixed = torch.floor(amplitude_mix(raw, raw[partner], lam).clamp(0, 1) * 255) / 255
    assert (partner != torch.arange(6)).all()
    assert torch.allclose(got, (mixed - mean) / std, atol=1e-5)


def test_curriculum_bounds_lambda_per_class_and_moves_the_level_by_counterfactual_accuracy():
    torch.manual_seed(0)
    m = _model(curriculum=True, fourier_max=1.2, curriculum_step=0.05)
    m._pixel_stats = lambda x: (torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1))
    m._stage_index = lambda: 1
    raw = torch.randint(0, 256, (4, 1, 8, 8)).float() / 255
    y = torch.tensor([0, 1, 2, 3])
    view = m.fourier_view(raw, y)  # every level 0: lambda = 0, the image itself up to uint8 truncation
    assert (view - raw).abs().max() <= 1 / 255 + 1e-6
    m.curriculum_level[2] = 23
    m._cf_correct[:4] = torch.tensor([6.0, 1.0, 9.0, 0.0])
    m._cf_seen[:4] = torch.tensor([10.0, 10.0, 9.0, 0.0])
    m.on_train_epoch_end()
    # >= 0.6 correct: up one level; below: down (not under 0); at the top (1.2 / 0.05 = 24) it stays; unseen: unchanged
    assert m.curriculum_level[:4].tolist() == [1, 0, 24, 0] and m._cf_seen.sum() == 0
    m.on_train_epoch_end()
    assert m.curriculum_level[:4].tolist() == [1, 0, 24, 0]


# ---- the stage-2 sampler -----------------------------------------------------------------------------
def test_effective_number_sampler_frequencies_converge_to_the_weights():
    counts = np.array([5000, 500, 50, 5])
    w = effective_number_weights(counts)
    assert np.allclose(w, (1 - 0.9999) / (1 - 0.9999 ** counts))
    targets = np.repeat(np.arange(4), counts)
    drawn = draw_epoch("effective_number", class_index_lists(targets, 4), 200_000, np.random.default_rng(0))
    freq = np.bincount(targets[drawn], minlength=4) / len(drawn)
    want = counts * w / (counts * w).sum()
    assert np.abs(freq - want).max() < 0.005 and want[0] > 0.29 and want[3] < 0.24  # not uniform, not instance
    s = LTSampler(targets, 4, schedule=[(0, "instance"), (2, "effective_number")], seed=3)
    s.set_epoch(2)
    first = list(s)
    assert first == list(s) and len(set(first)) < len(first)  # seeded by (seed, epoch); with replacement


# ---- stages ------------------------------------------------------------------------------------------
def test_both_stages_train_exactly_the_stated_parameters():
    m = _model()
    stages = m.stages()
    assert [s.name for s in stages] == ["hcrl", "clbc"] and stages[0].sampler is None and stages[1].sampler == "effective_number"
    want = {n for n, _ in m.named_parameters() if n.startswith(("token_proj.", "ccim.", "head.", "backbone.model.blocks.2.", "backbone.model.blocks.3."))}
    assert any(n.startswith("head.") for n in want) and any(n.startswith("ccim.") for n in want)  # the classifier trains
    for stage in stages:
        m.train()
        m._apply_stage_modes(stage)
        assert {n for n, p in m.named_parameters() if p.requires_grad} == want
        assert m.backbone.model.blocks[3].training and m.backbone.model.blocks[3].mlp.training  # trained blocks train
        assert not m.backbone.model.blocks[0].training and not m.backbone.model.patch_embed.training
    assert [s.name for s in _model(clbc_epochs=0, hcrl_epochs=None).stages()] == ["hcrl"]
    every = {n for n, _ in _model(trainable_blocks=-1).named_parameters()}
    m = _model(trainable_blocks=-1)
    m._apply_stage_modes(m.stages()[0])
    assert {n for n, p in m.named_parameters() if p.requires_grad} == every


def test_a_training_step_moves_only_the_trainable_set():
    torch.manual_seed(0)
    m = _model()
    m.dict_z.normal_()
    m.dict_prior.fill_(1 / 8)
    m.train()
    m._apply_stage_modes(m.stages()[0])
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    F.cross_entropy(m(torch.randn(6, 1, 8, 8)), torch.arange(6)).backward()
    opt.step()
    moved = {n for n, p in m.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {n for n, p in m.named_parameters() if p.requires_grad}


def test_inference_is_tde_or_plain():
    torch.manual_seed(0)
    m = _model().eval()
    m.embed_mean.normal_()
    x = torch.randn(3, 1, 8, 8)
    f = m.features(x)
    assert torch.allclose(m.inference_logits(x), counterfactual_logits(m.head, f, m.embed_mean, 0.4)[0], atol=1e-6)
    m.inference = "plain"
    assert torch.allclose(m.inference_logits(x), m.head(f), atol=1e-6)


# ---- the dictionary ----------------------------------------------------------------------------------
def test_dictionary_is_built_cached_reused_and_rebuilt_when_k_changes(tmp_path, digits, monkeypatch):
    builds = []
    original = TSCNet.build_dictionary
    monkeypatch.setattr(TSCNet, "build_dictionary", lambda self: builds.append(1) or original(self))

    def fresh(**kw):
        torch.manual_seed(0)
        return _fit_ready(_model(cache_dir=str(tmp_path), **kw), digits)

    a = fresh()
    a.on_fit_start()
    assert a.dictionary_info["source"] == "built" and len(builds) == 1 and bool(a.dict_ready)
    assert Path(a.dictionary_info["path"]).is_file() and a.dict_z.abs().sum() > 0
    assert torch.isclose(a.dict_prior.sum(), torch.tensor(1.0)) and (a.dict_prior > 0).all()
    b = fresh()
    b.on_fit_start()
    assert b.dictionary_info["source"] == "cache" and len(builds) == 1
    assert torch.equal(a.dict_z, b.dict_z) and torch.equal(a.dict_prior, b.dict_prior)
    c = fresh(num_confounders=4)
    c.on_fit_start()
    assert c.dictionary_info["source"] == "built" and len(builds) == 2 and c.dict_z.shape == (4, 32)
    assert c.dictionary_info["path"] != a.dictionary_info["path"]
    torch.manual_seed(1)  # other stage-0 weights: another key
    d = _fit_ready(_model(cache_dir=str(tmp_path)), digits)
    d.on_fit_start()
    assert d.dictionary_info["source"] == "built" and len(builds) == 3
    Path(a.dictionary_info["path"]).write_bytes(b"garbage")  # a damaged cache entry is rebuilt
    with pytest.warns(UserWarning, match="unreadable"):
        e = fresh()
        e.on_fit_start()
    assert e.dictionary_info["source"] == "built" and torch.equal(e.dict_z, a.dict_z)
    assert not list(tmp_path.rglob(".*.tmp"))


def test_the_dictionary_pass_over_cpu_augmented_data_is_a_function_of_the_seed_only(cifar_dm):
    """CIFAR-LT through the loader (device_cache: false) draws random crops on the host: the pass keys them by
    position, so 0 and 2 workers, and any earlier draws, give the same dictionary; the run's stream is untouched."""
    built = []
    for workers, earlier in ((0, 0), (2, 0), (0, 5)):
        dm = cifar_dm(num_workers=workers, device_cache=False, batch_size=256)
        torch.manual_seed(0)
        m = _fit_ready(_model(backbone_kwargs=dict(TINY_VIT, img_size=32, patch_size=8), in_chans=3, num_classes=dm.num_classes), dm)
        torch.manual_seed(earlier)
        before = torch.get_rng_state()
        built.append(m.build_dictionary())
        assert torch.equal(torch.get_rng_state(), before)
    (z, prior, n), *others = built
    assert n == dm.num_train and z.abs().sum() > 0
    for z2, prior2, n2 in others:
        assert n2 == n and torch.equal(z2, z) and torch.equal(prior2, prior)


def test_the_dictionary_pass_over_device_decoded_lists_is_keyed_by_its_seed_not_the_runs(tmp_path, monkeypatch):
    """``decode: device``: the pass collates file bytes as training does, crops from generators of the pass's
    seed (not the run's), and leaves the epoch's generators as a run without the pass would find them."""
    import warnings

    from ltbench.data.lists import ImageListLT
    from ltbench.data.synthetic import write_fake_image_list

    root = write_fake_image_list(tmp_path, [6, 4, 3], shapes=((40, 48), (48, 36)))
    vit = dict(TINY_VIT, img_size=16, patch_size=4)
    built, states = [], []
    warnings.filterwarnings("ignore", message=".*matches no published")  # pytest restores the filters after the test
    for run_seed in ("0", "1"):
        monkeypatch.setenv("PL_GLOBAL_SEED", run_seed)
        dm = ImageListLT(root=str(root), train_list="ImageNet_LT_train.txt", image_size=16, batch_size=4, pin_memory=False, decode="device")
        torch.manual_seed(0)
        m = _fit_ready(_model(backbone_kwargs=vit, in_chans=3, num_classes=3, num_confounders=2), dm)
        built.append(m.build_dictionary())
        fresh = ImageListLT(root=str(root), train_list="ImageNet_LT_train.txt", image_size=16, decode="device")
        states.append([g.get_state() for g in (*dm._jpeg_generators(torch.device("cpu")), *fresh._jpeg_generators(torch.device("cpu")))])
    (z, prior, n), (z1, prior1, n1) = built
    assert n == n1 == 13 and torch.equal(z, z1) and torch.equal(prior, prior1)
    for s in states:  # after the pass, epoch 0 draws what it draws in a run that read the dictionary from its cache
        assert torch.equal(s[0], s[2]) and torch.equal(s[1], s[3])
    assert not torch.equal(states[0][0], states[1][0])  # the epochs' draws do follow the run seed


def test_a_user_dictionary_file_is_loaded_and_a_bad_one_is_one_clear_error(tmp_path, digits):
    z, prior = torch.randn(8, 32), torch.rand(8)
    torch.save({"Z": z, "prior": prior}, tmp_path / "d.pt")
    m = _fit_ready(_model(dictionary=str(tmp_path / "d.pt")), digits)
    m.on_fit_start()
    assert torch.equal(m.dict_z, z) and torch.equal(m.dict_prior, prior) and m.dictionary_info["source"] == "file"
    np.save(tmp_path / "z.npy", z.numpy())
    np.save(tmp_path / "p.npy", prior.numpy()[:, None])  # the released (K, 1) prior column
    zz, pp = load_dictionary_file(tmp_path / "z.npy", tmp_path / "p.npy", 8, 32)
    assert torch.equal(zz, z) and torch.equal(pp, prior)
    assert torch.allclose(load_dictionary_file(tmp_path / "z.npy", None, 8, 32)[1], torch.full((8,), 1 / 8))
    np.save(tmp_path / "bad.npy", np.zeros((5, 3), np.float32))
    with pytest.raises(LTBenchError, match=r"bad\.npy: dictionary of shape \(5, 3\).*expected Z \(8, 32\).*model\.init_args\.num_confounders=8"):
        _fit_ready(_model(dictionary=str(tmp_path / "bad.npy")), digits).on_fit_start()
    (tmp_path / "corrupt.pt").write_bytes(b"not a torch file")
    with pytest.raises(LTBenchError, match=r"corrupt\.pt.*expected Z \(8, 32\)"):
        load_dictionary_file(tmp_path / "corrupt.pt", None, 8, 32)
    torch.save({"Z": z}, tmp_path / "nokey.pt")
    with pytest.raises(LTBenchError, match=r"nokey\.pt: expected a dict with keys 'Z' \(8, 32\) and 'prior'"):
        load_dictionary_file(tmp_path / "nokey.pt", None, 8, 32)
    with pytest.raises(LTBenchError, match="missing.npy does not exist"):
        load_dictionary_file(tmp_path / "missing.npy", None, 8, 32)


def test_too_few_background_images_names_tscnets_settings_not_the_model_module(tmp_path, digits, monkeypatch):
    """The k-means builder knows no method's config keys; TSCNet's error names its own."""
    import ltbench.methods.tscnet as tscnet

    with pytest.raises(LTBenchError) as generic:
        tscnet.kmeans_dictionary(torch.zeros(3, 32), 8)
    assert "init_args" not in str(generic.value) and "num_confounders" not in str(generic.value)
    monkeypatch.setattr(tscnet, "background_features", lambda model, batches, threshold: torch.zeros(3, 32))
    m = _fit_ready(_model(cache_dir=str(tmp_path)), digits)
    with pytest.raises(LTBenchError, match=r"3 training images have background patches, fewer than num_confounders=8; "
                       r"lower model\.init_args\.num_confounders or raise model\.init_args\.bg_threshold"):
        m.on_fit_start()


def test_a_cnn_backbone_is_refused_in_one_line():
    with pytest.raises(LTBenchError, match="not a timm VisionTransformer"):
        TSCNet(backbone="tiny_cnn", in_chans=1, num_classes=10)


# ---- end to end --------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("stop_epoch,stage", [(0, 0), (2, 1)], ids=["stop-in-stage-1", "stop-in-stage-2"])
def test_interrupted_run_resumes_bit_identically_across_the_stage_boundary(tmp_path, stop_epoch, stage):
    from ltbench.cli import run

    cfg = ["--config", str(REPO / "configs" / "tscnet_digits_lt.yaml"), "--model.init_args.hcrl_epochs", "2", "--model.init_args.clbc_epochs", "2"]
    cfg += ["--trainer.max_epochs", "4", "--model.init_args.cache_dir", str(tmp_path / "cache"), *QUIET]
    straight = run(["fit", *cfg, "--run_dir", str(tmp_path / "s")])
    stopped = run(["fit", *cfg, "--run_dir", str(tmp_path / "r"), "--test_after_fit", "false", "--trainer.callbacks+=tests.helpers.StopAfterEpoch", "--trainer.callbacks.epoch", str(stop_epoch)])
    assert stopped.trainer.current_epoch == stop_epoch + 1 and stopped.model.entered_stage == stage
    resumed = run(["fit", *cfg, "--run_dir", str(tmp_path / "r"), "--ckpt_path", "last"])
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    a, b = (json.loads(Path(c.model.record_path).read_text()) for c in (straight, resumed))
    assert a["metrics"] == b["metrics"]
    proto = a["protocol"]
    assert proto["dictionary"]["source"] in ("built", "cache") and proto["num_confounders"] == 16
    assert b["protocol"]["dictionary"]["restored_from_checkpoint"] and proto["inference"] == "TDE, alpha=0.4"
    assert [s["name"] for s in proto["stages"]] == ["hcrl", "clbc"] and proto["stages"][1]["sampler"] == "effective_number"


@pytest.mark.slow
def test_two_process_fit_builds_one_dictionary_and_reports_what_one_process_reports(tmp_path):
    """Rank 0 builds and broadcasts the dictionary; evaluation draws follow the sample, so 2 processes
    and 1 process give the same test numbers from the same checkpoint."""
    import os
    import subprocess
    import sys

    from ltbench.cli import run

    common = ["--config", str(REPO / "configs" / "tscnet_digits_lt.yaml"), "--model.init_args.hcrl_epochs", "1", "--model.init_args.clbc_epochs", "1"]
    common += ["--trainer.max_epochs", "2", "--model.init_args.cache_dir", str(tmp_path / "cache"), "--run_dir", str(tmp_path), *QUIET, "--data.init_args.eval_batch_size", "37"]
    proc = subprocess.run(
        [sys.executable, "-m", "ltbench.cli", "fit", *common, "--config", str(REPO / "configs" / "strategy" / "ddp_cpu.yaml"), "--version", "two"],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    two_dir = tmp_path / "TSCNet-DigitsLT" / "two"
    two = json.loads((two_dir / "record.json").read_text())
    assert two["throughput"]["devices"] == 2 and two["protocol"]["dictionary"]["source"] == "built"
    assert len(list((tmp_path / "cache").rglob("*.pt"))) == 1
    one_cli = run(["test", *common, "--ckpt_path", str(two_dir / "checkpoints" / "last.ckpt"), "--version", "one"])
    one = json.loads(Path(one_cli.model.record_path).read_text())
    assert two["num_test_samples"] == one["num_test_samples"] == 500
    assert two["metrics"] == pytest.approx(one["metrics"], abs=1e-7)


def test_speed_script_times_both_stages_with_and_without_each_intervention(monkeypatch):
    import importlib.util

    monkeypatch.chdir(REPO)
    spec = importlib.util.spec_from_file_location("tscnet_speed", REPO / "benchmarks" / "tscnet_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(["--config", "configs/tscnet_digits_lt.yaml", "--batch-size", "8", "--steps", "1", "--warmup", "1", "--device", "cpu"])
    assert [(r["variant"], r["stage"]) for r in rows] == [(v, s) for v in module.VARIANTS for s in ("hcrl", "clbc")]
    assert all(r["images_per_s"] > 0 and r["input"] == "1x8x8" for r in rows)
    trainable = {r["variant"]: r["trainable_m"] for r in rows}
    assert trainable["neither"] < trainable["no CCIM"] < trainable["both interventions"]
    assert trainable["neither"] < trainable["no patch-level tokens"] < trainable["both interventions"]
