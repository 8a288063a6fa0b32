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
    # the adjustment moves predictions towards rare classes
    logits = torch.zeros(1, 4)
    assert (logits - 1.0 * m.prior).argmax().item() == 3


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


def test_cosine_head_bounded_and_scale_invariant():
    head = CosineHead(16, 5, scale=16.0)
    x = torch.randn(10, 16)
    out = head(x)
    assert out.abs().max() <= 16.0 + 1e-5
    assert torch.allclose(head(3.0 * x), out, atol=1e-5)
    with torch.no_grad():
        head.weight.mul_(torch.arange(1, 6).float().unsqueeze(1))
    assert torch.allclose(head(x), out, atol=1e-5)
    assert isinstance(CosineClassifier(**FACTS).head, CosineHead)
    learn = CosineHead(16, 5, learn_scale=True)
    assert any(p is learn.scale for p in learn.parameters())


REGISTERED = sorted(
    (cls for _, cls in inspect.getmembers(methods, inspect.isclass) if issubclass(cls, LTMethod) and cls is not LTMethod),
    key=lambda c: c.__name__,
)


def test_every_method_is_registered():
    names = {c.__name__ for c in REGISTERED}
    assert {"CrossEntropy", "LogitAdjustment", "BalancedSoftmax", "CosineClassifier", "CRT"} <= names
    assert {"BCE", "ASL", "Focal", "DBFocal"} <= names


METHOD_TASKS = [(cls, task) for cls in REGISTERED for task in cls.tasks]
LABELS = torch.tensor([0, 1, 2, 3, 0, 0, 1, 3])


@pytest.mark.parametrize("cls,task", METHOD_TASKS, ids=lambda v: getattr(v, "__name__", v))
def test_every_method_trains_one_step_and_predicts(cls, task):
    torch.manual_seed(0)
    clip = issubclass(cls, CLIPPromptMethod)  # frozen CLIP towers instead of a backbone: the tiny random one
    facts = {**FACTS, "backbone": None, "clip_model": TINY_CLIP, "clip_pretrained": None} if clip else FACTS
    m = cls(task=task, **facts)
    x = _x(8)
    y = LABELS if task == "multiclass" else F.one_hot(LABELS, 4).maximum(torch.eye(4)[[1, 1, 0, 0, 3, 2, 2, 0]].long())
    trained = [p for p in m.parameters() if p.requires_grad] if clip else list(m.head.parameters())
    if trained:
        loss = m.training_loss(m(x), y)
        assert loss.ndim == 0 and torch.isfinite(loss)
        loss.backward()
        assert all(p.grad is not None for p in trained)
    else:
        assert cls is ZeroShotCLIP and m.training_step((x, y, torch.arange(8)), 0) is None
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
