"""A trained model from its folder alone: `mtl.load(DIR).predict(["book a flight to boston tomorrow"])`.

The folder (an export, or any checkpoint) says how to rebuild itself in model.json: the backbone's class,
and per task its reader and heads as component specs. A folder is data, whoever wrote it: model.json is
checked whole first (`mtl.safe_load`: only mtl's Encoder, Reader and Head classes unless the caller trusts
more, every path inside the folder), weights are safetensors, the tokenizer is tokenizer.json, the rest is
JSON, and transformers runs no remote code. Everything lives on the Predictor instance, so two models
loaded in one process cannot interfere.
"""
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from mtl.components.backbones.encoder import Encoder
from mtl.components.heads.base import Head
from mtl.components.readers.base import Reader
from mtl.components.savers.checkpoint import load_heads_of
from mtl.encoder_loading import shared_encoder
from mtl.errors import MtlError
from mtl.model.decode import decode_batch, decode_task, merge_task
from mtl.model.device import autocast, resolve_device, resolve_precision, to_device
from mtl.model.multitask import MultiTaskModel
from mtl.model.task import PredictTask
from mtl.safe_load import Component, ModelPlan, TaskPlan, read_model_folder


def load(folder: str | Path, device: str | None = None, precision: str = "auto", *, trust_code: bool = False,
         allowed_modules: Sequence[str] | None = None, base: str | Path | None = None) -> "Predictor":
    """The model saved in `folder` (by `MultiHeadTrainer.export`, or any checkpoint), ready to predict.

    Runs no code that a folder names, whoever wrote it: it may name only mtl's own classes.
    `allowed_modules=["mypkg.heads"]` also admits Head/Reader/Encoder subclasses defined there (your own
    heads); `trust_code=True` admits them from any module and lets transformers run code the backbone folder
    ships (`auto_map`): only for folders whose author you trust as you trust code you install.
    `base`: for a folder of LoRA adapters and heads alone (`export(base=False)`), the encoder they go over
    (an HF folder, or a model folder holding it); its weights must be the very ones they were trained on."""
    return Predictor.from_folder(folder, device, precision, trust_code=trust_code, allowed_modules=allowed_modules,
                                 base=base)


def _tied_heads(task: TaskPlan, built: dict[str, dict[str, Head]]) -> dict[str, Head]:
    """A task's heads; for a task saved with `reuse_head_with`, the owner's head modules themselves (one set of
    weights, as in training), a head named after the owner renamed after this task."""
    owner = task.reuse_head_with
    if owner is None:
        return built[task.name]
    return {task.name if name == owner else name: head for name, head in built[owner].items()}


def _build(component: Component, **overrides: Any) -> Any:
    """A checked component, built; whatever its constructor rejects is the folder's fault: MtlError, with where."""
    try:
        return component.cls(**{**component.args, **overrides})
    except Exception as error:  # noqa: BLE001 - any failure here is a bad value in model.json
        raise MtlError(f"{component.where}: {component.cls.__name__} cannot be built from these arguments: "
                       f"{type(error).__name__}: {error}") from error


