import numpy as np
import pytest

from ltbench.data.samplers import LTSampler, class_index_lists, draw_epoch

COUNTS = [400, 100, 25, 9, 1]
TARGETS = np.repeat(np.arange(5), COUNTS)
N = len(TARGETS)


def _classes(mode, seed=0):
    lists = class_index_lists(TARGETS, 5)
    idx = draw_epoch(mode, lists, 20000, np.random.default_rng(seed))
    return idx, TARGETS[idx]


def test_class_index_lists_single_and_multi_label():
    lists = class_index_lists(TARGETS, 5)
    assert [len(x) for x in lists] == COUNTS
    multi = np.zeros((4, 3), dtype=int)
    multi[0, [0, 2]] = 1
    multi[1, 0] = 1
    multi[3, 2] = 1
    assert [x.tolist() for x in class_index_lists(multi, 3)] == [[0, 1], [], [0, 3]]


def test_instance_is_a_permutation():
    idx = draw_epoch("instance", class_index_lists(TARGETS, 5), N, np.random.default_rng(0))
    assert sorted(idx.tolist()) == list(range(N))


def test_class_balanced_uniform_over_classes():
    _, cls = _classes("class_balanced")
    freq = np.bincount(cls, minlength=5) / len(cls)
    assert np.allclose(freq, 0.2, atol=0.015)


def test_square_root_proportional_to_sqrt_counts():
    _, cls = _classes("square_root")
    expected = np.sqrt(COUNTS) / np.sqrt(COUNTS).sum()
    assert np.allclose(np.bincount(cls, minlength=5) / len(cls), expected, atol=0.015)


def test_class_aware_round_robin():
    idx, cls = _classes("class_aware")
    for start in range(0, 100, 5):  # every cycle visits each class exactly once
        assert sorted(cls[start : start + 5].tolist()) == [0, 1, 2, 3, 4]
    few = idx[cls == 3][:9]  # a class walks all its images before repeating one
    assert sorted(few.tolist()) == np.flatnonzero(TARGETS == 3).tolist()


def test_multilabel_class_balanced_picks_an_image_containing_the_class():
    rng = np.random.default_rng(0)
    y = (rng.random((300, 6)) < np.array([0.6, 0.3, 0.1, 0.05, 0.02, 0.01])).astype(int)
    lists = class_index_lists(y, 6)
    idx = draw_epoch("class_balanced", lists, 5000, np.random.default_rng(1))
    assert y[idx].sum(0)[5] > 5000 * 0.1  # rare class over-sampled far above its 1% frequency


@pytest.mark.parametrize("mode", ["instance", "class_balanced", "square_root", "class_aware"])
def test_sampler_seeded_deterministic_and_epoch_dependent(mode):
    a = LTSampler(TARGETS, 5, [(0, mode)], seed=3)
    b = LTSampler(TARGETS, 5, [(0, mode)], seed=3)
    a.set_epoch(1), b.set_epoch(1)
    assert list(a) == list(b)
    assert len(list(a)) == len(a) == N
    b.set_epoch(2)
    assert list(a) != list(b)


def test_sampler_ranks_partition_the_padded_epoch():
    world = 3
    shards = []
    for rank in range(world):
        s = LTSampler(TARGETS, 5, [(0, "class_balanced")], num_replicas=world, rank=rank, seed=0)
        s.set_epoch(4)
        shards.append(list(s))
    assert len({len(x) for x in shards}) == 1
    full = LTSampler(TARGETS, 5, [(0, "class_balanced")], seed=0)
    full.set_epoch(4)
    expected = list(full)
    total = shards[0].__len__() * world
    padded = expected + expected[: total - len(expected)]
    interleaved = [shards[i % world][i // world] for i in range(total)]
    assert interleaved == padded


def test_sampler_schedule_switches_by_epoch():
    s = LTSampler(TARGETS, 5, [(0, "instance"), (2, "class_balanced")])
    assert [s.mode_at(e) for e in range(4)] == ["instance", "instance", "class_balanced", "class_balanced"]
    s.set_epoch(3)
    assert np.bincount(TARGETS[list(s)], minlength=5)[4] > 50
    with pytest.raises(ValueError, match="unknown sampler"):
        LTSampler(TARGETS, 5, [(0, "balanced")])


def test_epoch_length_and_samples_per_class_visit():
    """DB-Loss's class-aware sampler: max count x C / 4 draws, 3 consecutive images per class visit."""
    epoch = COUNTS[0] * 5 // 4
    s = LTSampler(TARGETS, 5, [(0, "class_aware")], epoch_samples=epoch, samples_per_class=3)
    idx = list(s)
    assert len(s) == len(idx) == epoch
    cls = TARGETS[idx]
    for start in range(0, 60, 3):
        assert len(set(cls[start : start + 3].tolist())) == 1
    for start in range(0, 60, 15):  # five visits of three cover every class once
        assert sorted(set(cls[start : start + 15].tolist())) == [0, 1, 2, 3, 4]
    inst = LTSampler(TARGETS, 5, [(0, "instance")], epoch_samples=N + 10)
    drawn = list(inst)
    assert len(drawn) == N + 10 and sorted(drawn[:N]) == list(range(N))


def test_a_keyed_sampler_pairs_each_position_with_a_key_of_seed_epoch_and_position():
    def pairs(mode="class_balanced", seed=3, epoch=1):
        s = LTSampler(TARGETS, 5, [(0, mode)], seed=seed, keyed=True)
        s.set_epoch(epoch)
        return list(s)

    plain = LTSampler(TARGETS, 5, [(0, "class_balanced")], seed=3)
    plain.set_epoch(1)
    got = pairs()
    assert [i for i, _ in got] == list(plain)
    keys = [k for _, k in got]
    assert len(set(keys)) == len(keys) == N  # repeats of an index get their own keys
    assert got == pairs()
    assert [k for _, k in pairs(mode="instance")] == keys  # the position's key, whatever is drawn there
    for other in (pairs(epoch=2), pairs(seed=4)):
        assert not set(keys) & {k for _, k in other}


def test_keyed_ranks_hold_the_single_process_pairs():
    """Under DDP the key is that of the position in the global draw: the ranks' pairs interleave to the
    single-process run's, padding positions getting keys of their own."""
    world = 3
    shards = []
    for rank in range(world):
        s = LTSampler(TARGETS, 5, [(0, "square_root")], num_replicas=world, rank=rank, seed=0, keyed=True)
        s.set_epoch(4)
        shards.append(list(s))
    full = LTSampler(TARGETS, 5, [(0, "square_root")], seed=0, keyed=True)
    full.set_epoch(4)
    interleaved = [shards[i % world][i // world] for i in range(len(shards[0]) * world)]
    assert interleaved[:N] == list(full)
    assert len(interleaved) > N and len({k for _, k in interleaved}) == len(interleaved)
