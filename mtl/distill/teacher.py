"""A teacher: one model folder, or several (an ensemble: their soft labels averaged), run once per data set.

`Teacher(folders).targets(data)` returns each head's targets for the examples of `data` (a file or folder the
task's reader reads, or a list of unlabelled texts), from the cache when the same teachers already labelled
the same data at the same temperature; otherwise the teachers are loaded (as `mtl.load` loads any folder:
safe loading applies), run in inference mode, and their outputs stored (mtl.distill.targets).
"""
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from mtl.checksums import folder_checksum
from mtl.components.heads.distill import RELATIONS, token_relations
from mtl.distill.targets import (TargetTable, average, cache_key, data_digest, example_key, open_cached,
                                 pack, store)
from mtl.errors import MtlError
from mtl.model.device import autocast, to_device
from mtl.model.task import PredictTask
from mtl.predictor import Predictor, load


def default_cache() -> Path:
    """`$MTL_HOME/teacher_targets` (default `~/.cache/mtl/teacher_targets`), beside the assembled encoders."""
    return Path(os.environ.get("MTL_HOME", Path.home() / ".cache" / "mtl")) / "teacher_targets"


class Teacher:
    """`folders`: one mtl model folder or several (averaged); `task`: which of their tasks teaches (None: the
    task of the same name as the student's, or a folder's only task); `temperature` softens the targets."""

    def __init__(self, folders: str | Path | Sequence[str | Path], task: str | None = None,
                 temperature: float = 2.0, precision: str = "auto", batch_size: int = 64,
                 cache_dir: str | Path | None = None) -> None:
        self.folders = [Path(f) for f in ([folders] if isinstance(folders, (str, Path)) else folders)]
        if not self.folders:
            raise MtlError("Teacher: give at least one model folder")
        for folder in self.folders:
            if not folder.is_dir():
                raise MtlError(f"Teacher: {folder} does not exist (a folder written by mtl train/export)")
        self.task, self.temperature, self.precision = task, float(temperature), precision
        self.batch_size = batch_size
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache()
        self._digests: list[str] | None = None

    def targets(self, data: str | Path | Sequence[str], task: str | None = None,
                file_format: str | None = None, hidden: bool = False) -> dict[str, TargetTable]:
        """Label field -> targets for every example of `data` (computed once, then read from the cache);
        `hidden`: also the token relations of the last hidden states (under `RELATIONS`)."""
        task = self.task or task
        self._digests = self._digests or [folder_checksum(f) for f in self.folders]
        fields = [file_format, RELATIONS] if hidden else file_format  # the key of a run without stays as it was
        key = cache_key(self._digests, str(task), data_digest(data), self.temperature, fields)
        folder = self.cache_dir / key
        cached = open_cached(folder)
        if cached is not None:
            return cached
        tables = average([self._run(f, data, task, file_format, hidden) for f in self.folders])
        about = {"teachers": [str(f) for f in self.folders], "task": task, "temperature": self.temperature,
                 "data": str(data) if isinstance(data, (str, Path)) else f"{len(data)} texts",
                 "examples": {field: len(table.keys) for field, table in tables.items()}}
        return store(tables, folder, about)

    def _run(self, folder: Path, data: str | Path | Sequence[str], task_name: str | None,
             file_format: str | None, hidden: bool) -> dict[str, TargetTable]:
        predictor = load(folder, precision=self.precision)
        task = _pick(predictor, task_name, folder)
        task.reader.use_label_names(task.label_names)  # the teacher's own label maps, as it was trained
        if isinstance(data, (str, Path)):
            reader = task.reader.eval_reader(data, file_format, batch_size=self.batch_size)
        else:
            reader = task.reader.from_texts(list(data), batch_size=self.batch_size)
        return _signals(predictor, task, reader, self.temperature, hidden)


def _pick(predictor: Predictor, name: str | None, folder: Path) -> PredictTask:
    names = [task.name for task in predictor.tasks]
    if name in names:
        return predictor.tasks[names.index(name)]
    if len(names) == 1:
        return predictor.tasks[0]
    raise MtlError(f"teacher {folder} has tasks {names}: name the one that teaches (Teacher(task=...)) or give "
                   f"the student's task the same name")


@torch.inference_mode()
def _signals(predictor: Predictor, task: PredictTask, reader, temperature: float,
             hidden: bool = False) -> dict[str, TargetTable]:
    """Run the teacher over every example once; each head's `teacher_signal` per feature, then its
    `merge_signals` per example (an example read as several features: MRC's windows); with `hidden`, each
    feature's token relations too (flattened n x n, one column)."""
    parts: dict[str, dict[int, list[np.ndarray]]] = {}  # field -> example key -> its features' signals
    heads: dict[str, object] = {}
    for batch in reader.iter_once():
        batch = to_device(batch, predictor.device)
        with autocast(predictor.device, predictor.precision):
            enc = predictor.model.encode(task.name, batch)
            for head in task.heads.values():
                signal = head.teacher_signal(head(batch, enc), batch, temperature) if head.label_fields else None
                if signal is None:
                    continue
                field = head.label_fields[0]
                heads[field], by_key = head, parts.setdefault(field, {})
                for meta, row in zip(batch["meta"], signal):
                    by_key.setdefault(example_key(meta), []).append(row.float().cpu().numpy())
            if hidden:
                heads[RELATIONS], by_key = _SentenceSignal(), parts.setdefault(RELATIONS, {})
                for meta, states, length in zip(batch["meta"], enc["sequence_output"],
                                                batch["attention_mask"].sum(1).tolist()):
                    relations = token_relations(states[:length]).reshape(-1, 1)
                    by_key.setdefault(example_key(meta), []).append(relations.cpu().numpy())
    if not parts:
        raise MtlError(f"no head of task {task.name!r} hands anything on to a student (none implements "
                       "teacher_signal)")
    tables = {}
    for field, by_key in parts.items():
        rows = [heads[field].merge_signals(features, temperature) for features in by_key.values()]
        per_word = rows[0].ndim == 2  # a sentence head hands on (K,) per example, a word head (W, K)
        rows = [row.reshape(-1, row.shape[-1]).astype(np.float32) for row in rows]
        tables[field] = pack(np.array(list(by_key), np.int64), rows, per_word, rows[0].shape[-1],
                             task.label_names.get(field))
    return tables


class _SentenceSignal:
    """The relation targets' merge: one feature per example (a reader that windows examples has no
    one-to-one tokens to compare)."""

    @staticmethod
    def merge_signals(features: list[np.ndarray], temperature: float) -> np.ndarray:
        if len(features) != 1:
            raise MtlError("the hidden-state loss needs one feature per example; this reader splits examples "
                           "into windows (MRC): distil it without hidden_weight")
        return features[0]
