"""What the loop draws from a task's reader: whole batches, or this process's micro-batches of each global
batch (torch.distributed, gradient accumulation). How their losses are weighted is mtl.trainers.step's job.
"""
from typing import Any, Iterator

import torch

from mtl.components.readers.base import Reader
from mtl.components.readers.batch_drawing import Part, shard_bounds
from mtl import distributed


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
