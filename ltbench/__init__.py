"""ltbench: long-tailed image classification benchmark on PyTorch Lightning."""

__version__ = "0.1.0"
