"""The base's per-training-step generator: keyed by (seed, epoch, rank, batch index), one per micro-batch."""

from collections import Counter

import numpy as np
import torch

from ltbench.runner import run
from tests.helpers import CE_DIGITS

QUIET = ["--trainer.enable_progress_bar", "false"]


def test_every_micro_batch_gets_its_own_generator_seeded_from_where_it_is(tmp_path):
    args = ["--model", "tests.helpers.StepSeedRecorder", "--model.init_args.backbone", "tiny_cnn", "--trainer.max_epochs", "2",
            "--trainer.accumulate_grad_batches", "2", "--trainer.limit_train_batches", "4", "--test_after_fit", "false",
            "--seed_everything", "7"]  # fmt: skip
    cli = run(["fit", "--config", CE_DIGITS, "--run_dir", str(tmp_path), *QUIET, *args])
    m = cli.model
    seen = m.step_seeds
    assert [(e, b) for e, b, _, _ in seen] == [(e, b) for e in range(2) for b in range(4)]
    # the key (seed, epoch, rank, batch index) and its derivation, which TSCNet's numbers depend on
    for epoch, batch_idx, _, seed in seen:
        state = np.random.SeedSequence([7, epoch, 0, batch_idx]).generate_state(2)
        assert seed == int(state[0]) << 32 | int(state[1])
    # two micro-batches per optimiser step, and each draws from a generator of its own
    steps = Counter(step for _, _, step, _ in seen)
    assert set(steps.values()) == {2}
    assert len({seed for *_, seed in seen}) == len(seen)
    assert m.step_generator(m.device) is None  # outside a training step


def test_the_generator_is_none_before_a_fit_and_on_another_device():
    from ltbench.methods import CrossEntropy
    from ltbench.methods.base import _step_generator

    m = CrossEntropy(backbone="tiny_cnn", in_chans=1, num_classes=10)
    assert m.step_generator(torch.device("cpu")) is None
    m.on_train_batch_start(None, 0)
    assert m.step_generator(torch.device("cpu")) is m._step_gen
    assert m._step_gen.initial_seed() == _step_generator(0, 0, 0, torch.device("cpu")).initial_seed()
    assert m.step_generator(torch.device("meta")) is None
