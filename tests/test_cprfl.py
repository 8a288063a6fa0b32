"""CPRFL: shapes of the released configuration, the score, equivariance, the two gradient paths, the
frozen text tower, weights from files, the EMA as the evaluated model, and a CLI run that learns."""

import copy
import json

import lightning as L
import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import TextTransformer
from sklearn.metrics import average_precision_score

from ltbench.errors import LTBenchError
from ltbench.losses import asymmetric_loss
from ltbench.methods import CPRFL
from ltbench.methods.cprfl import ModelEMA
from ltbench.models.clip_text import TINY_TEXT, CLIPTextEncoder, class_prompts, register_configs
from ltbench.models.prompt_heads import InteractionBlock, PromptInit
from tests.helpers import REPO

NAMES = ["zero", "traffic_light", "two", "three"]
TINY = dict(
    backbone="tiny_cnn", in_chans=1, num_classes=4, class_names=NAMES, task="multilabel",
    text_model=TINY_TEXT, dim=64, heads=4, dim_head=16, mlp_dim=64,
)  # fmt: skip
CPRFL_DIGITS_ML = str(REPO / "configs" / "cprfl_digits_ml_lt.yaml")
QUIET = ["--trainer.enable_progress_bar", "false"]


def _model(**kw):
    torch.manual_seed(0)
    return CPRFL(**{**TINY, **kw})


def _x(n=3, seed=0, size=16):
    return torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def _y(n=3, c=4, seed=1):
    y = (torch.rand(n, c, generator=torch.Generator().manual_seed(seed)) < 0.4).float()
    y[:, 0] = 1.0
    return y


# ---- the released configuration ---------------------------------------------------------------------
@pytest.mark.slow
def test_released_configuration_shapes_at_448_px():
    """ResNet-101 at 448 px: 196 tokens x 2048; RN50 text 1024-d; PI 1024 -> 1024 -> 2048; VSI over 196 + C."""
    names = ["aeroplane", "bicycle", "diningtable", "pottedplant", "tvmonitor"]
    torch.manual_seed(0)
    m = CPRFL(backbone="resnet101", pretrained=False, num_classes=5, class_names=names, task="multilabel").eval()
    assert m.head.text_encoder.output_dim == 1024
    assert [l.out_features for l in m.head.prompt_init if isinstance(l, torch.nn.Linear)] == [1024, 2048]
    assert m.head.interaction.attn.to_qkv.weight.shape == (3 * 8 * 512, 2048)
    assert m.head.interaction.attn.to_qkv.bias is None
    assert m.head.interaction.ff[1].out_features == 2048
    seen = {}
    m.head.interaction.register_forward_hook(lambda mod, inp, out: seen.update(seq=inp[0].shape))
    with torch.no_grad():
        parts = m.forward_parts(torch.rand(1, 3, 448, 448))
    assert parts["tokens"].shape == (1, 196, 2048)
    assert parts["prompts"].shape == (5, 2048)
    assert seen["seq"] == (1, 196 + 5, 2048)
    assert parts["features"].shape == (1, 5, 2048)
    assert parts["logits"].shape == (1, 5)  # never squeezed to (C,) at B = 1


def test_text_embeddings_are_not_normalised_and_prompts_follow_the_template():
    enc = CLIPTextEncoder(NAMES, TINY_TEXT)
    assert enc.prompts[1] == "a photo of a traffic light."
    assert class_prompts(["hair_drier"]) == ["a photo of a hair drier."]
    emb = enc()
    assert emb.shape == (4, 64) and emb.dtype == torch.float32
    assert not torch.allclose(emb.norm(dim=-1), torch.ones(4))


def test_cut_context_gives_the_full_context_eot_features():
    enc = CLIPTextEncoder(NAMES, TINY_TEXT)
    full = open_clip.get_tokenizer(TINY_TEXT)(enc.prompts)
    assert enc._tokens.shape[1] < full.shape[1]
    short = enc.encode()
    enc.text.attn_mask = enc.text.build_causal_mask()
    with torch.no_grad():
        assert torch.allclose(enc.text(full), short, atol=1e-5)


# ---- the score and its symmetry ------------------------------------------------------------------
def test_score_is_the_output_token_dotted_with_its_own_input_prompt():
    m = _model().eval()
    with torch.no_grad():
        parts = m.forward_parts(_x())
        tokens, prompts = parts["tokens"], parts["prompts"]
        seq = torch.cat([tokens, prompts.expand(3, -1, -1)], dim=1)
        v = m.head.interaction(seq)[:, -4:]
        expected = (v * prompts.unsqueeze(0)).sum(-1)
    assert torch.allclose(parts["logits"], expected, atol=1e-5)
    assert parts["logits"].dtype == torch.float32


