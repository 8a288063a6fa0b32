"""The baselines' defining maths, and one training step of every registered method."""

import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ltbench.methods as methods
from ltbench.errors import LTBenchError
from ltbench.methods import BalancedSoftmax, CosineClassifier, CrossEntropy, LogitAdjustment, LTMethod
from ltbench.methods.clip_prompt import CLIPPromptMethod, ZeroShotCLIP
from ltbench.models.clip_prompt import TINY_CLIP
from ltbench.models.heads import CosineHead

COUNTS = [50, 20, 5, 1]
FACTS = dict(backbone="tiny_cnn", in_chans=1, num_classes=4, train_class_counts=COUNTS, class_names=list("abcd"))


def _x(n=6, seed=0):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_log_prior_is_log_frequency():
    m = CrossEntropy(**FACTS)
    assert np.allclose(m.log_prior().numpy(), np.log(np.array(COUNTS) / sum(COUNTS)))


def test_posthoc_logit_adjustment_subtracts_tau_log_prior():
    torch.manual_seed(0)
    m = LogitAdjustment(tau=1.5, **FACTS).eval()
    x = _x()
    prior = np.log(np.array(COUNTS) / sum(COUNTS))
    with torch.no_grad():
        assert np.allclose(m.inference_logits(x).numpy(), m(x).numpy() - 1.5 * prior, atol=1e-6)
        zero = LogitAdjustment(tau=0.0, **FACTS).eval()
        assert torch.equal(zero.inference_logits(x), zero(x))
        # a classifier that cannot tell the classes apart: the adjusted prediction is the rarest class
        m.head.weight.zero_()
        m.head.bias.zero_()
        assert m(x).argmax(1).tolist() == [0] * 6  # ties go to class 0 before adjustment
        assert m.inference_logits(x).argmax(1).tolist() == [int(np.argmin(COUNTS))] * 6


def test_balanced_softmax_loss_is_ce_on_prior_shifted_logits():
    m = BalancedSoftmax(tau=1.0, **FACTS)
    g = torch.Generator().manual_seed(1)
    logits, target = torch.randn(8, 4, generator=g), torch.randint(0, 4, (8,), generator=g)
    shifted = logits.numpy() + np.log(np.array(COUNTS) / sum(COUNTS))
    log_softmax = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    ref = -log_softmax[np.arange(8), target.numpy()].mean()
    assert m.training_loss(logits, target).item() == pytest.approx(ref, rel=1e-5)
    uniform = BalancedSoftmax(**{**FACTS, "train_class_counts": [7, 7, 7, 7]})
    assert uniform.training_loss(logits, target).item() == pytest.approx(F.cross_entropy(logits, target).item(), rel=1e-6)
    with pytest.raises(LTBenchError, match="BalancedSoftmax supports multiclass data; the data module's task is 'multilabel'"):
        BalancedSoftmax(task="multilabel", **FACTS)


def _np_cosine_logits(x: np.ndarray, w: np.ndarray, scale: float, squash: bool = False) -> np.ndarray:
    """Reference written from the definitions: s * <x, w> / (||x|| ||w||); OLTR's CosNorm scales x by ||x|| / (1 + ||x||)."""
    nx = np.sqrt((x**2).sum(1, keepdims=True))
    nw = np.sqrt((w**2).sum(1, keepdims=True))
    cos = (x @ w.T) / (nx * nw.T)
    return scale * cos * (nx / (1 + nx) if squash else 1.0)


def test_cosine_head_is_scaled_cosine_similarity():
    torch.manual_seed(0)
    head = CosineHead(16, 5, scale=16.0)
    x = torch.randn(10, 16)
    out = head(x)
    w = head.weight.detach().double().numpy()
    assert np.allclose(out.detach().numpy(), _np_cosine_logits(x.double().numpy(), w, 16.0), atol=1e-5)
    assert torch.allclose(head(3.0 * x), out, atol=1e-5)  # invariant to the feature's scale ...
    with torch.no_grad():
        head.weight.mul_(torch.arange(1, 6).float().unsqueeze(1))
    assert torch.allclose(head(x), out, atol=1e-5)  # ... and to each class weight's
    assert isinstance(CosineClassifier(**FACTS).head, CosineHead)
    learn = CosineHead(16, 5, learn_scale=True)
    assert any(p is learn.scale for p in learn.parameters())


def test_squashed_cosine_head_is_oltr_cosnorm():
    """OLTR / Decoupling's CosNorm_Classifier: not scale-invariant, logits shrink for small features."""
    torch.manual_seed(1)
    head = CosineHead(16, 5, scale=16.0, squash=True)
    x = torch.randn(10, 16) * torch.linspace(0.05, 3, 10).unsqueeze(1)
    w = head.weight.detach().double().numpy()
    assert np.allclose(head(x).detach().numpy(), _np_cosine_logits(x.double().numpy(), w, 16.0, squash=True), atol=1e-5)
    assert not torch.allclose(head(3.0 * x), head(x), atol=1e-3)
    m = CosineClassifier(squash=True, **FACTS)
    assert m.head.squash and m.hparams.squash


