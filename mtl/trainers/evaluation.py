"""The trainer's evaluation and prediction: each task decoded through the one decode path (mtl.model.decode,
which `mtl.load`'s Predictor uses too) over every rank's shard, then scored."""
import json
from pathlib import Path

import torch

from mtl import distributed
from mtl.components.readers.base import Reader
from mtl.metrics import frame_accuracy
from mtl.model.decode import decode_task, merge_task
from mtl.model.multitask import MultiTaskModel
from mtl.trainers.task import Task


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
