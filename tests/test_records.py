"""Run records: written atomically, by rank 0 only, with throughput over all processes."""

from __future__ import annotations

import json
import types
import warnings

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import SingleDeviceStrategy

from ltbench.cli import build
from ltbench.methods import CrossEntropy, Stage
from ltbench.methods import base as method_base
from ltbench.methods.stages import StagePlan
from ltbench.records import write_json_atomic
from ltbench.suite import IN_PROCESS_WARNING
from tests.helpers import CE_DIGITS


def test_a_write_that_fails_midway_leaves_the_old_record_intact(tmp_path, monkeypatch):
    path = tmp_path / "record.json"
    write_json_atomic(path, {"metrics": {"acc": 0.5}})
    old = path.read_bytes()
    seen = {}

    def dump_half_then_fail(obj, f, **kwargs):
        f.write('{"metrics": {"acc": 0.')
        f.flush()
        seen["target"], seen["during"] = f.name, path.read_bytes()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(json, "dump", dump_half_then_fail)
    with pytest.raises(OSError, match="No space left on device"):
        write_json_atomic(path, {"metrics": {"acc": 0.9}})
    assert seen["during"] == old and seen["target"] != str(path)  # readers meanwhile see the old record
    assert path.read_bytes() == old and json.loads(old) == {"metrics": {"acc": 0.5}}
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]  # no temporary file left behind
    monkeypatch.undo()
    write_json_atomic(path, {"metrics": {"acc": 0.9}})
    assert json.loads(path.read_text()) == {"metrics": {"acc": 0.9}}


@pytest.fixture(scope="module")
def digits_model_and_data():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=IN_PROCESS_WARNING)
        return build(["--config", CE_DIGITS])


@pytest.mark.parametrize("global_zero", [True, False], ids=["rank0", "other-rank"])
def test_only_rank_zero_writes_the_record(digits_model_and_data, tmp_path, monkeypatch, global_zero):
    """A real test loop in which this process is (or is not) global rank 0."""
    model, dm = digits_model_and_data
    monkeypatch.setattr(SingleDeviceStrategy, "is_global_zero", property(lambda self: global_zero))
    model.record_path = None
    trainer = L.Trainer(accelerator="cpu", logger=False, default_root_dir=tmp_path, enable_progress_bar=False, enable_model_summary=False, limit_test_batches=2)
    trainer.test(model, datamodule=dm)
    written = sorted(tmp_path.rglob("*.json"))
    if global_zero:
        assert written == [tmp_path / "record.json"] and model.record_path == tmp_path / "record.json"
        assert json.loads(written[0].read_text())["method"] == "CrossEntropy"
    else:
        assert written == [] and model.record_path is None


def test_throughput_counts_the_images_of_every_process(monkeypatch):
    """2 processes, 3 batches of 8 images each per epoch; the first (warm-up) epoch is left out once a second is timed."""
    m = CrossEntropy(backbone="tiny_cnn", in_chans=1, num_classes=4)
    m.plan = StagePlan([Stage("train")], 2)
    trainer = types.SimpleNamespace(current_epoch=0, global_rank=0, world_size=2, global_step=1, log_every_n_steps=50, optimizers=[])
    m.trainer = trainer
    now = {"t": 0.0}
    monkeypatch.setattr(method_base, "time", types.SimpleNamespace(perf_counter=lambda: now["t"]))
    batch = (torch.zeros(8, 1, 8, 8), torch.zeros(8, dtype=torch.long), torch.arange(8))
    for epoch, (start, stop) in enumerate([(0.0, 2.0), (10.0, 14.0)]):
        trainer.current_epoch, now["t"] = epoch, start
        m.on_train_epoch_start()
        for i in range(3):
            m.on_train_batch_end(None, batch, i)
        now["t"] = stop
        m.on_train_epoch_end()
        expected = 2 * 24 / (stop - start)  # both processes' 24 images in this epoch's time
        assert m.throughput == {"train_images_per_s": expected, "epochs_timed": 1, "devices": 2, "accelerator": "cpu"}
