"""torch.distributed, optional: joining the process group `torchrun` describes, rank helpers, collectives.

Nothing here does anything in a process that `torchrun` (or `torch.distributed.run`) did not launch with
WORLD_SIZE > 1: every helper then answers as for a single process (rank 0 of 1) and collectives return their
input. Under torchrun the trainer joins the group the first time it trains, evaluates or predicts (gloo for
a CPU, nccl for a GPU), unless the user's script joined one first, which is then used as it is.

Records and other Python objects travel through a gloo group (nccl moves only GPU tensors); tensors through
the default group, on the GPU when its backend is nccl.
"""
import atexit
import inspect
import logging
import os
from contextlib import nullcontext
from typing import Any, ContextManager

import torch
import torch.distributed as dist
from torch import nn

from mtl.errors import MtlError

log = logging.getLogger(__name__)
_groups: dict[str, Any] = {}  # the gloo group for objects, made once per process group


def launched() -> bool:
    """True when a launcher (torchrun) started this process as one of several (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 logs, writes TensorBoard and metrics.jsonl, and saves checkpoints; the others only train."""
    return rank() == 0


def init(device: torch.device) -> bool:
    """Join the process group torchrun describes (gloo on a CPU, nccl on a GPU) unless one exists or this
    process was not launched as one of several; returns whether training is distributed."""
    if not dist.is_available() or dist.is_initialized() or not launched():
        return active()
    if device.type == "cuda":
        torch.cuda.set_device(device)  # nccl binds each process to its own GPU
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    atexit.register(teardown)
    if is_main():
        log.info("training on %d processes (torch.distributed, %s)", world_size(), dist.get_backend())
    return active()


def teardown() -> None:
    """Leave the process group (registered at exit by `init`; safe to call twice)."""
    _groups.clear()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (e.g. until rank 0 has written a checkpoint the others will read)."""
    if active():
        dist.barrier(group=_object_group())


def _object_group() -> Any:
    """gloo for Python objects: the default group when it is gloo, else a gloo group made once (a collective
    call, so it is made on the first object collective, which every rank reaches in the same order)."""
    if dist.get_backend() == "gloo":
        return None
    key = str(id(dist.group.WORLD))
    if key not in _groups:
        _groups[key] = dist.new_group(backend="gloo")
    return _groups[key]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum over ranks (a new tensor on `tensor`'s device; the input itself with one rank)."""
    if not active():
        return tensor
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    total = tensor.detach().to(device).clone()
    dist.all_reduce(total)
    return total.to(tensor.device)


def gather_objects(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank (`[value]` in a single process)."""
    if not active():
        return [value]
    values = [None] * world_size()
    dist.all_gather_object(values, value, group=_object_group())
    return values


def gather_records(records: list, metas: list) -> tuple[list, list]:
    """Evaluation: each rank decoded a contiguous shard of the examples (`Reader.shard`); concatenated in
    rank order, the shards are the whole data set in file order, each example once."""
    if not active():
        return records, metas
    parts = gather_objects((records, metas))
    return [r for part in parts for r in part[0]], [m for part in parts for m in part[1]]


def check_same(what: str, value: Any) -> None:
    """Fail, naming the ranks that differ, when `value` is not the same on every rank (say, the number of
    steps planned: ranks that disagree would wait for each other forever)."""
    values = gather_objects(repr(value))
    odd = [r for r, v in enumerate(values) if v != values[0]]
    if odd:
        raise MtlError(f"{what} differs between ranks (rank 0: {values[0][:200]}; rank {odd[0]}: "
                       f"{values[odd[0]][:200]}); every process must run the same script on the same data "
                       "with the same seeds")


def wrap(model: nn.Module, wrapped: nn.Module | None = None) -> nn.Module | None:
    """`model` in DistributedDataParallel (None in a single process); `wrapped` is returned when it already
    wraps `model` (a second wrapper would all-reduce every gradient twice).

    find_unused_parameters: each step trains one task, so the other tasks' heads get no gradient (they keep
    None, as in a single process). Buffers are not broadcast at each forward: an encoder's buffers are
    constants, and construction already copied rank 0's weights and buffers to every rank."""
    if not active():
        return None
    if isinstance(wrapped, nn.parallel.DistributedDataParallel) and wrapped.module is model:
        return wrapped
    quiet = ({"forward_sync_buffers": False} if "forward_sync_buffers" in
             inspect.signature(nn.parallel.DistributedDataParallel).parameters else {"broadcast_buffers": False})
    return nn.parallel.DistributedDataParallel(model, find_unused_parameters=True, **quiet)


def no_sync(model: nn.Module, sync: bool) -> ContextManager:
    """Gradient accumulation: DDP all-reduces only on the backward of the last micro-batch (`sync`)."""
    if sync or not isinstance(model, nn.parallel.DistributedDataParallel):
        return nullcontext()
    return model.no_sync()
