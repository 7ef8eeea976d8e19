"""Teacher targets: computed once, kept on disk, memory-mapped while the student trains.

The teacher (one model folder, or several whose soft labels are averaged: an ensemble) reads the student's
training file with its own reader and tokenizer; each head hands on what `Head.teacher_signal` gives
(probabilities over its label space at the temperature, per sentence or per word). They are stored under
`cache_root/<key>/`, the key a sha256 of the teachers' folder checksums, the data file's bytes, the task, the
temperature and this format's version: the same teachers on the same data are never run twice, and a changed
teacher or file never reuses stale targets. Rows are found by the example's key (`example_key`): its line in
the file (`meta["line"]`), or for readers whose examples are not lines (SQuAD questions) a number drawn from its
id, so the student's reader, whatever its tokenizer and windows, finds them.
"""
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mtl.checksums import file_checksum, folder_checksum

FORMAT = 1


@dataclass
class TargetTable:
    """One head's targets: example key -> rows of `values` (one row per sentence head, one per word)."""

    keys: np.ndarray  # (n,) example keys
    offsets: np.ndarray  # (n + 1,) row offsets of each example
    values: np.ndarray  # (rows, classes) float32, memory-mapped once saved
    per_word: bool
    names: list[str] | None = None  # the teacher's label names by id (its labels.json)

    def __post_init__(self) -> None:
        self._index = {int(key): i for i, key in enumerate(self.keys)}

    def rows(self, key: int) -> np.ndarray | None:
        i = self._index.get(int(key))
        return None if i is None else self.values[self.offsets[i]:self.offsets[i + 1]]

    def collate(self, metas: Sequence[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """(targets, mask) for a batch: (B, K) and (B,) per sentence, (B, W, K) and (B, W) per word; an example
        the teacher never saw gets mask 0."""
        found = [self.rows(example_key(meta)) for meta in metas]
        classes = self.values.shape[1]
        if not self.per_word:
            targets = np.stack([f[0] if f is not None else np.zeros(classes, np.float32) for f in found])
            return torch.from_numpy(targets), torch.tensor([f is not None for f in found])
        width = max([len(f) for f in found if f is not None], default=0)
        targets = np.zeros((len(found), width, classes), np.float32)
        mask = np.zeros((len(found), width), bool)
        for row, rows in enumerate(found):
            if rows is not None:
                targets[row, :len(rows)], mask[row, :len(rows)] = rows, True
        return torch.from_numpy(targets), torch.from_numpy(mask)

    def save(self, folder: Path) -> None:
        for name in ("keys", "offsets", "values"):
            np.save(folder / f"{name}.npy", getattr(self, name))
        about = {"per_word": self.per_word, "names": self.names}
        (folder / "table.json").write_text(json.dumps(about, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def open(cls, folder: Path) -> "TargetTable":
        about = json.loads((folder / "table.json").read_text(encoding="utf-8"))
        return cls(np.load(folder / "keys.npy"), np.load(folder / "offsets.npy"),
                   np.load(folder / "values.npy", mmap_mode="r"), about["per_word"], about.get("names"))


def example_key(meta: dict) -> int:
    """The example a feature came from, the same under any tokenizer: its line, else its id's sha256 (63 bits)."""
    if "line" in meta:
        return int(meta["line"])
    digest = hashlib.sha256(str(meta["id"]).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def data_digest(source: str | Path | Sequence[str]) -> str:
    """The data's identity: a file's (or a folder's) bytes, or the texts themselves."""
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        return folder_checksum(source)
    if isinstance(source, (str, Path)):
        return file_checksum(source)
    return hashlib.sha256(json.dumps(list(source), ensure_ascii=False).encode("utf-8")).hexdigest()


def cache_key(teacher_digests: Sequence[str], task: str, data: str, temperature: float, fields: Any) -> str:
    blob = json.dumps({"format": FORMAT, "teachers": sorted(teacher_digests), "task": task, "data": data,
                       "temperature": temperature, "fields": fields}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def average(tables: list[dict[str, TargetTable]]) -> dict[str, TargetTable]:
    """An ensemble's targets: per example, the mean of its teachers' distributions (per word over the words
    every teacher kept: tokenizers may truncate at different places)."""
    if len(tables) == 1:
        return tables[0]
    averaged = {}
    for field, first in tables[0].items():
        if any(t[field].names != first.names for t in tables):
            raise ValueError(f"the teachers of an ensemble disagree on the labels of {field!r}: they must share "
                             "label maps to be averaged")
        keys = [k for k in first.keys if all(t[field].rows(k) is not None for t in tables)]
        rows = []
        for key in keys:
            found = [t[field].rows(key) for t in tables]
            width = min(len(f) for f in found)
            rows.append(np.mean([f[:width] for f in found], axis=0, dtype=np.float32))
        averaged[field] = pack(np.array(keys, np.int64), rows, first.per_word, first.values.shape[1], first.names)
    return averaged


def pack(keys: np.ndarray, rows: list[np.ndarray], per_word: bool, classes: int,
         names: list[str] | None = None) -> TargetTable:
    offsets = np.zeros(len(rows) + 1, np.int64)
    offsets[1:] = np.cumsum([len(r) for r in rows])
    values = np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, classes), np.float32)
    return TargetTable(keys, offsets, values, per_word, names)


def store(tables: dict[str, TargetTable], folder: Path, about: dict) -> dict[str, TargetTable]:
    """Write the tables whole or not at all (a temporary folder renamed into place), then open them mapped.
    Another process may have stored the same key meanwhile (every rank of a torchrun labels its data): the
    same teachers on the same data give the same targets, so its folder is kept and ours dropped."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        for field, table in tables.items():
            (work / field).mkdir()
            table.save(work / field)
        (work / "about.json").write_text(json.dumps(about, indent=1), encoding="utf-8")
        os.replace(work, folder)
    except OSError:
        shutil.rmtree(work, ignore_errors=True)
        if not (folder / "about.json").is_file():
            raise
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return {field: TargetTable.open(folder / field) for field in tables}


def open_cached(folder: Path) -> dict[str, TargetTable] | None:
    if not (folder / "about.json").is_file():
        return None
    return {path.name: TargetTable.open(path) for path in sorted(folder.iterdir()) if path.is_dir()}
