"""Backbones: ltbench's timm-registered CIFAR models and the Backbone wrapper over any timm model."""

import json
import os
import subprocess
import sys

import pytest
import timm
import torch
from torch import nn

from ltbench.errors import LTBenchError
from ltbench.models import Backbone, create_backbone, list_ltbench_models
from ltbench.models.cifar_resnet import BasicBlock, PadShortcut
from tests.helpers import REPO

LTBENCH_MODELS = list_ltbench_models()
NUM_FEATURES = {"resnet32_cifar": 64, "resnet32_bbn": 128, "tiny_cnn": 64}


def test_registry_lists_ltbench_models():
    assert LTBENCH_MODELS, "no ltbench models registered with timm"
    assert set(NUM_FEATURES) <= set(LTBENCH_MODELS)
    assert set(LTBENCH_MODELS) <= set(timm.list_models())


@pytest.mark.parametrize("name", LTBENCH_MODELS)
def test_timm_create_model(name):
    model = timm.create_model(name, num_classes=0, in_chans=1)
    x = torch.randn(2, 1, 32, 32)
    fmap = model.forward_features(x)
    assert fmap.ndim == 4 and fmap.shape[:2] == (2, model.num_features)
    assert model(x).shape == (2, model.num_features)
    assert isinstance(model.get_classifier(), nn.Identity)

    model.reset_classifier(7)
    assert model.num_classes == 7
    assert model(x).shape == (2, 7)
    assert model.forward_head(fmap, pre_logits=True).shape == (2, model.num_features)

    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 32, 32) and cfg["mean"] == pytest.approx((0.4914, 0.4822, 0.4465))
    assert model.default_cfg is cfg


@pytest.mark.parametrize("name", LTBENCH_MODELS)
def test_no_published_weights(name):
    with pytest.raises(LTBenchError, match="no pretrained weights"):
        timm.create_model(name, pretrained=True)


@pytest.mark.parametrize("name", LTBENCH_MODELS)
def test_backbone_tokens_and_pool(name):
    backbone = create_backbone(name)
    assert backbone.num_features == NUM_FEATURES.get(name, backbone.num_features)
    assert not backbone.is_vit
    x = torch.randn(3, 3, 32, 32)
    tokens = backbone.forward_features(x)
    fmap = backbone.model.forward_features(x)
    assert tokens.shape == (3, fmap.shape[2] * fmap.shape[3], backbone.num_features)
    pooled = backbone.pool(tokens)
    assert pooled.shape == (3, backbone.num_features)
    torch.testing.assert_close(pooled, backbone.model.forward_head(fmap, pre_logits=True))
    torch.testing.assert_close(backbone(x), pooled)


@pytest.mark.parametrize("name", LTBENCH_MODELS)
def test_batch_of_one(name):
    backbone = Backbone(name)
    x = torch.randn(1, 3, 32, 32)
    assert backbone(x).shape == (1, backbone.num_features)
    backbone.eval()
    assert backbone(x).shape == (1, backbone.num_features)


@pytest.mark.parametrize("name", LTBENCH_MODELS)
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    backbone = Backbone(name)
    backbone(torch.randn(4, 3, 32, 32)).pow(2).sum().backward()
    for pname, p in backbone.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


SEEDED_BUILD = r"""
import hashlib, json, sys, torch
from ltbench.models import Backbone, list_ltbench_models
out = {}
for seed in sys.argv[1:]:
    for name in list_ltbench_models():
        torch.manual_seed(int(seed))
        backbone = Backbone(name)
        h = hashlib.sha256()
        for key, value in backbone.state_dict().items():
            h.update(key.encode() + value.cpu().numpy().tobytes())
        h.update(backbone(torch.randn(2, 3, 32, 32)).detach().numpy().tobytes())
        out[f"{name}@{seed}"] = h.hexdigest()
print(json.dumps(out))
"""


