"""Host-side random transforms keyed by (seed, epoch, position): the same batches whatever num_workers,
new crops every epoch and at every repeat of an index, the main process's stream untouched, and a run
resumed with loader workers ending with the uninterrupted run's weights (CIFAR-LT through the DataLoader)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from ltbench.data import cifar
from ltbench.data.base_to_new import BaseToNew
from ltbench.data.digits import DigitsLT
from ltbench.data.keyed import KeyedItems, draws_randomly
from ltbench.data.lists import ImageListLT
from ltbench.data.synthetic import write_fake_image_list
from tests.helpers import REPO


def _epoch(dm, epoch: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and indices of one training epoch, in loader order."""
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    xs, idx = zip(*[(x, i) for x, _, i in loader])
    return torch.cat(xs), torch.cat(idx)


def test_an_epoch_is_the_same_batches_with_0_1_and_2_workers(cifar_dm):
    x0, i0 = _epoch(cifar_dm(batch_size=128, num_workers=0))
    assert isinstance(cifar_dm().train_dataloader().dataset, KeyedItems)
    for workers in (1, 2):
        x, i = _epoch(cifar_dm(batch_size=128, num_workers=workers))
        assert torch.equal(i, i0), workers
        assert torch.equal(x, x0), workers


def test_the_next_epoch_draws_new_crops_of_each_image(cifar_dm):
    dm = cifar_dm(batch_size=256)
    raw = dm.dataset("train").images
    crops = []
    for epoch in (0, 1):
        x, i = _epoch(dm, epoch)
        crops.append(x[torch.argsort(i)])  # the instance sampler visits every image once
    changed = (crops[0] != crops[1]).flatten(1).any(1)
    assert changed.float().mean() > 0.9
    # RandomCrop(32, padding=4) + flip of the stored image: the crops are views of it, not noise
    assert not torch.equal(crops[0], raw)


def test_two_positions_holding_one_index_get_different_crops(cifar_dm):
    dm = cifar_dm(batch_size=256, sampler="class_balanced")
    x, i = _epoch(dm)
    order = torch.argsort(i, stable=True)
    i, x = i[order], x[order]
    repeat = torch.nonzero(i[1:] == i[:-1]).flatten()
    assert len(repeat) > 200  # the tail classes' few images are drawn many times
    same = (x[repeat] == x[repeat + 1]).flatten(1).all(1)
    # 81 offsets x 2 flips: about 1 pair in 162 agrees by chance (more where padding hides the offset)
    assert same.float().mean() < 0.05


def test_a_keyed_item_is_a_function_of_its_key_and_leaves_the_callers_stream(cifar_dm):
    items = KeyedItems(cifar_dm().dataset("train"))
    torch.manual_seed(7)
    before = torch.get_rng_state()
    a, b, c = items[(3, 11)], items[(3, 11)], items[(3, 12)]
    assert torch.equal(torch.get_rng_state(), before)
    assert a[2] == 3 and torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])


def test_pil_list_datasets_are_keyed_too(tmp_path):
    root = write_fake_image_list(tmp_path, [5, 3, 1], shapes=((40, 48), (48, 36)))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*matches no published")
        epochs = [_epoch(ImageListLT(root=str(root), train_list="ImageNet_LT_train.txt", image_size=24, batch_size=4,
                                     num_workers=w, pin_memory=False)) for w in (0, 2)]
    assert torch.equal(epochs[0][1], epochs[1][1]) and torch.equal(epochs[0][0], epochs[1][0])


def test_data_that_draws_nothing_on_the_host_is_not_keyed(tmp_path):
    """Digits (the default board's data) and bytes decoded on the device keep the plain loader."""
    digits = DigitsLT(batch_size=16)
    b2n = BaseToNew(data=DigitsLT(batch_size=16), shots=4, batch_size=16)
    jpeg = ImageListLT(root=str(write_fake_image_list(tmp_path, [2, 1], shapes=((32, 32),))), train_list="ImageNet_LT_train.txt",
                       decode="device", pin_memory=False)
    for dm in (digits, b2n, jpeg):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*matches no published")
            loader = dm.train_dataloader()
        assert not draws_randomly(dm.dataset("train")) and not isinstance(loader.dataset, KeyedItems), type(dm).__name__
        assert loader.sampler.keyed is False
        assert isinstance(next(iter(loader.sampler)), int)


@pytest.mark.slow
def test_a_cpu_augmented_run_is_the_same_with_other_workers_and_after_a_resume(small_cifar, monkeypatch, tmp_path):
    """CIFAR-LT through loader workers: an uninterrupted fit with 2 workers, one with none, and one
    interrupted after its first epoch and resumed with --ckpt_path last (fresh workers) end alike."""
    from ltbench.runner import run

    root, md5s = small_cifar
    monkeypatch.setattr(cifar, "MD5S", md5s)
    args = ["--config", str(REPO / "configs" / "ce_cifar100_lt.yaml"), "--trainer.enable_progress_bar", "false",
            "--trainer.accelerator", "cpu", "--trainer.max_epochs", "2", "--trainer.limit_val_batches", "1",
            "--data.init_args.root", str(root), "--data.init_args.imb_ratio", "10", "--data.init_args.batch_size", "128",
            "--data.init_args.device_cache", "false", "--data.init_args.pin_memory", "false",
            "--model.init_args.backbone", "tiny_cnn", "--model.init_args.backbone_kwargs", '{"width": 4}',
            "--test_after_fit", "false"]

    def fit(name: str, workers: int, *extra: str):
        return run(["fit", *args, "--data.init_args.num_workers", str(workers), "--run_dir", str(tmp_path / name), *extra])

    straight = fit("straight", 2)
    fit("resumed", 2, "--trainer.callbacks+=tests.helpers.StopAfterEpoch", "--trainer.callbacks.epoch", "0")
    resumed = fit("resumed", 2, "--ckpt_path", "last")
    serial = fit("serial", 0)
    assert resumed.trainer.current_epoch == straight.trainer.current_epoch == 2
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
        assert torch.equal(v, serial.model.state_dict()[k]), k
    assert not np.isclose(float(straight.trainer.callback_metrics["train/loss"]), 0.0)


def test_a_keyed_pass_is_ordered_and_the_same_with_0_and_2_workers_and_after_other_draws(cifar_dm):
    """``_loader(key_seed=)``: every item once, in order, its crop a function of (key_seed, position) only."""
    passes = []
    for workers, earlier in ((0, 0), (2, 0), (0, 9)):
        dm = cifar_dm(num_workers=workers, batch_size=512)
        torch.manual_seed(earlier)
        loader = dm._loader(dm.dataset("train"), 512, shuffle=False, key_seed=0)
        xs, idx = zip(*[(x, i) for x, _, i in loader])
        passes.append((torch.cat(xs), torch.cat(idx)))
    (x0, i0), *others = passes
    assert torch.equal(i0, torch.arange(len(i0)))
    assert not torch.equal(x0, cifar_dm().dataset("train").images)  # crops of the stored images, not the images
    for x, i in others:
        assert torch.equal(i, i0) and torch.equal(x, x0)
    other_seed = cifar_dm()._loader(cifar_dm().dataset("train"), 512, key_seed=1)
    assert not torch.equal(torch.cat([x for x, _, _ in other_seed]), x0)
    digits = DigitsLT()
    assert not isinstance(digits._loader(digits.dataset("train"), 16, key_seed=0).dataset, KeyedItems)
