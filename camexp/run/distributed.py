"""Data-parallel training through ``torchrun`` (DistributedDataParallel: gloo on CPU, NCCL on
GPU). ``batch_size`` stays the global batch; each rank trains on its shard of every batch,
training metrics are summed across ranks, and only rank 0 writes the run folder.

    torchrun --nproc_per_node 2 -m camexp batch_size=256 ...
"""

import functools
import os
import shutil
import tempfile

import torch
import torch.distributed as dist

from camexp.errors import UserError


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def enabled() -> bool:
    return world_size() > 1


def setup(device_name: str) -> torch.device:
    """Join the process group torchrun describes; returns this rank's device."""
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def local_batch(global_batch: int) -> int:
    if global_batch % world_size():
        raise UserError(
            f"batch_size={global_batch} must divide evenly over {world_size()} processes"
        )
    return global_batch // world_size()


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    if not enabled():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def sum_across_ranks(values: torch.Tensor) -> torch.Tensor:
    if enabled() and dist.is_initialized():
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


@functools.cache
def side_run_dir() -> str:
    """Where Hydra may put the files of ranks other than 0 (they write nothing of their own)."""
    return tempfile.mkdtemp(prefix=f"camexp-rank{rank()}-")


def remove_side_run_dir(run_dir: str) -> None:
    """Remove this rank's scratch folder (never rank 0's run folder)."""
    if not is_main() and side_run_dir.cache_info().currsize and run_dir == side_run_dir():
        shutil.rmtree(run_dir, ignore_errors=True)
