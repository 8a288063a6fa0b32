"""The COCO-LT / VOC-LT baseline configs build against the real split lists (images are not needed)."""

import pytest
import torch

from ltbench.runner import build
from tests.helpers import REPO, SHARED

SPLITS = SHARED / "data" / "splits"
pytestmark = pytest.mark.skipif(not SPLITS.is_dir(), reason=f"real split files not found at {SPLITS} (../shared is absent)")


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("dataset,epoch,neg_scale", [("coco", 22560, 2.0), ("voc", 3875, 5.0)])
def test_dbfocal_config_builds_with_the_published_settings(dataset, epoch, neg_scale, tmp_path):
    model, dm = build([
        "--config", str(REPO / "configs" / f"dbfocal_{dataset}_lt.yaml"),
        "--data.init_args.list_dir", str(SPLITS / f"{dataset}_lt"), "--data.init_args.root", str(tmp_path),
        "--model.init_args.pretrained", "false", "--trainer.accelerator", "cpu", "--run_dir", str(tmp_path),
    ])
    assert dm.num_classes == model.num_classes == (80 if dataset == "coco" else 20)
    assert model.num_train == (1909 if dataset == "coco" else 1142)
    assert dm.protocol()["epoch_samples"] == epoch and dm.image_size == 224
    assert model.stages()[0].sampler == "class_aware" and model.db.neg_scale == neg_scale
    assert model.freeze == ("backbone.model.conv1", "backbone.model.bn1", "backbone.model.layer1") and model.norm_eval
    assert [type(m).__name__ for m in model.head] == ["Linear", "Dropout", "Linear"] and model.head[0].out_features == 256
    x = torch.randn(2, 3, 224, 224)
    y = torch.zeros(2, model.num_classes)
    y[0, 0] = y[1, -1] = 1
    loss = model.training_loss(model(x), y)
    assert torch.isfinite(loss)
