"""One optimizer update: forward and backward over a batch, then clip, step, and the non-finite guard.

In a single process without gradient accumulation the batch goes through in one pass. Otherwise each
process (torch.distributed) holds a contiguous share of the global batch, cut into micro-batches, and each
head's loss is re-weighted so that the gradient is the single-process one. A head's loss is a mean over
its *units* (examples for a classifier, labelled tokens for a tagger or a masked LM, sentences for a CRF);
a micro-batch's loss counts with weight units / (units of the whole global batch, summed over processes),
times the world size because DDP averages gradients over processes. Summed over processes and micro-batches
this is exactly the mean over the global batch, whatever the shares' sizes or their numbers of labelled
tokens. A head whose loss is a mean over something else says so with a `loss_units(batch)` method.
"""
import logging
import math
import warnings
from typing import Any, Iterator

import torch

from mtl.components.readers.base import Part, Reader, shard_bounds
from mtl.errors import MtlError
from mtl.trainers import distributed
from mtl.trainers.clipping import clipped_step, gradient_norm
from mtl.trainers.device import autocast, to_device

log = logging.getLogger(__name__)


def batch_stream(reader: Reader, accum: int) -> Iterator[dict] | Iterator[list[Part]]:
    """What the loop draws from a task's reader: whole batches in a single process without accumulation,
    else this rank's micro-batches of each global batch (`Reader.sharded_batches`). A reader that brings its
    own `batches()` gets its collated batches cut by rows instead."""
    rank, world = distributed.rank(), distributed.world_size()
    if world == 1 and accum == 1:
        return reader.batches()
    if type(reader).batches is not Reader.batches:
        return (split_rows(batch, rank, world, accum) for batch in reader.batches())
    return reader.sharded_batches(rank, world, accum)


def split_rows(batch: dict, index: int, count: int, micro_batches: int) -> list[Part]:
    """`Reader.sharded_batches` for an already collated batch: share `index` of `count` of its rows, cut into
    micro-batches (tensors and per-row lists are sliced on their first dimension; the rest kept as is)."""
    size = len(batch["meta"]) if "meta" in batch else len(batch["input_ids"])
    start, end = shard_bounds(size, index, count)
    bounds = [(start + a, start + b) for a, b in (shard_bounds(end - start, m, micro_batches)
                                                  for m in range(micro_batches)) if b > a]
    return [Part(_rows(batch, a, b, size), True) for a, b in bounds] or [Part(_rows(batch, 0, 1, size), False)]


