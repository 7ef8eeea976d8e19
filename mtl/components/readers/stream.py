"""Streaming (`Reader.load_stream`): training batches from a file, or a folder of shards, larger than memory.

Lines are read in order, tokenized `chunk_lines` at a time and held in a shuffle buffer of at most
`buffer_size` examples (plus one chunk); each batch draws its rows from the buffer with a seeded generator, so
memory is bounded by the buffer, never by the corpus. A pass over the data ends when the buffer runs dry (its
last batch may be short); the next pass reads the data again with a new generator, for as long as the trainer
asks: the size of a streamed corpus is not known up front, so budgets are given in steps (`steps_per_epoch`).

Exact resume: the state is the pass, where the next line starts (shard, byte offset, line number, ordinal),
where each buffered example's line starts (re-read and re-tokenized on restore) and the generator's state.
Under torchrun each rank reads every `world`-th example line (ordinal % world == rank), draws its own share of
each batch (`shard_bounds(batch_size, rank, world)` rows) with its own generator, and never waits for another.
"""
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import numpy as np
import torch

from mtl.components.readers.feature import Feature
from mtl.components.readers.files import decode_line, path_kind
from mtl.errors import DataError, MtlError

log = logging.getLogger(__name__)
READERS_LOG = logging.getLogger("mtl.components.readers")
CHUNKS_PER_LINE = 1 << 20  # meta["index"] = ordinal * CHUNKS_PER_LINE + chunk: unique per feature in a pass


class Cursor(NamedTuple):
    """Where a line starts: shard index, byte offset, line number in the shard, example-line ordinal in the pass."""

    shard: int
    offset: int
    line: int
    ordinal: int


START = Cursor(0, 0, 1, 0)


def shard_files(path: str | Path) -> list[Path]:
    """A file alone, or every file of a folder (hidden ones skipped) in name order."""
    path = Path(path)
    kind = path_kind(path)
    if kind == "file":
        return [path]
    if kind != "folder":
        raise DataError(str(path), None, "no such file or folder", "give a text file or a folder of shards")
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DataError(str(path), None, "the folder holds no file", "put the corpus shards in it")
    return files


def lines_from(files: list[Path], cursor: Cursor) -> Iterator[tuple[Cursor, Cursor, str]]:
    """(where the line starts, where the next one starts, text) of each non-blank line from `cursor` on, to the
    end of the last shard. Ordinals count the non-blank lines of the pass (a header too)."""
    shard, offset, line, ordinal = cursor
    for shard in range(shard, len(files)):
        with open(files[shard], "rb") as file:
            file.seek(offset)
            while raw := file.readline():
                here = Cursor(shard, offset, line, ordinal)
                offset, line = offset + len(raw), line + 1
                text = _text(raw, files[shard], here)
                if text.strip():
                    ordinal += 1
                    yield here, Cursor(shard, offset, line, ordinal), text
        offset, line = 0, 1


def line_at(files: list[Path], shard: int, offset: int, line: int) -> str:
    """The text of the line that starts at `offset` of shard `shard` (restoring a buffer)."""
    with open(files[shard], "rb") as file:
        file.seek(offset)
        return _text(file.readline(), files[shard], Cursor(shard, offset, line, 0))


def _text(raw: bytes, path: Path, here: Cursor) -> str:
    """A raw line as text: a BOM at the start of a shard and the line break dropped, UTF-8 checked."""
    raw = raw[3:] if here.offset == 0 and raw.startswith(b"\xef\xbb\xbf") else raw
    return decode_line(raw[:-1] if raw.endswith(b"\n") else raw, str(path), here.line)


@contextmanager
def quiet_readers(quiet: bool) -> Iterator[None]:
    """Readers' per-file warnings (truncation, unseen labels) once per stream, not once per chunk."""
    level = READERS_LOG.level
    if quiet:
        READERS_LOG.setLevel(logging.ERROR)
    try:
        yield
    finally:
        READERS_LOG.setLevel(level)


