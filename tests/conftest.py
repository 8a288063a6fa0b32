"""Keep tests off the network: no Hugging Face downloads, no W&B runs."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
