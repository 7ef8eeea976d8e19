"""`mtl export DIR --onnx OUT`: one ONNX graph with the encoder and every head (dynamic batch and length axes),
beside a copy of the model folder (model.json, labels.json, tokenizer, weights), so that `mtl.load(OUT)` still
works and `mtl serve --model OUT` runs the graph on onnxruntime (mtl.serving.onnx_runtime).

The export checks itself: it runs the graph on a batch of another size and length than the one it traced,
and refuses (nothing written) when an fp32 output differs from PyTorch's by more than 1e-3.
"""
import json
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from mtl.components.heads.base import Head
from mtl.components.readers.base import Reader
from mtl.components.savers.checkpoint import BACKBONE, HEADS, LABELS, SPEC, STATE
from mtl.errors import MtlError
from mtl.predictor import Predictor, load
from mtl.serving.engine import sample_inputs
from mtl.serving.merge import merge_adapter
from mtl.serving.onnx_runtime import ONNX_FILE, ONNX_INFO
from mtl.version import __version__

FP32_TOLERANCE = 1e-3
TRACE_TEXTS = ("book a flight from boston to denver", "play some jazz")
CHECK_TEXTS = ("what is the weather", "show me flights from new york to san francisco on monday morning", "hi")
QUANTIZATIONS = (None, "int8")


class _RecordingBatch(dict):
    """A batch that notes which fields a head reads, so the graph takes exactly those as inputs."""

    def __init__(self, batch: dict) -> None:
        super().__init__(batch)
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> Any:
        self.read.add(name)
        return super().__getitem__(name)

    def get(self, name: str, default: Any = None) -> Any:
        self.read.add(name)
        return super().get(name, default)


class ExportGraph(nn.Module):
    """The encoder and every head as one module of tensor inputs and outputs: what the exporter traces."""

    def __init__(self, predictor: Predictor, inputs: list[str], heads: dict[str, Head],
                 keys: dict[str, list[str]]) -> None:
        super().__init__()
        self.backbone, self.inputs, self.keys = predictor.model.backbone, inputs, keys
        self.heads, self.names = nn.ModuleList(heads.values()), list(heads)

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        batch = dict(zip(self.inputs, tensors))
        enc = self.backbone(batch)
        outputs = []
        for name, head in zip(self.names, self.heads):
            out = head(batch, enc)
            outputs += [out[key] for key in self.keys[name]]
        return tuple(outputs)

    def output_names(self) -> list[str]:
        return [f"{name}.{key}" for name in self.names for key in self.keys[name]]


def sample_batch(reader: Reader, texts: Sequence[str]) -> dict:
    """A predict-phase batch of `texts`, in the form the reader takes (plain, pairs, question/context)."""
    inputs = sample_inputs([reader], texts)
    if inputs is None:
        raise MtlError(f"cannot make a sample batch for {type(reader).__name__}: it takes none of plain texts, "
                       "text pairs or question/context objects")
    prepared = reader.from_texts(inputs)
    return prepared.collate(prepared.features[:len(texts)])


def unique_heads(predictor: Predictor) -> tuple[dict[str, Head], dict[str, str]]:
    """Each head module once, named `task.head` after its first task; and every `task.head` -> that name
    (a head shared by two tasks is one set of outputs)."""
    owners: dict[int, str] = {}
    heads: dict[str, Head] = {}
    alias: dict[str, str] = {}
    for task in predictor.tasks:
        for name, head in task.heads.items():
            key = owners.setdefault(id(head), f"{task.name}.{name}")
            heads.setdefault(key, head)
            alias[f"{task.name}.{name}"] = key
    return heads, alias


@torch.inference_mode()
def probe(predictor: Predictor, heads: dict[str, Head], batch: dict) -> tuple[list[str], dict[str, list[str]]]:
    """Run the model once on `batch`: the fields the graph needs as inputs, and each head's tensor outputs."""
    recording = _RecordingBatch(batch)
    enc = predictor.model.backbone(recording)
    keys = {name: sorted(k for k, v in head(recording, enc).items() if isinstance(v, torch.Tensor))
            for name, head in heads.items()}
    not_tensors = sorted(name for name in recording.read if name in batch and not isinstance(batch[name], torch.Tensor))
    if not_tensors:
        raise MtlError(f"cannot export to ONNX: a head reads the batch's {not_tensors} (not tensors), which a graph "
                       "cannot take as inputs; serve this model with the torch runtime")
    fields = list(predictor.model.backbone.input_fields)
    return fields + sorted(n for n in recording.read if n in batch and n not in fields), keys