class Stream:
    """The batches of one streamed training reader (see the module doc). `reader`: the Reader that owns it
    (not imported here: the reader module imports this one); its hooks parse and tokenize lines."""

    def __init__(self, reader: Any, path: str | Path, steps_per_epoch: int, buffer_size: int,
                 chunk_lines: int) -> None:
        self.reader, self.files, self.path = reader, shard_files(path), str(path)
        self.steps_per_epoch, self.buffer_size, self.chunk_lines = steps_per_epoch, buffer_size, chunk_lines
        self.rank, self.world, self.drawn, self.chunks_read = 0, 1, 0, 0
        self.label_checks: list[tuple[str, int]] = []  # (field, num_classes) of the heads fed by this reader
        self._start_pass(0)

    def _start_pass(self, number: int) -> None:
        self.pass_number, self.cursor, self.buffer, self.exhausted = number, START, [], False
        self.pass_features = 0  # features read in this pass: none at the end of it means no data
        self.rng = np.random.default_rng([self.reader.seed, number, self.rank, self.world])
        self._lines: Iterator | None = None

    def shard(self, rank: int, world: int) -> None:
        """Read as rank `rank` of `world` (before the first batch, or on a resume with the same world)."""
        if (rank, world) == (self.rank, self.world):
            return
        if self.drawn:
            raise MtlError(f"{self.path}: a stream read by {self.world} process(es) cannot continue with {world}")
        self.rank, self.world = rank, world
        self._start_pass(self.pass_number)

    def batches(self, size: int) -> Iterator[list[Feature]]:
        """Batches of `size` rows (this rank's share), forever; the reader's `epoch` follows the pass (MLM masks)."""
        while True:
            self._fill()
            if not self.buffer:
                if not self.pass_features:
                    where = f" for process {self.rank} of {self.world}" if self.world > 1 else ""
                    raise DataError(self.path, None, f"no example in the data{where}", "give a file with examples")
                self._start_pass(self.pass_number + 1)
                continue
            picked = self._draw(min(size, len(self.buffer)))
            self.drawn += 1
            self.reader.epoch = self.pass_number
            yield picked

    def _draw(self, count: int) -> list[Feature]:
        """`count` rows from the buffer: each a seeded uniform pick, swapped with the last and removed (without
        shuffling: the first `count`, in file order)."""
        if not self.reader.shuffle:
            picked, self.buffer = self.buffer[:count], self.buffer[count:]
            return [feature for feature, _ in picked]
        features = []
        for _ in range(count):
            index = int(self.rng.integers(len(self.buffer)))
            self.buffer[index], self.buffer[-1] = self.buffer[-1], self.buffer[index]
            features.append(self.buffer.pop()[0])
        return features

    def _fill(self) -> None:
        while not self.exhausted and len(self.buffer) < self.buffer_size:
            self._read_chunk()

    def _read_chunk(self) -> None:
        """The next `chunk_lines` example lines of this rank, tokenized into the buffer."""
        if self._lines is None:
            self._lines = lines_from(self.files, self.cursor)
        taken: list[tuple[Cursor, str]] = []
        for here, following, text in self._lines:
            self.cursor = following
            if here.ordinal % self.world == self.rank:
                taken.append((here, text))
                if len(taken) == self.chunk_lines:
                    break
        else:
            self.exhausted = True
        features = self._featurize(taken)
        self.buffer += features
        self.pass_features += len(features)
        self.chunks_read += 1

    def _featurize(self, lines: list[tuple[Cursor, str]]) -> list[tuple[Feature, tuple]]:
        """Features of lines (shard by shard, so errors name the right file), each with its position key
        (shard, offset, line, ordinal, chunk) and a pass-unique meta["index"]."""
        out = []
        for shard in sorted({here.shard for here, _ in lines}):
            mine = [(here, text) for here, text in lines if here.shard == shard]
            where = {here.line: here for here, _ in mine}
            path, chunk_of = str(self.files[shard]), {}
            source, self.reader.input_file = self.reader.input_file, path
            try:
                with quiet_readers(self.chunks_read > 0):
                    examples = self.reader._examples_from_lines(path, [(h.line, text) for h, text in mine])
                    features = list(self.reader._featurize(examples))
            finally:
                self.reader.input_file = source
            check_label_ids(features, self.label_checks, path)
            for feature in features:
                here = where[feature.meta["line"]]
                chunk = chunk_of[here.line] = chunk_of.get(here.line, -1) + 1
                feature.meta["index"] = here.ordinal * CHUNKS_PER_LINE + chunk
                out.append((feature, (*here, chunk)))
        return out

    # ---- exact resume -------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        keys = torch.tensor([key for _, key in self.buffer], dtype=torch.long).reshape(-1, 5)
        return {"pass": self.pass_number, "cursor": list(self.cursor), "buffer": keys, "exhausted": self.exhausted,
                "rng": self.rng.bit_generator.state, "rank": self.rank, "world": self.world, "drawn": self.drawn,
                "pass_features": self.pass_features}

    def load_state_dict(self, state: dict) -> None:
        self.rank, self.world = int(state["rank"]), int(state["world"])
        self._start_pass(int(state["pass"]))
        self.cursor, self.exhausted = Cursor(*map(int, state["cursor"])), bool(state["exhausted"])
        self.rng.bit_generator.state = state["rng"]
        self.drawn, self.chunks_read = int(state["drawn"]), 1
        self.buffer = self._reread([tuple(row) for row in state["buffer"].tolist()])
        self.pass_features = int(state["pass_features"])

    def _reread(self, keys: list[tuple]) -> list[tuple[Feature, tuple]]:
        """The buffer as it was: each key's line read again at its offset and tokenized, in the saved order."""
        lines = {key[:4]: line_at(self.files, *key[:3]) for key in keys}
        rebuilt = {key: pair for pair in self._featurize([(Cursor(*k), text) for k, text in lines.items()])
                   for key in [pair[1]]}
        missing = [key for key in keys if key not in rebuilt]
        if missing:
            raise MtlError(f"{self.files[missing[0][0]]}, line {missing[0][2]}: changed since the checkpoint was "
                           "written (a streamed file must stay as it was to resume)")
        return [rebuilt[key] for key in keys]


def check_label_ids(features: list[Feature], checks: list[tuple[str, int]], path: str) -> None:
    """Every label id within its head's classes: a clear error naming the line, never torch's."""
    for field, num_classes in checks:
        for feature in features:
            value = feature.fields.get(field)
            ids = value if isinstance(value, list) else [value]
            bad = [i for i in ids if i is not None and i != -100 and not 0 <= i < num_classes]
            if bad:
                raise DataError(path, feature.meta.get("line"),
                                f"{field} {bad[0]} is out of range for a head with {num_classes} classes",
                                f"ids are 0..{num_classes - 1}; fix the label or the head's num_classes")
