"""The one all-reduce helper that models and methods share (ltbench.distributed)."""

import torch

from ltbench.distributed import all_reduce_sum
from tests.helpers import run_two_processes


def test_without_a_process_group_the_tensor_is_returned_unchanged():
    t = torch.tensor([1.0, 2.0])
    assert all_reduce_sum(t) is t and t.tolist() == [1.0, 2.0]


def _sum_worker(rank, world, port, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    t = torch.tensor([float(rank + 1), 10.0 * (rank + 1)])
    got = all_reduce_sum(t)
    out.put((rank, got is t, t.tolist()))
    dist.barrier()
    dist.destroy_process_group()


def test_two_processes_sum_in_place():
    got = sorted(run_two_processes(_sum_worker, results=2))
    assert got == [(0, True, [3.0, 30.0]), (1, True, [3.0, 30.0])]
