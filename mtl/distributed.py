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
    """This process's global rank: the group's, or before it is joined, the one torchrun gave it (RANK)."""
    if active():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0")) if launched() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 logs, writes TensorBoard and metrics.jsonl, and saves checkpoints; the others only train.
    Known from the launcher's RANK before the group is joined (a command's first lines and files)."""
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

    How DDP learns which parameters a step trains is chosen per run (`ddp_options`). The loss balancer's
    parameters (uncertainty weighting's log-variances) are used after the forward, where DDP cannot see
    them: DDP leaves them alone and the step averages their gradients itself (`sync_ignored_gradients`).
    Buffers are not broadcast at each forward: an encoder's buffers are constants, and construction already
    copied rank 0's weights and buffers to every rank."""
    if not active():
        return None
    if isinstance(wrapped, nn.parallel.DistributedDataParallel) and wrapped.module is model:
        return wrapped
    ddp = nn.parallel.DistributedDataParallel
    quiet = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(ddp).parameters
             else {"broadcast_buffers": False})
    ddp._set_params_and_buffers_to_ignore_for_model(model, [name for name, _ in _ignored(model)])
    return ddp(model, **ddp_options(model), **quiet)


def ddp_options(model: nn.Module) -> dict[str, bool]:
    """A step runs the encoder and the heads of one task (`MultiTaskModel.forward`). When every task has the
    same trainable head parameters (one task, or tasks that share their heads), every step trains the same
    set: `static_graph`, with which DDP finds the parameters no step reaches (the pooler under heads that
    read the [CLS] vector) once, in the first step, and never searches again. Otherwise a step of one task
    leaves the other tasks' heads (and LoRA adapters) without a gradient, a different set from step to step: only
    `find_unused_parameters`, which walks the autograd graph after every forward, keeps DDP from waiting
    for those gradients forever."""
    heads = getattr(model, "heads", None)
    if not isinstance(heads, nn.ModuleDict):
        return {"find_unused_parameters": True}  # not mtl's model: nothing known of its steps
    if getattr(getattr(model, "balancer", None), "per_loss_gradients", False):
        return {}  # every backward runs under no_sync and the step averages gradients itself (PCGrad)
    if len(heads) > 1 and getattr(getattr(model, "backbone", None), "adapters", None):
        return {"find_unused_parameters": True}  # each task's step trains its own LoRA adapter
    trained = [{id(p) for p in task_heads.parameters() if p.requires_grad} for task_heads in heads.values()]
    if all(own == trained[0] for own in trained):
        return {"static_graph": True}
    return {"find_unused_parameters": True}


def _ignored(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The trainable parameters used outside the model's forward: its loss balancer's, in a fixed order."""
    balancer = getattr(model, "balancer", None)
    if not isinstance(balancer, nn.Module):
        return []
    return [(f"balancer.{name}", p) for name, p in balancer.named_parameters() if p.requires_grad]


def sync_ignored_gradients(ddp: nn.Module | None) -> None:
    """After a step's last backward: the mean over processes of the gradients DDP left alone (`wrap`). Every
    rank trains the same task at each step, so the same ones have a gradient on every rank."""
    if not isinstance(ddp, nn.parallel.DistributedDataParallel):
        return
    params = [p for _, p in _ignored(ddp.module) if p.grad is not None]
    if params:
        total = all_reduce_sum(torch.cat([p.grad.reshape(-1) for p in params])) / world_size()
        offset = 0
        for param in params:
            param.grad.copy_(total[offset:offset + param.numel()].view_as(param.grad))
            offset += param.numel()


def no_sync(model: nn.Module, sync: bool) -> ContextManager:
    """Gradient accumulation: DDP all-reduces only on the backward of the last micro-batch (`sync`). Under
    `static_graph` DDP learns the graph on its first backward, which must all-reduce: the run's first step
    then all-reduces after every micro-batch (the sum of the averages is the average of the sums)."""
    if not isinstance(model, nn.parallel.DistributedDataParallel):
        return nullcontext()
    if sync or (model.static_graph and not getattr(model, "graph_learnt", False)):
        model.graph_learnt = True
        return nullcontext()
    return model.no_sync()
