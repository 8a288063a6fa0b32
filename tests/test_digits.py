import numpy as np
import torch

from ltbench.data import DigitsLT


def test_digits_lt_split_profile_and_determinism():
    a, b = DigitsLT(), DigitsLT()
    assert a.train_class_counts == [120, 71, 43, 25, 15, 9, 5, 3, 2, 1]
    assert a.protocol()["subset_sha256"] == b.protocol()["subset_sha256"]
    assert a.protocol()["subset_sha256"] != DigitsLT(subset_seed=1).protocol()["subset_sha256"]
    s = a._splits
    assert not set(s["train"]) & set(s["test"])
    assert np.bincount(s["targets"][s["test"]]).tolist() == [50] * 10
    assert {k: int(v.sum()) for k, v in a.groups.items()} == {"many": 1, "medium": 3, "few": 6}


def test_digits_items_and_device_normalisation():
    dm = DigitsLT(imb_ratio=10)
    x, y, i = dm.dataset("train")[5]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert isinstance(i, int) and i == 5
    batch = next(iter(dm._loader(dm.dataset("test"), 16)))
    xb, yb, ib = dm.on_after_batch_transfer(batch, 0)
    assert xb.min() >= -1 and xb.max() <= 1 and ib.tolist() == list(range(16))
    assert dm.num_classes == 10 and dm.in_chans == 1 and dm.task == "multiclass"
