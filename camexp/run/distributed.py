"""Data-parallel training through ``torchrun`` (DistributedDataParallel: gloo on CPU, NCCL on
GPU). ``batch_size`` stays the global batch; each rank trains on its shard of every batch,
training metrics are summed across ranks, and only rank 0 writes the run folder.

    torchrun --nproc_per_node 2 -m camexp batch_size=256 ...
"""

import functools
import io
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
    # a net that leaves a parameter without a gradient in some epochs (AirNet's frozen whitening
    # bias) needs DDP to look for it, or the next step waits for a reduction that never comes
    unused = any(getattr(m, "leaves_parameters_unused", False) for m in model.modules())
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=ids, find_unused_parameters=unused
    )


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


def side_run_overrides(args: list[str]) -> list[str]:
    """The command line of this rank: ranks other than 0 run Hydra in a scratch folder of their
    own (its camexp.log included), whatever ``hydra.run.dir`` or ``resume`` the command names;
    rank 0 owns the run folder and hands the resume state to the others (trainer.py)."""
    if is_main():
        return list(args)
    kept = [a for a in args if not a.lstrip("+").startswith(("hydra.run.dir=", "hydra.sweep.dir="))]
    return [*kept, f"hydra.run.dir={side_run_dir()}"]


def remove_side_run_dir(run_dir: str) -> None:
    """Remove this rank's scratch folder (never rank 0's run folder)."""
    if not is_main() and side_run_dir.cache_info().currsize and run_dir == side_run_dir():
        shutil.rmtree(run_dir, ignore_errors=True)


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on one (a collective: every rank must call it)."""
    if not (enabled() and dist.is_initialized()):
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def to_bytes(obj) -> bytes:
    """Tensors and plain values as bytes: object collectives pickle bytes only, never tensors
    (unpickling a tensor storage sent that way fails in torch 2.x)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def from_bytes(data: bytes):
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (a collective)."""
    if not (enabled() and dist.is_initialized()):
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, to_bytes(obj))
    return [from_bytes(data) for data in out]


def broadcast_from_main(obj):
    """Rank 0's ``obj`` on every rank (a collective): the others never read the run folder."""
    if not (enabled() and dist.is_initialized()):
        return obj
    box = [to_bytes(obj) if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return from_bytes(box[0])
