"""A trained model from its folder alone: `mtl.load(DIR).predict(["book a flight to boston tomorrow"])`.

The folder (an export, or any checkpoint) says how to rebuild itself in model.json: the backbone's class,
and per task its reader and heads as component specs. Loading runs no pickled code: weights are
safetensors, the tokenizer is tokenizer.json, the rest is JSON, and transformers runs no remote code.
Everything lives on the Predictor instance, so two models loaded in one process cannot interfere.
"""
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mtl.components.backbones.encoder import Encoder
from mtl.components.heads.base import Head
from mtl.components.readers.base import Reader
from mtl.errors import MtlError
from mtl.spec import build, locate
from mtl.trainers.checkpoint import LABELS, SPEC, load_heads
from mtl.trainers.device import autocast, resolve_device, resolve_precision, to_device
from mtl.trainers.evaluation import decode_task, merge_task
from mtl.trainers.model import MultiTaskModel


@dataclass
class PredictTask:
    """One task of a loaded model: its predict-phase reader, its heads, and label names per label field."""

    name: str
    reader: Reader
    heads: dict[str, Head]
    label_names: dict[str, list[str]]


def load(folder: str | Path, device: str | None = None, precision: str = "auto") -> "Predictor":
    """The model saved in `folder` (by `MultiHeadTrainer.export`, or any checkpoint), ready to predict."""
    return Predictor.from_folder(folder, device, precision)


def _tied_heads(task: dict, built: dict[str, dict[str, Head]]) -> dict[str, Head]:
    """A task's heads; for a task saved with `reuse_head_with`, the owner's head modules themselves (one set of
    weights, as in training), a head named after the owner renamed after this task."""
    owner = task.get("reuse_head_with")
    if owner is None:
        return built[task["name"]]
    if owner not in built:
        raise ValueError(f"{SPEC}: task {task['name']!r} reuses the head of {owner!r}, which the file does not hold")
    return {task["name"] if name == owner else name: head for name, head in built[owner].items()}


