"""One adapter task as a plain model folder: its LoRA update folded into the encoder's weights.

A folder of adapter tasks runs one encoder pass per adapter; a runtime that runs a fixed graph (ONNX) runs one
encoder. `merge_adapter(folder, task, out)` writes `out`: that task alone, over an encoder whose adapted
layers hold W + (alpha / r) B A, with no adapter left: `mtl export --onnx` and every runtime take it as any
model folder. The task's answers are the same up to float rounding.
"""
import json
import shutil
import tempfile
from pathlib import Path

from safetensors.torch import load_file, save_file

from mtl.components.backbones.adapters import base_state
from mtl.components.savers.checkpoint import BACKBONE, HEADS, LABELS, SPEC, STATE
from mtl.errors import MtlError
from mtl.predictor import load


def merge_adapter(folder: str | Path, task: str, out: str | Path, base: str | Path | None = None) -> Path:
    """Write `out` (see the module docstring); `base`: for a folder of adapters alone, the encoder they go over."""
    folder, out = Path(folder), Path(out)
    if out.exists():
        raise MtlError(f"{out}: exists; choose another output folder")
    predictor = load(folder, "cpu", "fp32", base=base)
    encoder = predictor.model.backbone
    if task not in encoder.adapters:
        raise MtlError(f"{folder}: task {task!r} has no adapter here (tasks with adapters: {sorted(encoder.adapters)})")
    spec = json.loads((folder / SPEC).read_text(encoding="utf-8"))
    entry = next(t for t in spec["tasks"] if t["name"] == task)
    if entry.get("reuse_head_with") or any(t.get("reuse_head_with") == task for t in spec["tasks"]):
        raise MtlError(f"{folder}: task {task!r} shares its heads with another task; merge needs a task with heads "
                       "of its own")
    for layer in encoder._lora_layers:
        layer.merge(adapter_names=[task])
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        _write(folder, work, encoder, spec, entry)
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out


def _write(folder: Path, work: Path, encoder, spec: dict, entry: dict) -> None:
    task = entry["name"]
    (work / BACKBONE).mkdir()
    encoder.config.save_pretrained(str(work / BACKBONE))
    weights = {key: tensor.contiguous().cpu() for key, tensor in base_state(encoder.model).items()}
    save_file(weights, str(work / BACKBONE / "model.safetensors"), metadata={"format": "pt"})
    shutil.copytree(folder / entry["tokenizer"], work / entry["tokenizer"])
    heads = {key: tensor for key, tensor in load_file(str(folder / HEADS)).items() if key.startswith(f"{task}.")}
    save_file(heads, str(work / HEADS))
    labels = json.loads((folder / LABELS).read_text(encoding="utf-8"))
    (work / LABELS).write_text(json.dumps({task: labels.get(task, {})}, indent=1, ensure_ascii=False), encoding="utf-8")
    backbone = {key: value for key, value in spec["backbone"].items()
                if key not in ("adapters", "base_checksum", "base_source", "base_weights")}
    merged = {**spec, "backbone": backbone, "tasks": [entry], "merged_adapter": task}
    (work / SPEC).write_text(json.dumps(merged, indent=1, ensure_ascii=False), encoding="utf-8")
    if (folder / STATE).is_file():
        shutil.copy2(folder / STATE, work / STATE)
