"""MaPLe's coupled deep prompts: both towers against a reference written the way MaPLe's official code runs
them (sequence-first, a layer counter, prefix/suffix splicing), MaPLe's initialisation (its sentence at
depth 1 is the hand-crafted one, deeper couplings start as copies), the template-major batching CDC's
multimodal variant relies on, frozen towers, bad depths, and a Digits fit through the CLI."""

import json

import pytest
import torch
import torch.nn.functional as F

from ltbench.cli import run
from ltbench.errors import LTBenchError
from ltbench.methods import CDC, MaPLe
from ltbench.models.clip_prompt import TINY_CLIP
from ltbench.models.multimodal_prompts import MultimodalPrompts
from tests.helpers import REPO

NAMES = ["zero", "one", "two", "three", "four"]
TINY = dict(clip_model=TINY_CLIP, clip_pretrained=None, num_classes=5, class_names=NAMES, in_chans=1)
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def _maple(depth=2, seed=0, **kw):
    torch.manual_seed(seed)
    m = MaPLe(**TINY, prompt_depth=depth, **kw)
    with torch.no_grad():  # move every prompt away from its init, so a wrong splice shows
        for p in m.prompts.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.1)
    return m


# ---- a reference in the official code's own shape ---------------------------------------------------------
def _reference_text(m: MaPLe, names) -> torch.Tensor:
    """MaPLe's TextEncoder: prompts + positions, LND, block i > 0 splices compound_prompts_text[i - 1] between
    x[:1] and x[1 + n_ctx:], final norm, EOT feature @ text_projection."""
    clip, text = m.clip, m.clip.clip.text
    ctx, deeper = m.prompts.context[0], m.prompts.deep_text[0]
    n_ctx = ctx.shape[0]
    tokens = clip.tokenizer([f"a photo of a {n}." for n in names])  # MaPLe's prompt: ctx_init + " " + name + "."
    eot = tokens.argmax(-1)
    emb = text.token_embedding(tokens)
    x = torch.cat([emb[:, :1], ctx.expand(len(names), -1, -1), emb[:, 1 + n_ctx :]], dim=1)
    x = (x + text.positional_embedding).permute(1, 0, 2)
    counter = 0
    for i, block in enumerate(text.transformer.resblocks):
        if i > 0 and counter < deeper.shape[0]:
            x = torch.cat([x[:1], deeper[counter].unsqueeze(1).expand(-1, x.shape[1], -1), x[1 + n_ctx :]], dim=0)
            counter += 1
        x = block(x.permute(1, 0, 2), attn_mask=text.attn_mask).permute(1, 0, 2)
    x = text.ln_final(x.permute(1, 0, 2))
    return x[torch.arange(len(names)), eot] @ text.text_projection


def _reference_image(m: MaPLe, images: torch.Tensor) -> torch.Tensor:
    """MaPLe's VisionTransformer_MaPLe: conv1, class token, positions, then shared_ctx = proj(ctx) appended
    before ln_pre; block i > 0 replaces the last n_ctx tokens by compound_prompt_projections[i - 1](deeper
    text prompt i - 1); ln_post of the class token @ proj."""
    v, p = m.clip.clip.visual, m.prompts
    w, b = p.coupling_weight[0], p.coupling_bias[0]
    shared = F.linear(p.context[0], w[0], b[0])
    deeper = [F.linear(p.deep_text[0, i], w[i + 1], b[i + 1]) for i in range(p.deep_text.shape[1])]
    x = v.conv1(images)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    x = torch.cat([v.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1]), x], dim=1) + v.positional_embedding
    x = v.ln_pre(torch.cat([x, shared.expand(x.shape[0], -1, -1)], dim=1)).permute(1, 0, 2)
    n_ctx, counter = shared.shape[0], 0
    for i, block in enumerate(v.transformer.resblocks):
        if i > 0 and counter < len(deeper):
            x = torch.cat([x[: x.shape[0] - n_ctx], deeper[counter].unsqueeze(1).expand(-1, x.shape[1], -1)], dim=0)
            counter += 1
        x = block(x.permute(1, 0, 2)).permute(1, 0, 2)
    return v.ln_post(x.permute(1, 0, 2)[:, 0]) @ v.proj


def _tiny_variant(monkeypatch, name, change):
    import open_clip

    from ltbench.models.clip_text import register_configs

    register_configs()
    cfg = json.loads(json.dumps(open_clip.get_model_config(TINY_CLIP)))
    change(cfg)
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, name, cfg)
    return name


