"""The onnxruntime runtime: a Predictor whose encoder and heads run in onnxruntime (a folder written by
`mtl export DIR --onnx OUT`; it fits a folder with model.onnx).

It is `mtl.load`'s Predictor itself, with two parts swapped: where the Encoder stood, `OnnxGraph` runs the
whole graph (encoder and every head) once per batch; each head's `forward` reads its outputs from the graph's
results instead of computing them. Readers, tokenization, the one-pass grouping, `predict`, `decode`, `merge`
(and the weights they use, a CRF's transitions) stay the same code, so decoding is identical by construction.
The Encoder is never built: its weights are in the graph, and transformers' modelling code is not imported.
"""
import json
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from mtl.components.heads.base import Head
from mtl.errors import MtlError
from mtl.predictor import Predictor
from mtl.safe_load import ModelPlan, inside
from mtl.serving.predictor_model import PredictorModel
from mtl.serving.runtime import LoadOptions

ONNX_FILE, ONNX_INFO = "model.onnx", "onnx.json"


class OnnxGraph(nn.Module):
    """Stands in a Predictor where the Encoder stands: called with a batch, it feeds the graph's inputs and
    returns every output by name (`task.head.key`), which the heads then pick up."""

    def __init__(self, session: Any, encoder_inputs: Sequence[str]) -> None:
        super().__init__()
        self.session = session
        self.encoder_inputs = tuple(encoder_inputs)
        self.feeds = [i.name for i in session.get_inputs()]
        self.names = [o.name for o in session.get_outputs()]

    @property
    def input_fields(self) -> tuple[str, ...]:
        """The encoder's input fields (what the Predictor compares to share one pass between readers)."""
        return self.encoder_inputs

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        missing = [name for name in self.feeds if not isinstance(batch.get(name), torch.Tensor)]
        if missing:
            raise MtlError(f"the ONNX graph needs the batch fields {missing}, which this reader does not yield")
        results = self.session.run(self.names, {name: batch[name].cpu().numpy() for name in self.feeds})
        return {name: torch.from_numpy(value) for name, value in zip(self.names, results)}


class OnnxPredictor(Predictor):
    """A Predictor whose encoder and heads run in onnxruntime. While it predicts, torch (left only the
    decoding: softmax, argmax, Viterbi over small tensors) runs on one thread: torch's idle intra-op workers
    spin beside onnxruntime's pool, and on 2 cores that made a batch-1 prediction more than twice as slow.
    torch's thread count is the process's, so it is put back after each call."""

    def predict(self, texts: list, batch_size: int = 32) -> list[dict[str, Any]]:
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return super().predict(texts, batch_size)
        finally:
            torch.set_num_threads(before)


def _replayed_forward(self: Head, batch: dict, enc: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: enc[name] for key, name in self.onnx_outputs.items()}


def replay(head: Head, outputs: dict[str, str]) -> Head:
    """`head` itself, its class swapped for a subclass (same name) whose `forward` returns the graph's outputs
    `outputs` ({key: output name}); everything else is the head's own code and weights."""
    if getattr(head, "onnx_outputs", None) is None:
        base = type(head)
        head.__class__ = type(base.__name__, (base,), {"forward": _replayed_forward, "__qualname__": base.__qualname__})
        head.onnx_outputs = dict(outputs)
    return head


def read_onnx_info(folder: Path) -> dict:
    """onnx.json, checked: the graph's inputs, the encoder's inputs and each head's outputs by name."""
    path = inside(folder.resolve(), ONNX_INFO, f"{folder}: {ONNX_INFO}", False)
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise MtlError(f"{folder / ONNX_INFO}: cannot read it: {error}") from error
    strings = lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)  # noqa: E731
    outputs = info.get("outputs") if isinstance(info, dict) else None
    if not (strings(info.get("encoder_inputs")) and isinstance(outputs, dict) and all(
            isinstance(keys, dict) and all(isinstance(n, str) for n in keys.values()) for keys in outputs.values())):
        raise MtlError(f"{folder / ONNX_INFO}: expected encoder_inputs [names] and outputs "
                       "{task.head: {key: output name}}; export the model again with `mtl export`")
    return info


def check_no_external_data(path: Path) -> None:
    """The graph must hold its weights itself: an ONNX file may point at external data files by path, and
    a model folder is data (mtl never writes external data)."""
    import onnx  # the graph's proto, without loading anything it points at
    model = onnx.load(str(path), load_external_data=False)
    external = [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise MtlError(f"{path}: refused: its weights {external[:3]} live in external files; mtl exports one "
                       "self-contained graph")


def load_onnx(folder: str | Path, device: str | None = None, threads: int | None = None, *,
              trust_code: bool = False, allowed_modules: Sequence[str] | None = None) -> Predictor:
    """The folder's model (checked as `mtl.load` checks it) with its encoder and heads run by onnxruntime;
    `threads`: onnxruntime's intra-op threads (None: its default). On `cuda` it uses CUDAExecutionProvider
    when the installed onnxruntime has it."""
    folder = Path(folder)
    info = read_onnx_info(folder)
    graph_file = inside(folder.resolve(), ONNX_FILE, f"{folder}: {ONNX_FILE}", False)
    check_no_external_data(graph_file)
    graph = OnnxGraph(_session(graph_file, device, threads), info["encoder_inputs"])

    def stand_in(plan: ModelPlan) -> OnnxGraph:  # where the Encoder would be loaded from backbone/
        return graph
    predictor = OnnxPredictor.from_folder(folder, "cpu", "fp32", trust_code=trust_code,
                                          allowed_modules=allowed_modules, backbone=stand_in)
    for task in predictor.tasks:
        for name, head in task.heads.items():
            outputs = info["outputs"].get(f"{task.name}.{name}")
            if outputs is None or not set(outputs.values()) <= set(graph.names):
                raise MtlError(f"{folder / ONNX_INFO}: no graph outputs for head {task.name}.{name}; "
                               "export the model again with `mtl export`")
            replay(head, outputs)
    return predictor


def _session(graph_file: Path, device: str | None, threads: int | None) -> Any:
    """An onnxruntime session over the graph: CPU, or CUDA first on a `cuda` device."""
    import onnxruntime  # the optional serve extra, imported when an ONNX folder is loaded
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads or 0, 1
    providers = ["CPUExecutionProvider"]
    if device is not None and device.startswith("cuda"):
        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            raise MtlError("this onnxruntime has no CUDA provider (pip install onnxruntime-gpu), or serve on cpu")
        providers.insert(0, "CUDAExecutionProvider")
    return onnxruntime.InferenceSession(str(graph_file), options, providers=providers)


class OnnxRuntime:
    """The runtime table's `onnx`: model.onnx on onnxruntime, as exported (fp32, or the int8 graph
    `--quantize int8` wrote); `threads` sets onnxruntime's intra-op threads."""

    def fits(self, folder: Path) -> bool:
        return (folder / ONNX_FILE).is_file()

    def load(self, folder: Path, options: LoadOptions) -> PredictorModel:
        if options.beside or options.base is not None:
            raise MtlError("the onnx runtime runs one exported graph; serve folders of adapter tasks on torch, or "
                           "export one task with its adapter folded in (mtl export --onnx --task)")
        if options.precision not in ("auto", "fp32"):
            raise MtlError(f"the onnx runtime runs the graph as exported; --precision {options.precision} is for "
                           "torch")
        predictor = load_onnx(folder, options.device, options.threads, trust_code=options.trust_code,
                              allowed_modules=list(options.allowed_modules))
        return PredictorModel(predictor, "onnxruntime")