def test_same_seed_same_weights_and_outputs_across_processes():
    """Two fresh interpreters with one seed build bit-identical models and outputs; another seed does not."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen([sys.executable, "-c", SEEDED_BUILD, *seeds], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for seeds in (["123", "124"], ["123"])
    ]  # fmt: skip
    outs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr[-3000:]
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    first, second = outs
    assert set(second) == {f"{n}@123" for n in LTBENCH_MODELS}
    assert all(first[k] == second[k] for k in second)
    assert all(first[f"{n}@123"] != first[f"{n}@124"] for n in LTBENCH_MODELS)


@pytest.mark.parametrize("name", LTBENCH_MODELS)
def test_weights_file_round_trip(name, tmp_path):
    torch.manual_seed(0)
    source = timm.create_model(name, num_classes=10)
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    loaded = Backbone(name, pretrained=str(path))
    for key, value in loaded.model.state_dict().items():
        torch.testing.assert_close(value, source.state_dict()[key], msg=key)


def test_weights_file_from_lightning_checkpoint_with_fewer_channels(tmp_path):
    """A whole-module checkpoint (prefixed keys, extra entries) loads, and the stem adapts 3 -> 1 channel."""
    source = timm.create_model("tiny_cnn", num_classes=4)
    state = {f"backbone.model.{k}": v for k, v in source.state_dict().items()}
    state["head.weight"] = torch.zeros(4, 64)
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "epoch": 3}, path)
    loaded = Backbone("tiny_cnn", pretrained=str(path), in_chans=1)
    torch.testing.assert_close(loaded.model.conv2.conv.weight, source.conv2.conv.weight)
    assert loaded.model.conv1.conv.weight.shape[1] == 1


def test_tiny_cnn_on_digits_sized_input():
    backbone = Backbone("tiny_cnn", in_chans=1)
    tokens = backbone.forward_features(torch.randn(5, 1, 8, 8))
    assert tokens.shape == (5, 16, 64)
    assert backbone.pool(tokens).shape == (5, 64)


def test_resnet32_cifar_parameter_count():
    model = timm.create_model("resnet32_cifar", num_classes=10)
    n_params = sum(p.numel() for p in model.parameters())
    assert 450_000 <= n_params <= 470_000, n_params
    assert [len(model.layer1), len(model.layer2), len(model.layer3)] == [5, 5, 5]
    n_weight_layers = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    assert n_weight_layers == 32


def test_resnet32_bbn_structure():
    model = timm.create_model("resnet32_bbn", num_classes=0)
    assert [len(model.layer1), len(model.layer2), len(model.layer3)] == [5, 5, 4]
    for branch in (model.cb_block, model.rb_block):
        assert isinstance(branch, BasicBlock)
        assert branch.conv1.in_channels == branch.conv2.out_channels == 64
    assert model.cb_block is not model.rb_block
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        trunk = model.layer3(model.layer2(model.layer1(torch.relu(model.bn1(model.conv1(x))))))
        expected = torch.cat((model.cb_block(trunk), model.rb_block(trunk)), dim=1)
        torch.testing.assert_close(model.forward_features(x), expected)


def test_option_a_shortcut_is_parameter_free():
    model = timm.create_model("resnet32_cifar", num_classes=0)
    shortcuts = [m for m in model.modules() if isinstance(m, PadShortcut)]
    assert len(shortcuts) == 2
    assert all(sum(p.numel() for p in m.parameters()) == 0 for m in shortcuts)
    assert not any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in model.modules())

    x = torch.randn(2, 16, 8, 8)
    out = PadShortcut(16, 32, stride=2)(x)
    assert out.shape == (2, 32, 4, 4)
    torch.testing.assert_close(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0


def test_vit_through_backbone():
    backbone = Backbone("vit_tiny_patch16_224", img_size=32, depth=2)
    assert backbone.is_vit
    tokens = backbone.forward_features(torch.randn(2, 3, 32, 32))
    assert tokens.shape == (2, 1 + 4, 192)
    assert backbone.pool(tokens).shape == (2, 192)
    assert backbone.num_features == 192


def test_tagged_timm_name_is_accepted():
    backbone = Backbone("vit_tiny_patch16_224.augreg_in21k", img_size=32, depth=1)
    assert backbone.forward_features(torch.randn(1, 3, 32, 32)).ndim == 3


def test_missing_weights_file_names_the_path(tmp_path):
    missing = tmp_path / "nope" / "weights.pth"
    with pytest.raises(LTBenchError, match="weights.pth"):
        Backbone("resnet32_cifar", pretrained=str(missing))


def test_unreadable_weights_file_is_an_ltbench_error(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(timm.create_model("tiny_cnn").state_dict(), path)
    with pytest.raises(LTBenchError, match="other.pth"):
        Backbone("resnet32_cifar", pretrained=str(path))


def test_unknown_name():
    with pytest.raises(LTBenchError, match="not_a_model_xyz"):
        Backbone("not_a_model_xyz")


def test_channels_last_model_gives_tokens():
    """Swin's forward_features is (B, H, W, C); tokens must still be (B, H*W, C)."""
    backbone = Backbone(
        "swin_tiny_patch4_window7_224", img_size=56, depths=(1, 1), num_heads=(1, 1), embed_dim=16
    )
    x = torch.randn(2, 3, 56, 56)
    fmap = backbone.model.forward_features(x)
    tokens = backbone.forward_features(x)
    assert fmap.shape == (2, 7, 7, 32) and tokens.shape == (2, 49, 32)
    assert not backbone.is_vit
    torch.testing.assert_close(backbone.pool(tokens), fmap.mean(dim=(1, 2)))
