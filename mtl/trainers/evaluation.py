"""Evaluation and prediction of one task: decode every head's output to readable records, then score.

`decode_batch` is the one decode path: the trainer's evaluate and predict and `mtl.load`'s Predictor all turn
head outputs into records through it, so they decode identically. Imports no training module."""
import json
from pathlib import Path

import torch

from mtl import distributed
from mtl.components.heads.base import Head
from mtl.components.readers.base import Reader
from mtl.metrics import frame_accuracy
from mtl.trainers.device import autocast, to_device
from mtl.trainers.model import MultiTaskModel
from mtl.trainers.trainer import Task


def decode_batch(heads: dict[str, Head], batch: dict, enc: dict, label_names: dict[str, list[str]]) -> list[dict]:
    """Every head on one encoded batch, its predictions decoded (labels and spans, not ids): one dict per row,
    {head name: decoded}. The one decode path: evaluation, prediction and `mtl.load`'s predictor all use it
    (under the caller's autocast, as the encoder pass)."""
    predictions = {name: head.predict(head(batch, enc), batch) for name, head in heads.items()}
    names = {name: label_names.get(head.label_fields[0]) if head.label_fields else None
             for name, head in heads.items()}
    return [{name: head.decode(predictions[name][row], names[name], meta) for name, head in heads.items()}
            for row, meta in enumerate(batch["meta"])]


@torch.inference_mode()
def decode_task(model: MultiTaskModel, task: Task, reader: Reader, device: torch.device,
                precision: str) -> tuple[list[dict], list[dict]]:
    """One record per example ({"text", head: decoded, ...}) and the metas (with gold labels) beside them."""
    was_training = model.training
    model.eval()
    names, records, metas = reader.label_names, [], []
    for batch in reader.iter_once():
        batch = to_device(batch, device)
        with autocast(device, precision):
            rows = decode_batch(task.heads, batch, model.backbone(batch), names)
        records += [{"text": meta.get("text"), **row} for row, meta in zip(rows, batch["meta"])]
        metas += batch["meta"]
    model.train(was_training)
    return records, metas


def decode_everywhere(model: MultiTaskModel, task: Task, reader: Reader, device: torch.device,
                      precision: str) -> tuple[list[dict], list[dict]]:
    """`decode_task` over the whole reader, merged per example (`merge_task`). Under torch.distributed (a
    collective) each rank decodes its shard of the examples and every rank gets all records, in order."""
    shard = reader.shard(distributed.rank(), distributed.world_size())
    records, metas = distributed.gather_records(*decode_task(model, task, shard, device, precision))
    return merge_task(task, records, metas)


def evaluate_tasks(model: MultiTaskModel, tasks: list[Task], readers: dict[str, Reader | None],
                   device: torch.device, precision: str) -> dict[str, dict[str, float]]:
    """Metrics per task (`score_task`) on `readers[task]`; tasks without a reader are left out."""
    results = {}
    for task in tasks:
        reader = readers.get(task.name)
        if reader is None:
            continue
        task.check_reader(reader)
        results[task.name] = score_task(task, *decode_everywhere(model, task, reader, device, precision))
    if not results:
        raise ValueError("nothing to evaluate: give readers or set the tasks' dev readers")
    return results


def merge_task(task: Task, records: list[dict], metas: list[dict]) -> tuple[list[dict], list[dict]]:
    """Let each head merge per-feature records into per-example ones (`Head.merge`: MRC joins the windows of
    one question). Heads that do not merge keep the records as they are; several heads that merge must agree
    on the number of examples."""
    columns, merged_metas = {}, metas
    for head_name, head in task.heads.items():
        decoded, head_metas = head.merge([record[head_name] for record in records], metas)
        columns[head_name] = decoded
        if head_metas is not metas:
            merged_metas = head_metas
    if merged_metas is metas:
        return records, metas
    sizes = {name: len(decoded) for name, decoded in columns.items()}
    if set(sizes.values()) != {len(merged_metas)}:
        raise ValueError(f"task {task.name!r}: its heads merge features into different numbers of examples "
                         f"{sizes}; heads that merge (MRC) cannot share a task with heads that do not")
    merged = [{"text": meta.get("text"), **{name: columns[name][i] for name in columns}}
              for i, meta in enumerate(merged_metas)]
    return merged, merged_metas


def score_task(task: Task, records: list[dict], metas: list[dict]) -> dict[str, float]:
    """Each head's metrics as `head.metric`, sentence accuracy over all heads, and `score` for selection.

    `score` is the mean of each head's main metric, plus frame accuracy when a task has several heads.
    """
    metrics, correct, main = {}, [], []
    for head_name, head in task.heads.items():
        golds = [head.gold(meta) for meta in metas]
        decoded = [record[head_name] for record in records]
        for key, value in head.metrics(decoded, golds).items():
            metrics[f"{head_name}.{key}"] = value
        main.append(metrics[f"{head_name}.{head.main_metric}"])
        correct.append([head.is_correct(d, g) for d, g in zip(decoded, golds)])
    if len(task.heads) > 1:
        metrics["frame_accuracy"] = frame_accuracy(correct)
        main.append(metrics["frame_accuracy"])
    metrics["score"] = sum(main) / len(main)
    return metrics


def write_jsonl(records: list[dict], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