def test_permuting_the_classes_permutes_the_outputs():
    """No positional embedding: the class order is a relabelling, nothing more."""
    perm = [2, 0, 3, 1]
    a = _model().eval()
    b = _model(class_names=[NAMES[i] for i in perm]).eval()
    b.load_state_dict(a.state_dict())
    x = _x()
    with torch.no_grad():
        pa, pb = a.forward_parts(x), b.forward_parts(x)
    assert torch.allclose(pb["prompts"], pa["prompts"][perm], atol=1e-5)
    assert torch.allclose(pb["logits"], pa["logits"][:, perm], atol=1e-5)
    assert not torch.allclose(pa["logits"], pa["logits"][:, perm], atol=1e-3)


def test_permuting_the_visual_tokens_leaves_the_scores_unchanged():
    m = _model().eval()
    x = _x()
    with torch.no_grad():
        tokens = m.head.visual_proj(m.backbone.forward_features(x))
        prompts = m.head.prompts()
        shuffled = tokens[:, torch.randperm(tokens.shape[1], generator=torch.Generator().manual_seed(0))]
        out = [m.head.interaction(torch.cat([t, prompts.expand(3, -1, -1)], 1))[:, -4:] for t in (tokens, shuffled)]
    assert torch.allclose(out[0], out[1], atol=1e-5)


def _reference_block(block, x):
    """The released TF.py maths written out: einsum attention, no residuals."""
    attn, ff = block.attn, block.ff
    h = attn.heads
    q, k, v = attn.to_qkv(attn.norm(x)).chunk(3, dim=-1)
    q, k, v = (t.reshape(*t.shape[:2], h, -1).transpose(1, 2) for t in (q, k, v))
    dots = torch.einsum("bhid,bhjd->bhij", q, k) * q.shape[-1] ** -0.5
    out = torch.einsum("bhij,bhjd->bhid", dots.softmax(-1), v).transpose(1, 2).flatten(2)
    return ff(attn.to_out(out))


def test_interaction_block_matches_the_released_maths_and_the_residual_variant():
    torch.manual_seed(0)
    block = InteractionBlock(32, heads=4, dim_head=24, mlp_dim=48, dropout=0.1).eval()
    x = torch.randn(2, 9, 32)
    with torch.no_grad():
        assert torch.allclose(block(x), _reference_block(block, x), atol=1e-5)
        block.residual = True
        a = x + block.attn(x)
        assert torch.allclose(block(x), a + block.ff(a), atol=1e-5)


@pytest.mark.parametrize("residual", [False, True])
def test_interaction_at_the_last_positions_equals_the_full_block_sliced(residual):
    """CPRFL reads only the prompt positions: computing just those rows (their queries against every key)
    gives the full block's rows there, and the same gradients for every weight and input."""
    torch.manual_seed(0)
    block = InteractionBlock(32, heads=4, dim_head=24, mlp_dim=48, dropout=0.1, residual=residual).double().eval()
    x = torch.randn(2, 9, 32, dtype=torch.double, requires_grad=True)
    full, part = block(x)[:, -3:], block(x, last=3)
    assert part.shape == (2, 3, 32)
    torch.testing.assert_close(part, full, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(full)
    grads = [torch.autograd.grad((out * g).sum(), [x, *block.parameters()]) for out in (full, part)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_prompt_init_is_linear_gelu_linear_with_hidden_expand_times_dim():
    pi = PromptInit(1024, 2048, expand=0.5)
    kinds = [type(m).__name__ for m in pi]
    assert kinds == ["Linear", "GELU", "Linear"]
    assert (pi[0].in_features, pi[0].out_features, pi[2].out_features) == (1024, 1024, 2048)


# ---- dual-path back-propagation ------------------------------------------------------------------
def _prompt_grads(**flags):
    m = _model(**flags).double().eval()  # eval: dropout off, so the three runs see the same function
    captured = {}

    def keep(module, inputs, output):
        output.retain_grad()
        captured["P"] = output

    m.head.prompt_init.register_forward_hook(keep)
    m.training_loss(m(_x().double()), _y()).backward()
    backbone = torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel(), dtype=p.dtype) for p in m.backbone.parameters()])
    return captured["P"].grad, m.head.prompt_init[0].weight.grad, backbone


