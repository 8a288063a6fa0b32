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


def test_digits_arrays_equal_scikit_learns_load_digits():
    """The CSV read without importing sklearn.datasets gives exactly load_digits' numbers."""
    from sklearn.datasets import load_digits

    from ltbench.data.digits import load_digits_arrays

    images, targets = load_digits_arrays()
    reference = load_digits()
    assert images.shape == (1797, 8, 8) and targets.dtype == np.int64
    np.testing.assert_array_equal(images, reference.images)
    np.testing.assert_array_equal(targets, reference.target)
    images[0, 0, 0] = -1  # a caller's copy: the next call is unaffected
    assert load_digits_arrays()[0][0, 0, 0] == reference.images[0, 0, 0]


def test_batched_fetch_equals_per_sample_collate():
    """TensorItems hands the DataLoader whole batches; they equal the default per-sample collate."""
    from torch.utils.data import DataLoader, default_collate

    ds = DigitsLT().dataset("train")
    order = [5, 0, 17, 3, 3, 42]
    batched = ds.__getitems__(order)
    reference = default_collate([ds[i] for i in order])
    for a, b in zip(batched, reference):
        assert a.dtype == b.dtype and torch.equal(a, b)
    loader = DataLoader(ds, batch_size=7, shuffle=False, collate_fn=ds.collate_fn)
    x, y, index = next(iter(loader))
    assert x.shape == (7, 1, 8, 8) and index.tolist() == list(range(7)) and torch.equal(y, ds.targets[:7])
