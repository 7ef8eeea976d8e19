"""How a reader draws batches from its features: the example order of each epoch (a pure function of seed and
epoch, so a run resumes at its `position`), batches grouped by length or cut by token budget, the shares of
distributed training and gradient accumulation, and the shards of distributed evaluation. `Reader` inherits
it; the methods are the reader's (`reader.batches()`, `reader.shard(...)`)."""
import copy
from typing import Any, Iterator, NamedTuple

import numpy as np

from mtl.components.readers.batching import budget_cuts
from mtl.errors import MtlError


class Part(NamedTuple):
    """One micro-batch of a process's share of a global batch; `real` is False for a stand-in (no example of
    the share; its loss counts with weight 0)."""

    batch: dict
    real: bool


def shard_bounds(size: int, index: int, count: int) -> tuple[int, int]:
    """[start, end) of contiguous share `index` of `count` over `size` items; the first `size % count`
    shares hold one more item."""
    base, extra = divmod(size, count)
    start = index * base + min(index, extra)
    return start, start + base + (index < extra)


class BatchDrawing:
    """The batch-drawing half of `Reader`: it reads the reader's `features`, `batch_size`, `shuffle`, `seed`,
    `group_by_length`, `max_tokens`, `num_epochs` and stream, collates through `collate`, and keeps the
    drawing state (`epoch`, `position`) that checkpoints save."""

    features: Any
    batch_size: int
    num_epochs: int | None
    epoch: int
    position: int
    _stream: Any

    def _epoch_order(self, epoch: int) -> np.ndarray:
        """The example order of one epoch: a pure function of (seed, epoch), so a position can be resumed."""
        if not self.shuffle:
            return np.arange(self.num_examples)
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)

    def _epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """Example indices of each batch of one epoch. With `group_by_length`, shuffled chunks of 50 batches
        are sorted by length before cutting, and the batches shuffled again: little padding, still random.
        With `max_tokens` the batches are cut by token budget (within each chunk when grouping)."""
        order, size = self._epoch_order(epoch), self.batch_size
        grouped = self.group_by_length and self.shuffle
        if self.max_tokens is None and not grouped:
            return [order[i:i + size] for i in range(0, len(order), size)]
        lengths = self.features.lengths()
        if not grouped:
            return budget_cuts(order, lengths, self.max_tokens, self.pad_to_multiple_of)
        chunk = size * 50
        parts = [part[np.argsort(-lengths[part], kind="stable")]
                 for part in (order[i:i + chunk] for i in range(0, len(order), chunk))]
        order = np.concatenate(parts)
        batches = [order[i:i + size] for i in range(0, len(order), size)] if self.max_tokens is None else \
            [b for part in parts for b in budget_cuts(part, lengths, self.max_tokens, self.pad_to_multiple_of)]
        shuffled = np.random.default_rng([self.seed, epoch, 1]).permutation(len(batches))
        return [batches[i] for i in shuffled]

    def batches(self) -> Iterator[dict]:
        """Training batches, epoch after epoch (forever when num_epochs is None); `position` counts the
        batches already drawn in the current epoch, so a run can resume where it stopped."""
        if self._stream is not None:
            yield from (self.collate(features) for features in self._stream.batches(self.batch_size))
            return
        for indices in self._batch_indices():
            yield self.collate([self.features[i] for i in indices])

    def sharded_batches(self, index: int = 0, count: int = 1, micro_batches: int = 1) -> Iterator[list["Part"]]:
        """Distributed training and gradient accumulation. The global batches are those of `batches()`
        (`batch_size` examples, same order, same epoch and position); of each, this process takes contiguous
        share `index` of `count` (sizes differ by at most one), cut into at most `micro_batches` parts, each
        collated on its own (a pairwise reader's rows stay with their pairs). A share with no example (a global
        batch smaller than `count`) gives one stand-in part (`real=False`) for the trainer to run with weight 0:
        every process must take part in each step's gradient all-reduce. Streaming, each process reads its own
        lines (mtl.components.readers.stream) and draws its share's rows from them."""
        if self._stream is not None:
            yield from self._streamed_shares(index, count, micro_batches)
            return
        for indices in self._batch_indices():
            start, end = shard_bounds(len(indices), index, count)
            share = indices[start:end]
            parts = [Part(self.collate([self.features[i] for i in share[a:b]]), True)
                     for a, b in (shard_bounds(len(share), m, micro_batches) for m in range(micro_batches)) if b > a]
            yield parts or [Part(self.collate([self.features[indices[0]]]), False)]

    def _streamed_shares(self, index: int, count: int, micro_batches: int) -> Iterator[list["Part"]]:
        self._stream.shard(index, count)
        start, end = shard_bounds(self.batch_size, index, count)
        for share in self._stream.batches(max(end - start, 1)):
            yield [Part(self.collate(share[a:b]), True)
                   for a, b in (shard_bounds(len(share), m, micro_batches) for m in range(micro_batches)) if b > a]

    def _batch_indices(self) -> Iterator[np.ndarray]:
        """The example indices of each training batch, advancing `epoch` and `position` as batches are drawn."""
        if not self.features:
            raise RuntimeError(f"{type(self).__name__}: call load_data before drawing batches")
        while self.num_epochs is None or self.epoch < self.num_epochs:
            epoch_batches = self._epoch_batches(self.epoch)
            while self.position < len(epoch_batches):
                indices = epoch_batches[self.position]
                self.position += 1
                yield indices
            self.epoch, self.position = self.epoch + 1, 0

    def iter_once(self) -> Iterator[dict]:
        """Every example once, in file order: for evaluation and prediction."""
        for start in range(0, self.num_examples, self.batch_size):
            yield self.collate(self.features[start:start + self.batch_size])

    def shard(self, index: int, count: int) -> "Reader":
        """Distributed evaluation: a reader over contiguous share `index` of `count` of the examples (sizes
        differ by at most one), sharing everything else. Decoded shard by shard and joined in index order, the
        records are those of the whole reader, in order, each example once."""
        if count == 1:
            return self
        start, end = shard_bounds(self.num_examples, index, count)
        other = copy.copy(self)
        other.features = self.features[start:end]
        return other

    def state_dict(self) -> dict:
        if self._stream is not None:
            return {"epoch": self.epoch, "position": self.position, "stream": self._stream.state_dict()}
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        if ("stream" in state) != (self._stream is not None):
            raise MtlError(f"{type(self).__name__}: the checkpoint was written by a "
                           f"{'streamed' if 'stream' in state else 'loaded'} reader, this one is "
                           f"{'streamed' if self._stream is not None else 'loaded'}: use the same kind to resume")
        if self._stream is not None:
            self._stream.load_state_dict(state["stream"])
