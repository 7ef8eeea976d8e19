"""What `mtl serve` runs: one loaded model (torch, or onnxruntime for an `mtl export --onnx` folder) behind one
`predict(texts, tasks)` call, and the facts /metadata reports about it (tasks, heads, label sets, version,
checksum). The folder is loaded as `mtl.load` loads it (checked whole first); nothing here reads a path that
came from a request."""
import hashlib
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from mtl.components.readers.base import Reader
from mtl.errors import MtlError
from mtl.predictor import Predictor, load
from mtl.serving.onnx_runtime import ONNX_FILE, load_onnx
from mtl.version import __version__

RUNTIMES = ("auto", "torch", "onnx")


def input_forms(texts: Sequence[str]) -> tuple[list[Any], ...]:
    """The same texts in each form a reader may take: plain texts, `a<TAB>b` pairs (matching),
    question/context objects (reading comprehension)."""
    return list(texts), [f"{t}\t{t}" for t in texts], [{"question": t, "context": t} for t in texts]


def sample_inputs(readers: Sequence[Reader], texts: Sequence[str]) -> list[Any] | None:
    """`texts` in the first form every reader featurizes (for warm-up and tracing); None when no form fits all."""
    for form in input_forms(texts):
        try:
            for reader in readers:
                reader.from_texts(form)
        except Exception:  # noqa: BLE001 - not this form; try the next
            continue
        return form
    return None


class Engine:
    """A Predictor and its task subsets. `predict(texts, tasks)` answers with the records `Predictor.predict`
    writes; picking tasks runs only their readers and heads (one encoder pass still feeds them all) and keeps
    the record keys the full model uses."""

    def __init__(self, predictor: Predictor, folder: str | Path, runtime: str, batch_size: int = 32) -> None:
        self.predictor, self.runtime, self.batch_size = predictor, runtime, batch_size
        self.task_names = [task.name for task in predictor.tasks]
        self.checksum = folder_checksum(Path(folder))
        self._subsets: dict[tuple[str, ...], Predictor] = {}

    def warm_up(self, text: str, sizes: Sequence[int]) -> None:
        """A forward at each batch size, with `text` in the form the readers take (first calls pay for lazy
        initialisation; nothing when no form fits every reader)."""
        inputs = sample_inputs([task.reader for task in self.predictor.tasks], [text])
        if inputs is None:
            return
        for size in sizes:
            self.predict(inputs * size)

    def predict(self, texts: list[str], tasks: Sequence[str] | None = None) -> list[dict[str, Any]]:
        if tasks is None or set(tasks) >= set(self.task_names):
            return self.predictor.predict(texts, self.batch_size)
        unknown = sorted(set(tasks) - set(self.task_names))
        if unknown:
            raise MtlError(f"unknown task(s) {unknown}; the model has {self.task_names}")
        key = tuple(name for name in self.task_names if name in set(tasks))
        subset = self._subsets.get(key) or self._subsets.setdefault(key, self._subset(key))
        rename = {subset.keys[pair]: self.predictor.keys[pair] for pair in subset.keys}
        return [{"text": r["text"], **{rename[k]: v for k, v in r.items() if k != "text"}}
                for r in subset.predict(texts, self.batch_size)]

    def _subset(self, names: tuple[str, ...]) -> Predictor:
        """A Predictor over some of the tasks, sharing the encoder and heads (no weight is copied)."""
        full = self.predictor
        return type(full)(full.model.backbone, [t for t in full.tasks if t.name in names], str(full.device),
                          full.precision)

    def metadata(self) -> dict[str, Any]:
        """Tasks with their heads (record key, class, label field, label names), runtime, version, checksum."""
        tasks = {}
        for task in self.predictor.tasks:
            heads = {}
            for name, head in task.heads.items():
                field = head.label_fields[0] if head.label_fields else None
                heads[name] = {"key": self.predictor.keys[(task.name, name)], "class": type(head).__name__,
                               "label_field": field, "labels": task.label_names.get(field) if field else None}
            tasks[task.name] = {"reader": type(task.reader).__name__, "heads": heads}
        return {"mtl_version": __version__, "runtime": self.runtime, "device": str(self.predictor.device),
                "precision": self.predictor.precision, "model_checksum": self.checksum, "tasks": tasks}


def load_engine(folder: str | Path, runtime: str = "auto", device: str | None = None, precision: str = "auto",
                batch_size: int = 32, threads: int | None = None, *, trust_code: bool = False,
                allowed_modules: Sequence[str] | None = None) -> Engine:
    """The folder's model for serving. `runtime`: `onnx` runs model.onnx on onnxruntime (fp32 or the int8
    graph `--quantize int8` wrote), `torch` the PyTorch weights, `auto` onnx when the folder has model.onnx.
    `threads`: the runtime's intra-op threads (None: its default)."""
    folder = Path(folder)
    if runtime not in RUNTIMES:
        raise MtlError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if runtime == "auto":
        runtime = "onnx" if (folder / ONNX_FILE).is_file() else "torch"
    if runtime == "onnx":
        if precision not in ("auto", "fp32"):
            raise MtlError(f"the onnx runtime runs the graph as exported; --precision {precision} is for torch")
        predictor = load_onnx(folder, device, threads, trust_code=trust_code, allowed_modules=allowed_modules)
        return Engine(predictor, folder, "onnxruntime", batch_size)
    if threads:
        torch.set_num_threads(threads)
    predictor = load(folder, device, precision, trust_code=trust_code, allowed_modules=allowed_modules)
    return Engine(predictor, folder, "torch", batch_size)


def folder_checksum(folder: Path) -> str:
    """sha256 over every regular file of the folder (relative path and bytes, in sorted order; links are not
    followed): two servers answering with the same checksum run the same model."""
    digest = hashlib.sha256()
    files = sorted(Path(root, name) for root, _, names in os.walk(folder) for name in names)
    for path in files:
        if path.is_symlink() or not path.is_file():
            continue
        digest.update(path.relative_to(folder).as_posix().encode("utf-8") + b"\0")
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()