class Predictor:
    """Every task of a model over its one encoder.

    `predict` tokenizes the texts once per distinct reader and runs the encoder once for all readers whose
    model inputs come out identical (the two heads of a joint task share one reader; the slot and intent tasks
    of a PALM-style model share a tokenization): one encoder pass feeds every head that can use it.
    A record holds each head's decoded output under the head's name (`task.head` when two tasks have a head
    of the same name).
    """

    def __init__(self, backbone: Encoder, tasks: list[PredictTask], device: str | None = None,
                 precision: str = "auto") -> None:
        self.tasks, self.device = tasks, resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.model = MultiTaskModel(backbone, {t.name: t.heads for t in tasks}).to(self.device).eval()
        head_names = [h for t in tasks for h in t.heads]
        unique = len(set(head_names)) == len(head_names)
        self.keys = {(t.name, h): h if unique else f"{t.name}.{h}" for t in tasks for h in t.heads}

    @classmethod
    def from_folder(cls, folder: str | Path, device: str | None = None, precision: str = "auto") -> "Predictor":
        folder = Path(folder)
        if not (folder / SPEC).is_file():
            raise FileNotFoundError(f"{folder}: no {SPEC}; export the model with MultiHeadTrainer.export "
                                    "(or give a checkpoint folder saved by mtl >= 0.1)")
        spec = json.loads((folder / SPEC).read_text(encoding="utf-8"))
        labels = json.loads((folder / LABELS).read_text(encoding="utf-8"))
        backbone_class = locate(spec["backbone"]["_component_"])
        backbone = backbone_class.from_pretrained(folder / spec["backbone"]["folder"], trust_remote_code=False,
                                                  use_safetensors=True)
        readers: dict[str, Reader] = {}  # tasks with the same reader spec share one reader
        built = {task["name"]: {name: build(head) for name, head in task["heads"].items()} for task in spec["tasks"]}
        tasks = []
        for task in spec["tasks"]:
            key = json.dumps([task["reader"], task["tokenizer"]], sort_keys=True)
            if key not in readers:
                readers[key] = build(task["reader"], vocab_path=folder / task["tokenizer"], phase="predict")
            heads = _tied_heads(task, built)
            tasks.append(PredictTask(task["name"], readers[key], heads, labels.get(task["name"], {})))
        predictor = cls(backbone, tasks, device, precision)
        load_heads(predictor.model, folder)
        return predictor

    @torch.inference_mode()
    def predict(self, texts: list[str], batch_size: int = 32) -> list[dict[str, Any]]:
        """One record per text: `{"text": ..., head: decoded, ...}`, e.g. for joint intent + slots
        `{"intent": {"label", "prob"}, "slots": {"tags", "spans": [{"text", "type", "start", "end"}]}}`."""
        texts = list(texts)
        records: list[dict[str, Any]] = [{"text": text} for text in texts]
        if not texts:
            return records
        readers = {id(t.reader): t.reader for t in self.tasks}
        prepared = {reader_id: reader.from_texts(texts, batch_size) for reader_id, reader in readers.items()}
        windowed = {rid for rid, reader in prepared.items() if reader.num_examples != len(texts)}
        windowed |= {id(t.reader) for t in self.tasks if any(type(h).merge is not Head.merge for h in t.heads.values())}
        for group in self._share_encoder({rid: r for rid, r in prepared.items() if rid not in windowed}):
            for start in range(0, len(texts), batch_size):
                self._predict_batch(group, prepared, start, batch_size, records)
        for task in self.tasks:
            if id(task.reader) in windowed:
                self._predict_windowed(task, prepared[id(task.reader)], records)
        return records

    def _predict_windowed(self, task: "PredictTask", reader: Reader, records: list[dict]) -> None:
        """A reader that cuts one text into several features (MRC's windows): decode them all, then let the
        heads merge them back into one prediction per text, as evaluation does."""
        decoded, metas = decode_task(self.model, task, reader, self.device, self.precision)
        decoded, _ = merge_task(task, decoded, metas)
        if len(decoded) != len(records):
            raise MtlError(f"task {task.name!r}: {type(reader).__name__} made {reader.num_examples} features from "
                           f"{len(records)} texts and its heads merged them into {len(decoded)} predictions; a head "
                           "of a reader that splits texts must implement Head.merge")
        for record, merged in zip(records, decoded):
            for head_name in task.heads:
                record[self.keys[(task.name, head_name)]] = merged[head_name]

    def _share_encoder(self, prepared: dict[int, Reader]) -> list[list[int]]:
        """Readers (by id) grouped by identical encoder inputs over all texts: one encoder pass per group."""
        fields = [name for name in self.model.backbone.input_fields if name != "attention_mask"]
        groups: dict[tuple, list[int]] = {}
        for reader_id, reader in prepared.items():
            key = tuple(tuple(tuple(f.fields[name]) for name in fields) for f in reader.features)
            groups.setdefault(key, []).append(reader_id)
        return list(groups.values())

    def _predict_batch(self, group: list[int], prepared: dict[int, Reader], start: int, size: int,
                       records: list[dict]) -> None:
        batches = {rid: to_device(prepared[rid].collate(prepared[rid].features[start:start + size]), self.device)
                   for rid in group}
        with autocast(self.device, self.precision):
            enc = self.model.backbone(batches[group[0]])
            for task in self.tasks:
                batch = batches.get(id(task.reader))
                if batch is None:
                    continue
                for head_name, head in task.heads.items():
                    predictions = head.predict(head(batch, enc), batch)
                    names = task.label_names.get(head.label_fields[0]) if head.label_fields else None
                    key = self.keys[(task.name, head_name)]
                    for row, meta in enumerate(batch["meta"]):
                        records[start + row][key] = head.decode(predictions[row], names, meta)