def _rows(batch: dict, start: int, end: int, size: int) -> dict:
    def cut(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == size:
            return value[start:end]
        return value[start:end] if isinstance(value, list) and len(value) == size else value
    return {key: cut(value) for key, value in batch.items()}


def loss_units(head: Any, batch: dict) -> float:
    """What `head`'s loss is a mean over, counted in `batch`: the head's own `loss_units(batch)` when it has
    one; sentences with at least one word for a CRF; else its labels that are not -100."""
    own = getattr(head, "loss_units", None)
    if callable(own):
        return float(own(batch))
    if getattr(head, "crf", None) is not None and "word_start_mask" in batch:
        return float((batch["word_start_mask"].sum(1) > 0).sum())
    labels = batch.get(head.label_fields[0]) if head is not None and head.label_fields else None
    if not isinstance(labels, torch.Tensor):
        return float(len(batch["input_ids"]))
    return float((labels != -100).sum())


def train_step(trainer: Any, task: Any, batch: dict | list[Part]) -> tuple[float, dict[str, float]]:
    """3-4. the task's heads add their losses over one encoder pass (per micro-batch); 5. backward, clip, step.

    A non-finite loss (or gradient norm) skips the update: no optimizer step, gradients dropped, weights
    and Adam moments untouched. The step still counts (global step, the task's step, the batch is used,
    the lr schedule advances), so the schedule and the budgets stay aligned with the global step and a
    resumed run stays exact. After `max_nonfinite_steps` such steps in a row training stops (MtlError).
    Every rank reaches the same verdict: the loss and the gradients it judges are the all-reduced ones."""
    if isinstance(batch, dict):
        value, head_losses = _whole(trainer, task, batch)
    else:
        value, head_losses = _parts(trainer, task, batch)
    problem = None if math.isfinite(value) else f"loss is {value}"
    if problem is None:
        norm = float(gradient_norm(trainer.model))  # computed either way: it guards against non-finite gradients
        if not math.isfinite(norm):
            problem = f"gradient norm is {norm}"
    if problem is None:
        clipped_step(trainer.optimizer, trainer.model, norm, trainer.adam.max_grad_norm)
        trainer._nonfinite_in_a_row = 0
    else:
        skip_step(trainer, task, problem, head_losses)
    with warnings.catch_warnings():  # a skipped first step: torch warns that the scheduler went first
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
        trainer.scheduler.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    return value, head_losses


def _whole(trainer: Any, task: Any, batch: dict) -> tuple[float, dict[str, float]]:
    """One process, one pass (`MultiTaskModel.task_loss`): backward only when the loss is finite."""
    batch = to_device(batch, trainer.device)
    with autocast(trainer.device, trainer.precision):
        loss, head_losses = trainer.model.task_loss(task.name, batch)
    value = sum(head_losses.values())
    if math.isfinite(value):
        loss.backward()
    return value, head_losses


def _parts(trainer: Any, task: Any, parts: list[Part]) -> tuple[float, dict[str, float]]:
    """This rank's micro-batches, each loss weighted by its share of the global batch's units (module doc).
    Every part goes backward, finite or not: under DDP each rank must join the gradient all-reduce, and a
    non-finite gradient then reaches every rank, which all skip the update together."""
    model = trainer.ddp if trainer.ddp is not None else trainer.model
    world = distributed.world_size()
    names = list(task.heads)
    units = torch.tensor([[loss_units(task.heads[h], p.batch) if p.real else 0.0 for h in names] for p in parts],
                         dtype=torch.float64)
    totals = distributed.all_reduce_sum(units.sum(0))
    # this rank's part of each head's global mean loss, kept on the device: one copy to the host per step
    means = torch.zeros(len(names), dtype=torch.float64, device=trainer.device)
    has_loss = set()
    for i, part in enumerate(parts):
        batch = to_device(part.batch, trainer.device)
        with distributed.no_sync(model, sync=i == len(parts) - 1):
            with autocast(trainer.device, trainer.precision):
                outputs = model(task.name, batch)
            weighted = []
            for j, name in enumerate(names):
                if "loss" not in outputs.get(name, {}):
                    continue
                has_loss.add(name)
                share = float(units[i, j] / totals[j]) if totals[j] > 0 else math.nan  # nothing to average: NaN
                loss = outputs[name]["loss"]
                weighted.append(loss * (share * world))
                means[j] += loss.detach().double() * share
            if not weighted:
                raise RuntimeError(f"task {task.name!r}: no head returned a loss; does the reader yield labels?")
            sum(weighted).backward()
    means = distributed.all_reduce_sum(means).tolist()
    head_losses = {name: means[j] for j, name in enumerate(names) if name in has_loss}
    return sum(head_losses.values()), head_losses


def skip_step(trainer: Any, task: Any, problem: str, head_losses: dict[str, float]) -> None:
    """Count a skipped update; warn (rank 0); stop after `max_nonfinite_steps` in a row."""
    step = trainer.global_step + 1
    trainer.skipped_steps[task.name] = trainer.skipped_steps.get(task.name, 0) + 1
    trainer._nonfinite_in_a_row += 1
    if distributed.is_main():
        heads = ", ".join(f"{name}={loss}" for name, loss in head_losses.items())
        log.warning("task %r, step %d: %s (head losses: %s); the update is skipped (%d skipped in a row, "
                    "training stops at %d)", task.name, step, problem, heads, trainer._nonfinite_in_a_row,
                    trainer.max_nonfinite_steps)
    if trainer._nonfinite_in_a_row >= trainer.max_nonfinite_steps:
        raise MtlError(f"task {task.name!r}, step {step}: {problem}; {trainer._nonfinite_in_a_row} steps in a row "
                       f"had a non-finite loss or gradient (max_nonfinite_steps={trainer.max_nonfinite_steps}), so "
                       "training stopped. The weights are still finite: the last checkpoint is usable. Lower the "
                       "lr, set max_grad_norm, train in fp32 (precision='fp32'), or check the task's data and "
                       "head for values that overflow")