REGISTERED = sorted(
    (cls for _, cls in inspect.getmembers(methods, inspect.isclass) if issubclass(cls, LTMethod) and cls is not LTMethod),
    key=lambda c: c.__name__,
)


def test_every_method_is_registered():
    names = {c.__name__ for c in REGISTERED}
    assert {"CrossEntropy", "LogitAdjustment", "BalancedSoftmax", "CosineClassifier", "CRT"} <= names
    assert {"BCE", "ASL", "Focal", "DBFocal"} <= names


#: what a method needs beyond the shared facts: TSCNet a ViT, SeDA a text tower (both tiny, random)
OWN_FACTS = {
    "TSCNet": dict(backbone="vit_tiny_patch16_224", backbone_kwargs=dict(img_size=8, patch_size=2, embed_dim=32, depth=2, num_heads=2), num_confounders=8, ccim_dim=16),
    "SeDA": dict(text_model="ltbench-tiny-text", width=32),
    "MaPLe": dict(prompt_depth=2),  # the tiny CLIP's towers have 2 layers
}
METHOD_TASKS = [(cls, task) for cls in REGISTERED for task in cls.tasks]
LABELS = torch.tensor([0, 1, 2, 3, 0, 0, 1, 3])
LOG_PRIOR = np.log(np.array(COUNTS) / sum(COUNTS))


# ---- references written from the papers' formulas, in float64 numpy ----------------------------------
def _np_ce(z: np.ndarray, y: np.ndarray) -> float:
    z = z - z.max(1, keepdims=True)
    return float(-(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(1))).mean())


