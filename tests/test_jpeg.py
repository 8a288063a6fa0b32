"""JPEG decoding on the device with batched RandomResizedCrop/flip/jitter (run on CPU here)."""

from __future__ import annotations

import math
import warnings

import lightning as L
import pytest
import torch
from torchvision.io import decode_jpeg, encode_jpeg
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from ltbench.data.jpeg import EncodedImages, color_jitter, crop_resize, decode_augment, random_resized_boxes
from ltbench.data.lists import ImageNetLT
from ltbench.data.synthetic import write_fake_image_list
from ltbench.methods import CrossEntropy


def test_boxes_follow_random_resized_crop():
    g = torch.Generator().manual_seed(0)
    sizes = torch.tensor([[375, 500], [500, 333], [64, 64]]).repeat(400, 1)
    boxes = random_resized_boxes(sizes, g)
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (h >= 1).all() and (w >= 1).all()
    assert (top + h <= sizes[:, 0]).all() and (left + w <= sizes[:, 1]).all()
    frac = (h * w).double() / sizes.prod(1)
    ratio = w.double() / h
    # rounding of h and w moves the area and ratio a little off the drawn values
    assert frac.min() > 0.06 and frac.max() <= 1.0
    assert ratio.min() > 0.7 and ratio.max() < 1.45
    assert len(set(top.tolist())) > 50  # positions vary
    # the same distribution as torchvision's own rejection sampling (which favours small crops)
    torch.manual_seed(0)
    ref = []
    for hw in sizes.tolist():
        i, j, rh, rw = RandomResizedCrop.get_params(torch.empty(1, *hw), (0.08, 1.0), (3 / 4, 4 / 3))
        ref.append((rh * rw / (hw[0] * hw[1]), math.log(rw / rh)))
    ref = torch.tensor(ref, dtype=torch.float64)
    assert float(frac.mean()) == pytest.approx(float(ref[:, 0].mean()), abs=0.03)
    assert float(frac.std()) == pytest.approx(float(ref[:, 0].std()), abs=0.03)
    assert float(torch.log(ratio).mean()) == pytest.approx(float(ref[:, 1].mean()), abs=0.03)


def test_boxes_fall_back_to_the_centred_clamped_image():
    boxes = random_resized_boxes(torch.tensor([[10, 1000], [1000, 10]]), torch.Generator().manual_seed(0))
    # torchvision: w = round(h * 4/3) for too-wide images, h = round(w / (3/4)) for too-tall ones
    assert boxes[0].tolist() == [0, (1000 - 13) // 2, 10, 13]
    assert boxes[1].tolist() == [(1000 - 13) // 2, 0, 13, 10]


def test_crop_resize_is_exact_at_scale_one_and_close_to_torchvision_when_shrinking():
    g = torch.Generator().manual_seed(0)
    smooth = TF.resize(torch.randint(0, 256, (3, 12, 16), dtype=torch.uint8, generator=g), [96, 128], antialias=True)
    other = torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8, generator=g)
    out = crop_resize([smooth, other], torch.tensor([[10, 20, 64, 64], [4, 6, 32, 32]]), 32)
    ref = TF.resized_crop(smooth, 10, 20, 64, 64, [32, 32], antialias=True).float()
    assert (out[0] - ref).abs().mean() < 2.0  # on a 0..255 scale
    torch.testing.assert_close(out[1], other[:, 4:36, 6:38].float(), atol=1e-3, rtol=0)


def test_color_jitter_factors_per_image_and_identity_at_zero():
    x = torch.rand(64, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(color_jitter(x.clone(), g, g, 0.0, 0.0, 0.0), x)
    y = color_jitter(x.clone(), g, torch.Generator().manual_seed(1), 0.4, 0.0, 0.0)
    f = (y / x).flatten(1).median(1).values
    assert f.min() > 0.59 and f.max() < 1.41 and f.std() > 0.1 and y.min() >= 0 and y.max() <= 1


def test_decode_augment_shapes_and_determinism():
    g = torch.Generator().manual_seed(0)
    imgs = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for h, w in [(60, 80), (90, 45), (33, 33)]]
    enc = EncodedImages([encode_jpeg(i, quality=90) for i in imgs])

    def run():
        return decode_augment(enc, torch.device("cpu"), 24, torch.Generator().manual_seed(1), torch.Generator().manual_seed(2))

    a, b = run(), run()
    assert a.dtype == torch.uint8 and a.shape == (3, 3, 24, 24) and torch.equal(a, b)
    no_aug = decode_augment(enc, torch.device("cpu"), 33, torch.Generator(), torch.Generator(), jitter=(0, 0, 0), flip_p=0.0)
    assert no_aug.shape == (3, 3, 33, 33)
    assert len(decode_jpeg(enc.data)) == 3


@pytest.fixture(scope="module")
def jpeg_tree(tmp_path_factory):
    return write_fake_image_list(tmp_path_factory.mktemp("inet"), [6, 3, 1], shapes=((48, 64), (64, 40), (40, 40)))


def test_fit_with_device_decoding(jpeg_tree):
    L.seed_everything(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the synthetic lists match no published checksum
        dm = ImageNetLT(root=str(jpeg_tree), list_dir=str(jpeg_tree), image_size=32, batch_size=4, decode="device",
                        pin_memory=False)
        dm.num_classes_expected = None
        dm.setup("fit")
        batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch[0], EncodedImages) and len(batch[0]) == 4
    x, y, idx = dm.on_after_batch_transfer(batch, 0)
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (4,)
    model = CrossEntropy(backbone="tiny_cnn", num_classes=dm.num_classes, train_class_counts=dm.train_class_counts,
                         backbone_kwargs={"width": 4})
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        trainer.fit(model, dm)
    assert trainer.global_step == 3


def test_bad_decode_option_is_one_line(jpeg_tree):
    from ltbench.errors import DataError

    with pytest.raises(DataError, match="decode='gpu'; expected 'pil' or 'device'"):
        ImageNetLT(root=str(jpeg_tree), decode="gpu")