def export_onnx(folder: str | Path, out: str | Path, quantize: str | None = None, opset: int = 17, *,
                trust_code: bool = False, allowed_modules: Sequence[str] | None = None, task: str | None = None,
                base: str | Path | None = None) -> dict[str, Any]:
    """Write OUT (see the module docstring); returns what onnx.json records (inputs, outputs, parity). A folder
    of adapter tasks runs one encoder per adapter, which one graph cannot: `task` names the one to export, its
    adapter folded into the encoder first (mtl.serving.merge; `base` as for mtl.load)."""
    folder, out = Path(folder), Path(out)
    if task is not None:
        with tempfile.TemporaryDirectory(dir=out.parent) as work:
            merged = merge_adapter(folder, task, Path(work) / "merged", base)
            return export_onnx(merged, out, quantize, opset, trust_code=trust_code, allowed_modules=allowed_modules)
    if quantize not in QUANTIZATIONS:
        raise MtlError(f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MtlError(f"{out}: exists and is not an empty folder; choose another output folder")
    predictor = load(folder, "cpu", "fp32", trust_code=trust_code, allowed_modules=allowed_modules, base=base)
    if predictor.model.backbone.adapters:
        raise MtlError(f"{folder}: tasks {sorted(predictor.model.backbone.adapters)} run LoRA adapters, one encoder "
                       "each, and one ONNX graph runs one encoder: export one task with its adapter folded in "
                       "(`mtl export DIR --onnx OUT --task NAME`)")
    heads, alias = unique_heads(predictor)
    reader = predictor.tasks[0].reader
    inputs, keys = probe(predictor, heads, sample_batch(reader, TRACE_TEXTS))
    graph = ExportGraph(predictor, inputs, heads, keys).eval()
    work = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(work, ignore_errors=True)
    try:
        copy_model_files(folder, work)
        _trace(graph, sample_batch(reader, TRACE_TEXTS), work / ONNX_FILE, opset)
        check = sample_batch(reader, CHECK_TEXTS)
        parity = {"fp32_max_abs_diff": compare(graph, work / ONNX_FILE, check)}
        if parity["fp32_max_abs_diff"] > FP32_TOLERANCE:
            raise MtlError(f"the ONNX graph's outputs differ from PyTorch's by {parity['fp32_max_abs_diff']:.2e} "
                           f"(> {FP32_TOLERANCE}); not exported")
        if quantize == "int8":
            quantize_int8(work / ONNX_FILE)
            parity["int8_max_abs_diff"] = compare(graph, work / ONNX_FILE, check)
        names = graph.output_names()
        outputs = {task_head: {key: f"{owner}.{key}" for key in keys[owner]} for task_head, owner in alias.items()}
        info = {"format": 1, "mtl_version": __version__, "torch": torch.__version__, "opset": opset,
                "quantize": quantize, "inputs": inputs, "encoder_inputs": list(predictor.model.backbone.input_fields),
                "output_names": names, "outputs": outputs, "parity": parity}
        (work / ONNX_INFO).write_text(json.dumps(info, indent=1), encoding="utf-8")
        if out.exists():
            out.rmdir()
        work.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return info


def copy_model_files(folder: Path, out: Path) -> None:
    """The files `mtl.load` reads (and trainer_state.json), regular files only: no link is followed or kept."""
    out.mkdir(parents=True)
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink():
            continue
        if entry.is_file() and entry.name in (SPEC, LABELS, HEADS, STATE):
            shutil.copyfile(entry, out / entry.name)
        elif entry.is_dir() and (entry.name == BACKBONE or entry.name.startswith("tokenizer")):
            shutil.copytree(entry, out / entry.name, ignore=lambda root, names: [
                n for n in names if (Path(root) / n).is_symlink()])


def _trace(graph: ExportGraph, batch: dict, path: Path, opset: int) -> None:
    tensors = tuple(batch[name] for name in graph.inputs)
    axes = {name: {0: "batch", 1: "length"} if batch[name].dim() > 1 else {0: "batch"} for name in graph.inputs}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on Python values; compare() checks the result
        torch.onnx.export(graph, tensors, str(path), input_names=graph.inputs, output_names=graph.output_names(),
                          dynamic_axes=axes, opset_version=opset, dynamo=False, do_constant_folding=True)


@torch.inference_mode()
def compare(graph: ExportGraph, path: Path, batch: dict) -> float:
    """The largest absolute difference between the graph's outputs on onnxruntime and PyTorch's on `batch`."""
    import onnxruntime
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: batch[i.name].numpy() for i in session.get_inputs()}
    ours = session.run(graph.output_names(), feeds)
    theirs = graph(*(batch[name] for name in graph.inputs))
    diffs = [float(np.abs(a.astype(np.float64) - b.double().numpy()).max(initial=0.0))
             for a, b in zip(ours, theirs) if b.is_floating_point()]
    return max(diffs, default=0.0)


def quantize_int8(path: Path) -> None:
    """Dynamic int8 quantization of the graph's weights (activations quantized on the fly), in place, after
    onnxruntime's recommended pre-processing (shape inference and graph optimisation; its symbolic shape pass
    is skipped: it does not complete on transformers' encoder graphs)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process
    prepared, quantized = path.with_name("model.pre.onnx"), path.with_name("model.int8.onnx")
    quant_pre_process(str(path), str(prepared), skip_symbolic_shape=True)
    quantize_dynamic(str(prepared), str(quantized), weight_type=QuantType.QInt8)
    prepared.unlink()
    quantized.replace(path)