def test_each_switch_removes_exactly_its_path_from_the_prompt_gradient():
    full, full_pi, full_bb = _prompt_grads()
    cls_only, cls_pi, cls_bb = _prompt_grads(detach_feature_path=True)
    feat_only, feat_pi, feat_bb = _prompt_grads(detach_classifier_path=True)
    for g in (cls_only, feat_only):
        assert g.abs().sum() > 0 and not torch.allclose(g, full)
    assert torch.allclose(cls_only + feat_only, full, atol=1e-10)
    assert torch.allclose(cls_pi + feat_pi, full_pi, atol=1e-10)  # and through PI (and the text tower) alike
    assert torch.allclose(feat_bb, full_bb, atol=1e-10)  # the classifier path never reaches the backbone
    assert cls_bb.abs().sum() == 0  # as released: detaching V also stops the backbone's gradient


# ---- the text tower ---------------------------------------------------------------------------------
@pytest.fixture
def count_text_calls(monkeypatch):
    calls = []
    forward = TextTransformer.forward

    def counted(self, text):
        calls.append(tuple(text.shape))
        return forward(self, text)

    monkeypatch.setattr(TextTransformer, "forward", counted)
    return calls


def _train_steps(m, n=3):
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    m.train()
    for i in range(n):
        opt.zero_grad()
        m.training_loss(m(_x(seed=i)), _y(seed=i)).backward()
        opt.step()


def test_frozen_text_tower_runs_once_and_gets_no_gradient(count_text_calls):
    m = _model(freeze_text=True)
    assert len(count_text_calls) == 1
    before = copy.deepcopy(m.head.text_encoder.text.state_dict())
    cached = m.head.text_encoder().clone()
    _train_steps(m)
    m.eval()
    with torch.no_grad():
        m(_x())
    assert len(count_text_calls) == 1
    assert all(p.grad is None and not p.requires_grad for p in m.head.text_encoder.parameters())
    assert all(torch.equal(v, before[k]) for k, v in m.head.text_encoder.text.state_dict().items())
    assert torch.equal(m.head.text_encoder(), cached)
    assert m.head.prompt_init[0].weight.grad is not None


def test_frozen_embeddings_follow_loaded_weights(count_text_calls):
    m = _model(freeze_text=True)
    other = _model(freeze_text=True)
    with torch.no_grad():
        for p in other.head.text_encoder.parameters():
            p.add_(0.1)
    other.head.text_encoder.refresh()
    m.load_state_dict(other.state_dict())
    assert torch.allclose(m.head.text_encoder(), other.head.text_encoder(), atol=1e-6)
    assert not any(k.endswith("text_encoder.cache") for k in m.state_dict())


def test_trainable_text_tower_runs_every_step_and_learns(count_text_calls):
    m = _model()
    before = m.head.text_encoder.text.text_projection.detach().clone()
    _train_steps(m, n=3)
    assert len(count_text_calls) == 3
    assert not torch.equal(m.head.text_encoder.text.text_projection, before)


def test_text_state_stays_out_of_the_buffers_and_follows_to():
    """EMA over buffers must not see the causal mask (-inf -> NaN) or the integer tokens."""
    m = _model()
    names = [n for n, _ in m.named_buffers()]
    assert not any("text_encoder" in n for n in names)
    m.to(torch.float64)
    assert m.head.text_encoder._tokens.dtype == torch.long
    assert m.head.text_encoder.text.attn_mask.dtype == torch.float64
    assert torch.isfinite(m.head.text_encoder()).all()


# ---- pretrained weights -----------------------------------------------------------------------------
def test_missing_weights_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "RN50.pt"
    with pytest.raises(LTBenchError, match=str(missing)):
        CLIPTextEncoder(NAMES, TINY_TEXT, pretrained=str(missing))
    with pytest.raises(LTBenchError, match="openai"):  # an unknown tag lists the known ones
        CLIPTextEncoder(NAMES, "RN50", pretrained="not-a-tag")


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(LTBenchError, match="RN50"):
        CLIPTextEncoder(NAMES, "RN5O")


def test_tag_without_network_is_a_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("no internet")

    monkeypatch.setattr(open_clip.factory, "download_pretrained", offline)
    with pytest.raises(LTBenchError, match="local checkpoint file"):
        CLIPTextEncoder(NAMES, "RN50", pretrained="openai")


def _clip_checkpoint(seed=3):
    register_configs()
    torch.manual_seed(seed)
    clip = open_clip.create_model(TINY_TEXT, pretrained=None)  # the old (OpenAI) layout: text keys at the top
    return clip, clip.state_dict()


