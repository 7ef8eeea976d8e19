"""The one decode path: head outputs to readable records (labels and spans, not ids).

The trainer's evaluate and predict (mtl.trainers.evaluation) and `mtl.load`'s Predictor all turn head
outputs into records through `decode_batch`, so they decode identically. Imports no training module."""
import torch

from mtl.components.heads.base import Head
from mtl.components.readers.base import Reader
from mtl.model.device import autocast, to_device
from mtl.model.multitask import MultiTaskModel
from mtl.model.task import TaskHeads


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
def decode_task(model: MultiTaskModel, task: TaskHeads, reader: Reader, device: torch.device,
                precision: str) -> tuple[list[dict], list[dict]]:
    """One record per example ({"text", head: decoded, ...}) and the metas (with gold labels) beside them."""
    was_training = model.training
    model.eval()
    names, records, metas = reader.label_names, [], []
    for batch in reader.iter_once():
        batch = to_device(batch, device)
        with autocast(device, precision):
            rows = decode_batch(task.heads, batch, model.encode(task.name, batch), names)
        records += [{"text": meta.get("text"), **row} for row, meta in zip(rows, batch["meta"])]
        metas += batch["meta"]
    model.train(was_training)
    return records, metas


def merge_task(task: TaskHeads, records: list[dict], metas: list[dict]) -> tuple[list[dict], list[dict]]:
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
