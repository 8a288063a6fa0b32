"""channels_last / torch.compile switches, FLOP counting and MFU: exact counts, no-ops on CPU by default."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
from torch import nn

from ltbench.data.digits import DigitsLT
from ltbench.flops import mfu, peak_bf16_flops, throughput_extras, train_flops_per_image
from ltbench.methods import TDE
from ltbench.models.backbone import Backbone
from ltbench.speedups import Speedups, apply_speedups


def test_train_flops_are_three_forwards_of_the_analytic_count():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    conv = 2 * 3 * 9 * 8 * 4 * 4
    linear = 2 * 128 * 5
    assert train_flops_per_image(model, (3, 4, 4)) == 3 * (conv + linear)
    # grouped convolutions count their own channels only (torch's backward count would not)
    grouped = nn.Conv2d(64, 64, 3, padding=1, groups=32, bias=False)
    assert train_flops_per_image(grouped, (64, 8, 8)) == 3 * 2 * 64 * 2 * 9 * 64


def test_flops_are_cached_by_key():
    model = nn.Linear(4, 2)
    assert train_flops_per_image(model, (4,), key=("lin", 4)) == 3 * 16
    assert train_flops_per_image(nn.Linear(4, 200), (4,), key=("lin", 4)) == 3 * 16


@pytest.mark.parametrize(
    "name, peak",
    [("NVIDIA H200", 989.4e12), ("NVIDIA H100 80GB HBM3", 989.4e12), ("NVIDIA H100 PCIe", 756e12),
     ("NVIDIA A100-SXM4-80GB", 312e12), ("cpu", None)],
)
def test_peak_table(name, peak):
    assert peak_bf16_flops(name) == peak


def test_mfu_is_achieved_over_peak():
    assert mfu(5000.0, 25.6e9, "NVIDIA H200") == pytest.approx(5000 * 25.6e9 / 989.4e12)
    assert mfu(5000.0, 25.6e9, "cpu") is None


def test_record_mfu_is_per_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    one = throughput_extras(8000.0, 25.6e9, "cuda:0", devices=1)
    two = throughput_extras(8000.0, 25.6e9, "cuda:0", devices=2)
    assert one["mfu_bf16_dense"] == pytest.approx(8000 * 25.6e9 / 989.4e12)
    assert two["mfu_bf16_dense"] == pytest.approx(one["mfu_bf16_dense"] / 2)
    assert two["achieved_tflops"] == pytest.approx(8000 * 25.6e9 / 1e12)  # all devices together


def test_channels_last_and_compile_keep_outputs_and_parameter_names():
    torch.manual_seed(0)
    b = Backbone("tiny_cnn", in_chans=3, width=8).eval()
    ref = copy.deepcopy(b)
    x = torch.randn(4, 3, 16, 16)
    apply_speedups(b, channels_last=True, compile=True, compile_backend="eager")
    apply_speedups(b, channels_last=True, compile=True, compile_backend="eager")  # idempotent
    assert list(b.state_dict()) == list(ref.state_dict())
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in b.parameters() if p.ndim == 4)
    torch.testing.assert_close(b(x), ref(x), rtol=1e-5, atol=1e-5)


def _fit(callback):
    L.seed_everything(0)
    dm = DigitsLT(batch_size=64)
    model = TDE(backbone="tiny_cnn", num_classes=10, in_chans=1, train_class_counts=dm.train_class_counts, backbone_kwargs={"width": 4})
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=1, callbacks=[callback])
    trainer.fit(model, dm)
    return model


def test_default_switches_are_off_on_cpu_and_mfu_facts_are_recorded():
    model = _fit(Speedups())
    assert model.backbone._ltbench_speedups == {"channels_last": False, "compile": False, "compile_mode": None}
    assert "forward_features" not in vars(model.backbone.model)  # nothing wrapped
    t = model.throughput
    assert t["backbone_gflops_per_image"] == pytest.approx(train_flops_per_image(model.backbone, (1, 8, 8)) / 1e9)
    assert t["achieved_tflops"] == pytest.approx(t["train_images_per_s"] * t["backbone_gflops_per_image"] / 1e3)
    assert "mfu_bf16_dense" not in t  # no peak for a CPU


def test_forced_switches_train_on_cpu():
    model = _fit(Speedups(channels_last=True, compile=True, compile_backend="eager"))
    assert model.backbone._ltbench_speedups["compile"] is True
    assert "forward_features" in vars(model.backbone.model)
    assert all(torch.isfinite(p).all() for p in model.parameters())