def _np_sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def _np_bce(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    p = _np_sigmoid(z)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def _np_asl(z: np.ndarray, y: np.ndarray, gamma_neg=4.0, gamma_pos=0.0, clip=0.05) -> float:
    p = _np_sigmoid(z)
    pm = np.maximum(p - clip, 0)
    pos = y * np.log(p) * (1 - p) ** gamma_pos
    neg = (1 - y) * np.log(1 - pm) * pm**gamma_neg
    return float(-(pos + neg).mean())


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _loss_ref(m, task, logits, y):
    """Plain CE (softmax) or BCE (sigmoid) on the method's logits."""
    return _np_ce(_np(logits), y.numpy()) if task == "multiclass" else float(_np_bce(_np(logits), _np(y)).mean())


def _check_ce(m, task, x, y, logits, loss):
    assert loss.item() == pytest.approx(_loss_ref(m, task, logits, y), rel=1e-5)


def _check_la(m, task, x, y, logits, loss):
    m.eval()
    with torch.no_grad():
        assert np.allclose(_np(m.inference_logits(x) - m(x)), -m.tau * LOG_PRIOR, atol=1e-5)  # logits - tau log pi


def _check_bs(m, task, x, y, logits, loss):
    assert loss.item() == pytest.approx(_np_ce(_np(logits) + LOG_PRIOR, y.numpy()), rel=1e-5)  # CE(logits + log pi)


def _check_cosine(m, task, x, y, logits, loss):
    feats = _np(m.backbone(x))
    assert np.allclose(_np(logits), _np_cosine_logits(feats, _np(m.head.weight), 16.0), atol=1e-4)


def _check_crt(m, task, x, y, logits, loss):
    first, second = m.stages()
    assert first.sampler == "instance" and first.train is None and not first.reinit  # joint representation learning
    assert second.sampler == "class_balanced" and second.train == ("head",) and second.reinit == ("head",)  # re-trained classifier


def _check_asl(m, task, x, y, logits, loss):
    assert loss.item() == pytest.approx(_np_asl(_np(logits), _np(y)), rel=1e-5)  # gamma- 4, gamma+ 0, margin 0.05


def _check_focal(m, task, x, y, logits, loss):
    z, t = _np(logits), _np(y)
    p = _np_sigmoid(z)
    pt = np.where(t == 1, p, 1 - p)
    assert loss.item() == pytest.approx(float((2 * (1 - pt) ** 2 * _np_bce(z, t)).mean()), rel=1e-5)  # gamma 2, balance 2


def _check_dbfocal(m, task, x, y, logits, loss):
    # re-sampling is part of the method: it trains with class-aware sampling whatever the data module says
    assert [s.sampler for s in m.stages()] == ["class_aware"]


def _check_tde(m, task, x, y, logits, loss):
    # training logits come from the causal-norm head, inside (-tau, tau) ...
    assert logits.abs().max().item() < m.head.tau
    # ... and the forward pass accumulated the head direction d <- mu * 0 + batch mean of the features
    assert torch.allclose(m.embed_mean, m.backbone(x).detach().mean(0), atol=1e-5)
    m.eval()
    with torch.no_grad():  # at inference the counterfactual subtraction changes the logits (alpha 3)
        assert not torch.allclose(m.inference_logits(x), m(x), atol=1e-4)


def _check_cprfl(m, task, x, y, logits, loss):
    m.eval()
    with torch.no_grad():
        parts = m.forward_parts(x)
    v, p = _np(parts["features"]), _np(parts["prompts"])
    assert np.allclose(_np(parts["logits"]), (v * p[None]).sum(-1), atol=1e-4)  # s_c = <V_c, P_c>
    ref = _np_ce(_np(logits), y.numpy()) if task == "multiclass" else _np_asl(_np(logits), _np(y))
    assert loss.item() == pytest.approx(ref, rel=1e-5)


def _clip_cos(m, x, text):
    """scale * cos(image, text), recomputed in numpy from the frozen towers' raw embeddings."""
    img = _np(m.clip.encode_image(x))
    img = img / np.linalg.norm(img, axis=-1, keepdims=True)
    text = text / np.linalg.norm(text, axis=-1, keepdims=True)
    return m.logit_scale * img @ text.T


def _check_zeroshot(m, task, x, y, logits, loss):
    from ltbench.models.clip_text import class_prompts

    assert not any(p.requires_grad for p in m.parameters())  # nothing trains
    t0 = _np(m.clip.encode_texts(class_prompts(m.class_names, m.template)))
    assert np.allclose(_np(logits), _clip_cos(m, x, t0), atol=1e-4)


def _check_coop(m, task, x, y, logits, loss):
    # only the shared context trains (the towers are frozen), and logits are scale * cos with its class text
    assert [n for n, p in m.named_parameters() if p.requires_grad] == ["contexts"]
    text = _np(m.clip.encode_with_context(m.contexts, m.class_names)[0])
    assert np.allclose(_np(logits), _clip_cos(m, x, text), atol=1e-4)
    assert loss.item() == pytest.approx(_np_ce(_np(logits), y.numpy()), rel=1e-5)


def _check_maple(m, task, x, y, logits, loss):
    # each layer's vision prompts are its text prompts through that layer's Linear; logits are scale * cos of
    # the two prompted towers' embeddings; only the prompts train
    assert sorted(n for n, p in m.named_parameters() if p.requires_grad) == [f"prompts.{k}" for k in ("context", "coupling_bias", "coupling_weight", "deep_text")]
    p = m.prompts
    with torch.no_grad():
        t, v = p.text_prompts()[0], p.vision_prompts()[0]
        for j in range(p.depth):
            assert torch.allclose(v[j], F.linear(t[j], p.coupling_weight[0, j], p.coupling_bias[0, j]), atol=1e-6)
        img = _np(m.clip.encode_image_with_prompts(x, v[None])[0])
        text = _np(m.clip.encode_with_context(p.context, m.class_names, m.sentences, deep=p.deep_text)[0])
    img, text = (a / np.linalg.norm(a, axis=-1, keepdims=True) for a in (img, text))
    assert np.allclose(_np(logits), m.logit_scale * img @ text.T, atol=1e-4)
    assert loss.item() == pytest.approx(_np_ce(_np(logits), y.numpy()), rel=1e-5)


def _check_cocoop(m, task, x, y, logits, loss):
    # each image has its own prompts: the meta-net's shift of the context trains with it
    assert sorted(n.split(".")[0] for n, p in m.named_parameters() if p.requires_grad) == ["contexts", *["meta_net"] * 4]
    assert m.meta_net[0].weight.grad is not None and m.meta_net[0].weight.grad.abs().sum() > 0


def _check_cdc(m, task, x, y, logits, loss):
    # M templates each score their own view; Dempster's rule has the closed form 1 + e/K = prod_m (1 + e_m/K)
    out = logits["logits"].detach()
    assert out.shape == (m.num_templates, len(x), m.num_classes)
    k = m.num_classes
    e_m = _np(m.opinions(out).alpha()).astype(np.float64) - 1
    e_fused = _np(m.fused(out).alpha()).astype(np.float64) - 1
    assert np.allclose(1 + e_fused / k, np.prod(1 + e_m / k, axis=0), rtol=1e-4)


def _check_tscnet(m, task, x, y, logits, loss):
    # causal-norm training logits stay inside (-tau, tau); f~ = f + sum_j a_j P(z_j) z_j with additive attention
    assert logits.abs().max().item() < m.head.tau
    m.eval()
    with torch.no_grad():
        m.dict_z.copy_(torch.randn_like(m.dict_z))
        m.dict_prior.fill_(0.0)
        f = m.features(x)  # P(z) = 0: CCIM adds nothing, only the patch-level tokens act
        m.dict_prior.copy_(torch.rand_like(m.dict_prior))
        f_tilde = m.features(x)
    q, k = _np(m.ccim.query.weight), _np(m.ccim.key.weight)
    w, z, prior = _np(m.ccim.score.weight)[0], _np(m.dict_z), _np(m.dict_prior)
    e = np.tanh((_np(f) @ q.T)[:, None, :] + (z @ k.T)[None]) @ w
    a = np.exp(e - e.max(1, keepdims=True))
    a /= a.sum(1, keepdims=True)
    assert np.allclose(_np(f_tilde), _np(f) + a @ (prior[:, None] * z), atol=1e-4)


def _check_seda(m, task, x, y, logits, loss):
    # the text target of a sample is its class's text feature (multi-label: the mean over its positives),
    # and what the classifier reads beside v is generated from the image alone, deterministically
    m.prepare_text()
    labels = _np(m._labels(y))
    text = _np(m.class_text())
    assert np.allclose(_np(m.text_target(torch.as_tensor(labels, dtype=torch.float32))), labels @ text / np.maximum(labels.sum(1, keepdims=True), 1), atol=1e-5)
    m.eval()
    with torch.no_grad():
        v_n = m.vnorm(m.backbone(x))
        first = m.generate(v_n)
        torch.manual_seed(123)
        assert torch.equal(first, m.generate(v_n))


OWN_MATHS = {
    "CrossEntropy": _check_ce, "BCE": _check_ce, "LogitAdjustment": _check_la, "BalancedSoftmax": _check_bs,
    "CosineClassifier": _check_cosine, "CRT": _check_crt, "ASL": _check_asl, "Focal": _check_focal,
    "DBFocal": _check_dbfocal, "TDE": _check_tde, "CPRFL": _check_cprfl,
    "ZeroShotCLIP": _check_zeroshot, "CoOp": _check_coop, "CoCoOp": _check_cocoop, "MaPLe": _check_maple, "CDC": _check_cdc,
    "TSCNet": _check_tscnet, "SeDA": _check_seda,
}  # fmt: skip


@pytest.mark.parametrize("cls,task", METHOD_TASKS, ids=lambda v: getattr(v, "__name__", v))
def test_every_method_trains_one_step_and_predicts(cls, task):
    assert cls.__name__ in OWN_MATHS, f"add a check of {cls.__name__}'s own maths to OWN_MATHS"
    torch.manual_seed(0)
    clip = issubclass(cls, CLIPPromptMethod)  # frozen CLIP towers instead of a backbone: the tiny random one
    facts = {**FACTS, "backbone": None, "clip_model": TINY_CLIP, "clip_pretrained": None} if clip else FACTS
    facts = {**facts, **OWN_FACTS.get(cls.__name__, {})}
    m = cls(task=task, **facts)
    x = _x(8)
    y = LABELS if task == "multiclass" else F.one_hot(LABELS, 4).maximum(torch.eye(4)[[1, 1, 0, 0, 3, 2, 2, 0]].long())
    logits = m(x)
    # the module that makes the first stage's training logits (SeDA's CE head before its diffusion stages)
    trained = [p for p in m.parameters() if p.requires_grad] if clip else list(getattr(m, "pre_head", m.head).parameters())
    if trained:
        loss = m.training_loss(logits, y)
        assert loss.ndim == 0 and torch.isfinite(loss)
        loss.backward()
        assert all(p.grad is not None for p in trained)
    else:
        assert cls is ZeroShotCLIP and m.training_step((x, y, torch.arange(8)), 0) is None
        loss = None
    OWN_MATHS[cls.__name__](m, task, x, y, logits, loss)
    m.eval()
    with torch.no_grad():
        scores = m.inference_outputs(x[:1])["scores"]
    assert scores.shape == (1, 4) and ((scores >= 0) & (scores <= 1)).all()
    if task == "multiclass":
        assert torch.allclose(scores.sum(1), torch.ones(1))
    assert m.stages()


def test_multilabel_task_uses_sigmoid_and_bce():
    m = CrossEntropy(task="multilabel", **FACTS)
    logits = torch.randn(3, 4)
    target = torch.tensor([[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]])
    assert torch.allclose(m.scores(logits), logits.sigmoid())
    assert m.training_loss(logits, target).item() == pytest.approx(F.binary_cross_entropy_with_logits(logits, target.float()).item())


def test_mismatched_facts_are_named():
    from ltbench.errors import LTBenchError

    with pytest.raises(LTBenchError, match="num_classes=5 but 4 class_names"):
        CrossEntropy(**{**FACTS, "num_classes": 5})
