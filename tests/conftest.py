"""Keep tests off the network: no Hugging Face downloads, no W&B runs. Fixtures shared by several files."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")


@pytest.fixture(scope="module")
def small_cifar(tmp_path_factory):
    """Fake CIFAR-100 pickles (60 train images per class) and the MD5s of their files."""
    from ltbench.data.synthetic import write_fake_cifar

    root = tmp_path_factory.mktemp("cifar")
    return root, write_fake_cifar(root, datasets=("cifar100",), cifar100_per_class=60)


@pytest.fixture
def cifar_dm(small_cifar, monkeypatch):
    """CIFAR100LT(**kw) over ``small_cifar`` at rho = 10, its MD5 table pointed at the fixture."""
    from ltbench.data import cifar

    root, md5s = small_cifar
    monkeypatch.setattr(cifar, "MD5S", md5s)
    return lambda **kw: cifar.CIFAR100LT(root=str(root), imb_ratio=10, pin_memory=False, **kw)
