"""Evaluation and prediction of one task: decode every head's output to readable records, then score."""
import json
from pathlib import Path

import torch

from mtl.components.readers.base import Reader
from mtl.metrics import frame_accuracy
from mtl.trainers.device import autocast, to_device
from mtl.trainers.model import MultiTaskModel
from mtl.trainers.trainer import Task


@torch.inference_mode()
def decode_task(model: MultiTaskModel, task: Task, reader: Reader, device: torch.device,
                precision: str) -> tuple[list[dict], list[dict]]:
    """One record per example ({"text", head: decoded, ...}) and the metas (with gold labels) beside them."""
    was_training = model.training
    model.eval()
    names = reader.label_names
    records, metas = [], []
    for batch in reader.iter_once():
        batch = to_device(batch, device)
        with autocast(device, precision):
            outputs = model(task.name, batch)
        predictions = {h: task.heads[h].predict(out, batch) for h, out in outputs.items()}
        for row, meta in enumerate(batch["meta"]):
            record = {"text": meta.get("text")}
            for head_name, head in task.heads.items():
                field_names = names.get(head.label_fields[0]) if head.label_fields else None
                record[head_name] = head.decode(predictions[head_name][row], field_names, meta)
            records.append(record)
            metas.append(meta)
    model.train(was_training)
    return records, metas


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