@pytest.fixture
def tiny3(monkeypatch):
    """A 3-layer tiny CLIP, so depth 2 leaves one layer without prompts and depth 3 prompts every layer."""
    return _tiny_variant(monkeypatch, "ltbench-tiny-clip-3", lambda c: c["vision_cfg"].update(layers=3) or c["text_cfg"].update(layers=3))


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_both_towers_match_the_official_codes_way_of_running_them(tiny3, depth):
    torch.manual_seed(0)
    m = MaPLe(**{**TINY, "clip_model": tiny3}, prompt_depth=depth).eval()
    with torch.no_grad():
        for p in m.prompts.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.1)
    images = torch.rand(3, 3, *m.clip.image_size)
    with torch.no_grad():
        text = m.clip.encode_with_context(m.prompts.context, NAMES, m.sentences, deep=m.prompts.deep_text)[0]
        assert torch.allclose(text, _reference_text(m, NAMES), atol=1e-5)
        image = m.clip.encode_image_with_prompts(images, m.prompts.vision_prompts(), fitted=True)[0]
        assert torch.allclose(image, _reference_image(m, images), atol=1e-5)
        logits = m(images)
        ref = m.logit_scale * F.normalize(_reference_image(m, images), dim=-1) @ F.normalize(_reference_text(m, NAMES), dim=-1).T
        assert torch.allclose(logits, ref, atol=1e-4)


def test_the_deeper_prompts_change_what_they_reach_and_nothing_at_depth_one(tiny3):
    torch.manual_seed(0)
    m = MaPLe(**{**TINY, "clip_model": tiny3}, prompt_depth=3).eval()
    x = torch.rand(2, 3, *m.clip.image_size)
    with torch.no_grad():
        before = m.template_image_features(x, fitted=True), m.template_text()
        m.prompts.deep_text[:, 1].add_(1.0)  # layer 2's text prompts, hence also its vision prompts
        m.train().eval()  # drop the evaluation text cache
        after = m.template_image_features(x, fitted=True), m.template_text()
    assert not torch.allclose(before[0], after[0]) and not torch.allclose(before[1], after[1])


def test_at_depth_one_and_at_init_the_text_is_the_hand_crafted_sentence():
    """MaPLe's init: "a photo" is learned, "of a" stays a fixed word of the sentence, so at depth 1 the
    class embeddings start as CLIP's own encoding of "a photo of a {name}."."""
    torch.manual_seed(0)
    m = MaPLe(**TINY, prompt_depth=1).eval()
    assert m.sentences == ("of a {}.",)
    with torch.no_grad():
        theirs = m.clip.clip.encode_text(m.clip.tokenizer([f"a photo of a {n}." for n in NAMES]))
    assert torch.allclose(m.template_text()[0], F.normalize(theirs, dim=-1), atol=1e-6)


def test_initialisation_follows_the_official_code():
    torch.manual_seed(0)
    p = MultimodalPrompts(torch.zeros(2, 2, 64), depth=4, vision_width=32)
    w, b = p.coupling_weight, p.coupling_bias
    assert w.shape == (2, 4, 32, 64) and p.deep_text.shape == (2, 3, 2, 64) and p.vision_prompts().shape == (2, 4, 2, 32)
    for s in range(2):  # deeper couplings: clones of one Linear; layer 0's its own
        assert all(torch.equal(w[s, 1], w[s, j]) and torch.equal(b[s, 1], b[s, j]) for j in (2, 3))
        assert not torch.equal(w[s, 0], w[s, 1])
    assert not torch.equal(w[0, 0], w[1, 0])  # each set draws its own
    assert w.abs().max() <= 1 / 8 and 0.015 < float(p.deep_text.detach().std()) < 0.025  # U(+-1/sqrt(64)); N(0, 0.02)


def test_coupling_ties_the_vision_prompts_to_the_text_and_none_unties_them():
    """MaPLe: a loss on the image side alone reaches the text prompts through the couplings; Independent V-L
    Prompting (coupling none): free vision prompts, N(0, 0.02), and the image side reaches no text prompt."""
    x = torch.rand(3, 1, 8, 8)
    for coupling, reaches_text in (("linear", True), ("none", False)):
        m = _maple(coupling=coupling)
        m.template_image_features(x).sum().backward()
        grad = m.prompts.deep_text.grad
        assert (grad is not None and grad.abs().sum() > 0) == reaches_text
    torch.manual_seed(0)
    free = MultimodalPrompts(torch.zeros(1, 2, 64), depth=3, vision_width=32, coupling="none")
    assert free.vision_prompts().shape == (1, 3, 2, 32) and 0.015 < float(free.vision.detach().std()) < 0.025
    assert not hasattr(free, "coupling_weight")
    with pytest.raises(LTBenchError, match="coupling='tied'"):
        MultimodalPrompts(torch.zeros(1, 2, 64), depth=3, vision_width=32, coupling="tied")


def test_contexts_longer_than_the_init_words_use_coops_init():
    torch.manual_seed(0)
    m = MaPLe(**TINY, prompt_depth=1, n_ctx=4, context_init="a origami {}.")
    assert m.sentences == ("{}.",) and m.prompts.context.shape == (1, 4, m.clip.width)


