import pytest

from tests.helpers import REPO, load_benchmark_script


@pytest.mark.slow
def test_synthetic_cifar_runs_the_real_pipeline(tmp_path, monkeypatch):
    from ltbench.data import cifar

    monkeypatch.setattr(cifar, "MD5S", dict(cifar.MD5S))  # the benchmark adds its synthetic files' checksums
    bench = load_benchmark_script("synthetic_cifar")
    row = bench.main(["--config", str(REPO / "configs" / "ce_cifar10_lt.yaml"), "--steps", "3", "--precision", "32-true",
                      "--accelerator", "cpu", "--batch-size", "16", "--num-workers", "0", "--json", str(tmp_path / "r.json")])
    assert row["steps"] == 3 and row["batch_size"] == 16 and row["train_images_per_s"] > 0
    assert (tmp_path / "r.json").exists()