@pytest.mark.parametrize("layout", ["whole_clip", "text_only", "torchscript"])
def test_local_checkpoint_loads_offline(tmp_path, layout):
    clip, state = _clip_checkpoint()
    path = tmp_path / "clip.pt"
    if layout == "whole_clip":
        torch.save(state, path)
    elif layout == "text_only":
        torch.save({k: v for k, v in state.items() if not k.startswith(("visual", "logit"))}, path)
    else:
        torch.jit.save(torch.jit.script(clip), str(path))
    enc = CLIPTextEncoder(NAMES, TINY_TEXT, pretrained=str(path))
    assert torch.equal(enc.text.text_projection, state["text_projection"])
    assert torch.equal(enc.text.token_embedding.weight, state["token_embedding.weight"][enc.text.token_embedding.ids])
    with torch.no_grad():
        expected = clip.encode_text(open_clip.get_tokenizer(TINY_TEXT)(enc.prompts))
    assert torch.allclose(enc.encode(), expected, atol=1e-5)


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"text_projection": torch.zeros(3, 3), "token_embedding.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(LTBenchError, match="does not match"):
        CLIPTextEncoder(NAMES, TINY_TEXT, pretrained=str(path))


# ---- losses -----------------------------------------------------------------------------------------
def test_multilabel_loss_is_asl_and_single_label_loss_is_softmax_ce():
    m = _model()
    logits, y = torch.randn(5, 4), _y(5)
    assert torch.equal(m.training_loss(logits, y), asymmetric_loss(logits, y, 4.0, 0.0, 0.05))
    s = _model(task="multiclass")
    target = torch.tensor([0, 3, 1, 1, 2])
    assert torch.equal(s.training_loss(logits, target), F.cross_entropy(logits, target))
    assert torch.allclose(s.scores(logits).sum(-1), torch.ones(5))


def test_asl_with_large_negative_scores_costs_nothing():
    """CPRFL's scores are unbounded dot products; an easy negative (p <= 0.05) adds no loss and no gradient."""
    logits = torch.tensor([[8.0, -40.0, -3.0]], requires_grad=True)
    loss = asymmetric_loss(logits, torch.tensor([[1.0, 0.0, 0.0]]))
    loss.backward()
    assert logits.grad[0, 1] == 0 and logits.grad[0, 2] == 0  # sigmoid(-3) = 0.047 <= 0.05


# ---- EMA as the evaluated model -------------------------------------------------------------------
def test_ema_is_a_lightning_weight_averaging_callback():
    (cb,) = _model(ema_decay=0.9).configure_callbacks()
    assert isinstance(cb, ModelEMA) and isinstance(cb, L.pytorch.callbacks.WeightAveraging) and cb.decay == 0.9
    assert cb._use_buffers
    assert _model(ema_decay=None).configure_callbacks() == []
    with pytest.raises(ValueError, match="ema_decay"):
        _model(ema_decay=1.5)


class _Recorder(L.Callback):
    """Weights after every optimiser step (trainer callbacks run before the model's EMA callback)."""

    def __init__(self):
        self.weights, self.means = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.weights.append(pl_module.head.prompt_init[0].weight.detach().clone())
        self.means.append(pl_module.backbone.model.conv1.bn.running_mean.detach().clone())


def test_fit_ends_with_the_ema_weights_and_buffers(tmp_path):
    from ltbench.data import DigitsMLLT

    dm = DigitsMLLT(batch_size=32)
    m = CPRFL(**{**TINY, "num_classes": 10, "class_names": dm.class_names, "train_class_counts": dm.train_class_counts,
                 "ema_decay": 0.8, "optimizer": dict(name="adamw", lr=1e-2)})  # fmt: skip
    rec = _Recorder()
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=5, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[rec], default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(m, datamodule=dm)
    assert len(rec.weights) == 5
    for seq, final in ((rec.weights, m.head.prompt_init[0].weight), (rec.means, m.backbone.model.conv1.bn.running_mean)):
        ema = seq[0]
        for w in seq[1:]:
            ema = 0.8 * ema + 0.2 * w
        assert torch.allclose(final, ema, atol=1e-6)
        assert not torch.allclose(final, seq[-1], atol=1e-6)
    assert torch.isfinite(m.head.text_encoder()).all()