def _tasks(plan: ModelPlan) -> list[PredictTask]:
    """The folder's tasks, built: readers (tasks with the same reader spec share one) and heads."""
    readers: dict[tuple, Reader] = {}
    built = {task.name: {name: _build(head) for name, head in task.heads.items()} for task in plan.tasks}
    tasks = []
    for task in plan.tasks:
        key = (task.reader.cls, json.dumps([task.reader.args, str(task.tokenizer)], sort_keys=True))
        if key not in readers:
            readers[key] = _build(task.reader, vocab_path=task.tokenizer, phase="predict")
        tasks.append(PredictTask(task.name, readers[key], _tied_heads(task, built), plan.labels.get(task.name, {})))
    return tasks


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
    def from_folder(cls, folder: str | Path, device: str | None = None, precision: str = "auto", *,
                    trust_code: bool = False, allowed_modules: Sequence[str] | None = None,
                    backbone: Callable[[ModelPlan], Any] | None = None,
                    base: str | Path | None = None) -> "Predictor":
        """See `mtl.load`. Every check runs before the first class is built; a failure after that (a value its
        class rejects, weights that do not fit) is an MtlError naming the file and key too. `backbone`: what
        stands where the Encoder stands, built from the checked plan (a runtime that runs the encoder itself,
        onnxruntime's graph); None loads the folder's Encoder."""
        return cls.from_folders([folder], device, precision, trust_code=trust_code, allowed_modules=allowed_modules,
                                backbone=backbone, base=base)

    @classmethod
    def from_folders(cls, folders: Sequence[str | Path], device: str | None = None, precision: str = "auto", *,
                     trust_code: bool = False, allowed_modules: Sequence[str] | None = None,
                     backbone: Callable[[ModelPlan], Any] | None = None,
                     base: str | Path | None = None) -> "Predictor":
        """Every task of several folders over one encoder loaded once (mtl.encoder_loading): a deployed model
        and folders of adapters trained over its base later. Task names must differ across the folders."""
        plans = [read_model_folder(folder, trust_code, allowed_modules) for folder in folders]
        if backbone is not None and len(plans) > 1:
            raise MtlError("a runtime that runs the encoder itself serves one folder")
        names = [task.name for plan in plans for task in plan.tasks]
        if len(set(names)) != len(names):
            raise MtlError(f"the folders {[str(f) for f in folders]} name the same task twice ({names}); task names "
                           "must differ to be served together")
        encoder = backbone(plans[0]) if backbone is not None else shared_encoder(plans, trust_code, base)
        per_folder = [_tasks(plan) for plan in plans]
        predictor = cls(encoder, [task for tasks in per_folder for task in tasks], device, precision)
        for plan, tasks in zip(plans, per_folder):
            try:
                load_heads_of(predictor.model.heads, [task.name for task in tasks], plan.heads_file)
            except Exception as error:  # noqa: BLE001 - a corrupt or mismatched heads.safetensors
                message = str(error)
                raise MtlError(message if plan.heads_file.name in message else f"{plan.heads_file}: {message}") \
                    from error
        return predictor

    @torch.inference_mode()
    def predict(self, texts: list[str], batch_size: int = 32) -> list[dict[str, Any]]:
        """One record per text: `{"text": ..., head: decoded, ...}`, e.g. for joint intent + slots
        `{"intent": {"label", "prob"}, "slots": {"tags", "spans": [{"text", "type", "start", "end", "char_start",
        "char_end"}]}}` (word range, and character range in the text given)."""
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

    def _share_encoder(self, prepared: dict[int, Reader]) -> list[list[PredictTask]]:
        """Tasks grouped by identical encoder inputs over all texts and the same adapter (a task's own LoRA
        adapter, or none): one encoder pass per group."""
        fields = [name for name in self.model.backbone.input_fields if name != "attention_mask"]
        inputs = {rid: tuple(tuple(tuple(f.fields[name]) for name in fields) for f in reader.features)
                  for rid, reader in prepared.items()}
        adapters = getattr(self.model.backbone, "adapters", {})
        groups: dict[tuple, list[PredictTask]] = {}
        for task in self.tasks:
            if id(task.reader) in inputs:
                key = (inputs[id(task.reader)], task.name if task.name in adapters else None)
                groups.setdefault(key, []).append(task)
        return list(groups.values())

    def _predict_batch(self, group: list[PredictTask], prepared: dict[int, Reader], start: int, size: int,
                       records: list[dict]) -> None:
        batches: dict[int, dict] = {}
        for task in group:
            reader = prepared[id(task.reader)]
            if id(task.reader) not in batches:
                batches[id(task.reader)] = to_device(reader.collate(reader.features[start:start + size]), self.device)
        with autocast(self.device, self.precision):
            enc = self.model.encode(group[0].name, batches[id(group[0].reader)])
            for task in group:
                batch = batches[id(task.reader)]
                for row, decoded in enumerate(decode_batch(task.heads, batch, enc, task.label_names)):
                    records[start + row].update({self.keys[(task.name, h)]: value for h, value in decoded.items()})