def test_towers_frozen_and_every_prompt_trains():
    m = _maple()
    m.train()
    before = {k: v.clone() for k, v in m.clip.clip.state_dict().items()}
    loss = F.cross_entropy(m(torch.rand(4, 1, 8, 8)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is None for p in m.clip.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.prompts.parameters())
    assert all(torch.equal(before[k], v) for k, v in m.clip.clip.state_dict().items())
    assert not any(k.startswith("clip.clip.") for k in m.state_dict())


def test_bad_depths_and_towers_fail_in_one_line(monkeypatch):
    with pytest.raises(LTBenchError, match=r"prompt_depth=3; .* 2 layers per tower, so expected 1..2"):
        MaPLe(**TINY, prompt_depth=3)
    with pytest.raises(LTBenchError, match="prompt_depth=0"):
        MaPLe(**TINY, prompt_depth=0)
    with pytest.raises(LTBenchError, match="need open_clip's VisionTransformer image tower, not ModifiedResNet"):
        resnet = _tiny_variant(monkeypatch, "ltbench-tiny-clip-rn", lambda c: c["vision_cfg"].update(layers=[1, 1, 1, 1], width=8, image_size=32))
        MaPLe(**{**TINY, "clip_model": resnet}, prompt_depth=1)


# ---- CDC's multimodal variant --------------------------------------------------------------------------------
def test_cdc_maple_scores_each_view_under_its_own_templates_prompts():
    torch.manual_seed(0)
    m = CDC(**TINY, prompt_style="maple", n_ctx=2, prompt_depth=2)
    assert m.prompts.num_sets == 4 and len(m.sentences) == 4 and m.contexts is None
    views = torch.rand(4, 3, 3, *m.clip.image_size)
    vision = m.prompts.vision_prompts()
    together = m.clip.encode_image_with_prompts(views, vision, fitted=True)
    for t in range(4):
        alone = m.clip.encode_image_with_prompts(views[t], vision[t : t + 1], fitted=True)[0]
        assert torch.allclose(together[t], alone, atol=1e-5)
    shared = m.clip.encode_image_with_prompts(views[0], vision, fitted=True)
    assert torch.allclose(shared, m.clip.encode_image_with_prompts(views[0].expand(4, -1, -1, -1, -1), vision, fitted=True), atol=1e-6)
    text = m.template_text()
    for t in range(4):  # template t's sentence keeps its own init words
        own = m.clip.encode_with_context(m.prompts.context[t : t + 1], NAMES, m.sentences[t : t + 1], deep=m.prompts.deep_text[t : t + 1])
        assert torch.allclose(text[t], F.normalize(own[0], dim=-1), atol=1e-5)
    out = m(torch.rand(3, 1, 8, 8))
    assert out["logits"].shape == (4, 3, 5) and out["image"].shape == (4, 3, m.clip.embed_dim)
    m.training_loss(out, torch.tensor([0, 1, 2])).backward()
    assert all(p.grad is not None for p in m.prompts.parameters())
    m.eval()
    assert m.inference_outputs(torch.rand(2, 1, 8, 8))["scores"].shape == (2, 5)


def test_cdc_maple_consistency_teacher_is_zero_shot():
    """t0_pred's teacher is t0's zero-shot prediction: image features without the learned vision prompts."""
    torch.manual_seed(0)
    m = CDC(**TINY, prompt_style="maple", n_ctx=2, prompt_depth=2, consistency="t0_pred", augmentation="none")
    x = torch.rand(3, 1, 8, 8)
    out = m(x)
    assert torch.allclose(out["zero_shot_image"][0], m.image_features(x), atol=1e-6)
    assert not torch.allclose(out["image"][0], m.image_features(x), atol=1e-3)  # the students do see their prompts
    m.training_loss(out, torch.tensor([0, 1, 2])).backward()
    coop = CDC(**TINY, consistency="t0_pred", augmentation="none")
    assert "zero_shot_image" not in coop(x)  # unprompted towers: the student's features are the teacher's


def test_logits_stay_float32_under_autocast():
    m = _maple().eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = m(torch.rand(2, 1, 8, 8))
    assert logits.dtype == torch.float32


# ---- through the CLI -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_maple_fits_on_digits_base_to_new_and_records_its_prompts(tmp_path):
    cli = run(["fit", "--config", str(REPO / "configs" / "maple_digits_b2n.yaml"), "--run_dir", str(tmp_path), "--trainer.max_epochs", "1",
               "--model.init_args.clip_pretrained", "null", *QUIET])  # fmt: skip
    rec = json.loads(cli.model.record_path.read_text())
    assert rec["method"] == "MaPLe" and {"base", "new", "hm"} <= set(rec["metrics"])
    p = rec["protocol"]
    assert "depth 2" in p["prompts"] and p["sentence"] == "<ctx> <ctx> of a {}."
    assert p["trainable_params"] == sum(t.numel() for t in cli.model.prompts.parameters())
    ckpt = torch.load(next(tmp_path.rglob("last.ckpt")), weights_only=True)["state_dict"]
    assert set(ckpt) == {"prompts.context", "prompts.deep_text", "prompts.coupling_weight", "prompts.coupling_bias"}