# ---- end to end ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_run_on_digits_ml_lt_beats_shuffled_scores(tmp_path):
    from ltbench.runner import run

    cli = run(["fit", "--config", CPRFL_DIGITS_ML, "--run_dir", str(tmp_path), *QUIET])
    record = cli.model.record_path
    assert record is not None and record.is_file()
    m, dm = cli.model.eval(), cli.datamodule
    scores, targets = [], []
    with torch.no_grad():
        for batch in dm.test_dataloader():
            x, y, _ = dm.on_after_batch_transfer(batch, 0)
            scores.append(m.scores(m.inference_logits(x)))
            targets.append(y)
    s, y = torch.cat(scores).numpy(), torch.cat(targets).numpy()
    shuffled = np.random.default_rng(0).permuted(s, axis=0)
    ap = np.mean([average_precision_score(y[:, c], s[:, c]) for c in range(y.shape[1])])
    chance = np.mean([average_precision_score(y[:, c], shuffled[:, c]) for c in range(y.shape[1])])
    rec = json.loads(record.read_text())
    assert rec["method"] == "CPRFL" and rec["protocol"]["evaluated_weights"].startswith("EMA")
    assert rec["metrics"]["mAP"] == pytest.approx(ap, abs=1e-6)  # exact AP: the record holds the EMA model just evaluated here
    assert chance < 0.3 and ap > chance + 0.2, (ap, chance)


def test_trainable_tower_keeps_only_the_prompt_rows_and_trains_exactly_as_the_full_vocabulary():
    """The tower reads only its class sentences: keeping their embedding rows gives the same features,
    and AdamW with weight decay moves those rows and every other weight as training the whole table does."""
    torch.manual_seed(0)
    enc = CLIPTextEncoder(NAMES, TINY_TEXT, trainable=True)
    full = copy.deepcopy(enc)
    full.text.token_embedding = torch.nn.Embedding(enc.text.token_embedding.num_embeddings, 64)
    full.text.token_embedding.weight.data[enc.text.token_embedding.ids] = enc.text.token_embedding.weight.detach()
    ids = enc.text.token_embedding.ids
    assert len(ids) < 40 and enc.text.token_embedding.weight.shape == (len(ids), 64)
    assert set(ids.tolist()) == set(enc._tokens.unique().tolist())
    assert torch.equal(enc.encode(), full.encode())
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1) for m in (enc, full)]
    target = torch.randn(len(NAMES), enc.output_dim)
    for _ in range(3):
        for m, opt in zip((enc, full), opts):
            opt.zero_grad()
            F.mse_loss(m.encode(), target).backward()
            opt.step()
    assert torch.equal(enc.encode(), full.encode())
    assert torch.equal(enc.text.token_embedding.weight, full.text.token_embedding.weight[ids])
    # a full-vocabulary checkpoint of the tower (an older run, the released layout) loads by its rows
    fresh = CLIPTextEncoder(NAMES, TINY_TEXT, trainable=True)
    fresh.load_state_dict(full.state_dict())
    assert torch.equal(fresh.encode(), full.encode())
    assert CLIPTextEncoder(NAMES, TINY_TEXT, trainable=False).text.token_embedding.weight.shape[0] == 49408  # frozen: cached, untouched


def test_a_whole_token_table_checkpoint_tests_through_the_cli_and_refuses_to_resume(tmp_path, capsys):
    """A checkpoint with the whole 49408-row table (an older run, the released layout): `test` reads its rows
    and scores as the prompt-rows run did; `fit --ckpt_path` says in one line why its optimiser state cannot go on."""
    from ltbench.cli import main
    from ltbench.runner import run

    cfg = ["--config", str(REPO / "configs" / "cprfl_digits_lt.yaml"), *QUIET]
    first = run(["fit", *cfg, "--run_dir", str(tmp_path / "a"), "--trainer.max_epochs", "1"])
    ckpt = torch.load(next((tmp_path / "a").rglob("last.ckpt")), weights_only=False)
    key = "head.text_encoder.text.token_embedding.weight"
    rows = ckpt["state_dict"][key]
    ids = first.model.head.text_encoder.text.token_embedding.ids
    full = torch.zeros(49408, rows.shape[1])
    full[ids] = rows
    ckpt["state_dict"][key] = full
    ckpt["state_dict"].pop(key.replace("weight", "_extra_state"))
    old = tmp_path / "whole_table.ckpt"
    torch.save(ckpt, old)
    tested = run(["test", *cfg, "--run_dir", str(tmp_path / "a"), "--ckpt_path", str(old)])
    assert tested.trainer.callback_metrics["test/acc"] == first.trainer.callback_metrics["test/acc"]
    with pytest.raises(SystemExit) as e:
        main(["fit", *cfg, "--run_dir", str(tmp_path / "b"), "--trainer.max_epochs", "2", "--ckpt_path", str(old)])
    assert e.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"cannot resume: the checkpoint's {key} is (49408, 64) and this model's ({len(ids)}, 64)" in line
