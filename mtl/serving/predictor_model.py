"""A `mtl.load` Predictor behind the runtime interface (mtl.serving.runtime.Model): the torch and onnxruntime
runtimes both hand one back, and differ only in what stands where the Encoder stands."""
from typing import Any, Sequence

from mtl.errors import MtlError


class PredictorModel:
    """A Predictor and its task subsets. `predict(texts, tasks)` answers with the records `Predictor.predict`
    writes; picking tasks runs only their readers and heads (one encoder pass still feeds them all) and keeps
    the record keys the full model uses."""

    def __init__(self, predictor: Any, runtime: str) -> None:
        self.predictor, self.runtime = predictor, runtime
        self.task_names = [task.name for task in predictor.tasks]
        self._subsets: dict[tuple[str, ...], Any] = {}

    def round_widths(self, multiple: int) -> None:
        """Pad every batch's width up to a multiple of `multiple` tokens: a server then sees a few distinct
        shapes, not one per batch size and length, and the runtime's per-shape caches (oneDNN primitives and
        their reordered weights, allocator pools) stop growing (benchmarks/soak_serving.py measures it)."""
        for task in self.predictor.tasks:
            task.reader.pad_to_multiple_of = multiple

    def predict(self, texts: list[Any], tasks: Sequence[str] | None = None,
                batch_size: int = 32) -> list[dict[str, Any]]:
        if tasks is None or set(tasks) >= set(self.task_names):
            return self.predictor.predict(texts, batch_size)
        unknown = sorted(set(tasks) - set(self.task_names))
        if unknown:
            raise MtlError(f"unknown task(s) {unknown}; the model has {self.task_names}")
        key = tuple(name for name in self.task_names if name in set(tasks))
        subset = self._subsets.get(key) or self._subsets.setdefault(key, self._subset(key))
        rename = {subset.keys[pair]: self.predictor.keys[pair] for pair in subset.keys}
        return [{"text": r["text"], **{rename[k]: v for k, v in r.items() if k != "text"}}
                for r in subset.predict(texts, batch_size)]

    def _subset(self, names: tuple[str, ...]) -> Any:
        """A Predictor over some of the tasks, sharing the encoder and heads (no weight is copied)."""
        full = self.predictor
        return type(full)(full.model.backbone, [t for t in full.tasks if t.name in names], str(full.device),
                          full.precision)

    def describe(self) -> dict[str, Any]:
        """Runtime, device, precision, and the tasks with their heads (record key, class, label field, labels)
        and their LoRA adapter (None: the encoder's own weights)."""
        tasks, adapters = {}, getattr(self.predictor.model.backbone, "adapters", {})
        for task in self.predictor.tasks:
            heads = {}
            for name, head in task.heads.items():
                field = head.label_fields[0] if head.label_fields else None
                heads[name] = {"key": self.predictor.keys[(task.name, name)], "class": type(head).__name__,
                               "label_field": field, "labels": task.label_names.get(field) if field else None}
            adapter = adapters.get(task.name)
            tasks[task.name] = {"reader": type(task.reader).__name__, "heads": heads,
                                "adapter": {"kind": "lora", **adapter.spec()} if adapter is not None else None}
        return {"runtime": self.runtime, "device": str(self.predictor.device),
                "precision": self.predictor.precision, "tasks": tasks}
