"""What a checkpoint folder holds and how it loads back: HF backbone, heads, label maps, tokenizer, state."""
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mtl.trainers.model import MultiTaskModel

BACKBONE, HEADS, LABELS, STATE, TRAINING = "backbone", "heads.safetensors", "labels.json", "trainer_state.json", \
    "training_state.pt"


def write_checkpoint(folder: Path, model: MultiTaskModel, label_names: dict[str, dict[str, list[str]]],
                     tokenizer: Any, state: dict, training: dict | None = None) -> None:
    """Weights in safetensors (no pickle); optimizer/scheduler/sampler state for resuming beside them."""
    model.backbone.save(folder / BACKBONE)
    heads = {k: v.detach().contiguous().cpu() for k, v in model.heads.state_dict().items()}
    save_file(heads, str(folder / HEADS))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder / "tokenizer"))
    (folder / LABELS).write_text(json.dumps(label_names, indent=1, ensure_ascii=False), encoding="utf-8")
    (folder / STATE).write_text(json.dumps(state, indent=1), encoding="utf-8")
    if training is not None:
        torch.save(training, folder / TRAINING)


def load_weights(folder: str | Path, model: MultiTaskModel) -> dict:
    """Load backbone and head weights into an already assembled model; returns the saved trainer state."""
    folder = Path(folder)
    if not (folder / HEADS).is_file():
        raise FileNotFoundError(f"{folder}: not an mtl checkpoint (no {HEADS})")
    backbone_file = folder / BACKBONE / "model.safetensors"
    _load_exactly(model.backbone.model, backbone_file)
    _load_exactly(model.heads, folder / HEADS)
    return json.loads((folder / STATE).read_text(encoding="utf-8"))


def load_training_state(folder: str | Path) -> dict | None:
    path = Path(folder) / TRAINING
    return torch.load(path, weights_only=True) if path.is_file() else None


def _load_exactly(module: torch.nn.Module, file: Path) -> None:
    """Load a safetensors file whose keys must match the module's exactly: a mismatch is a wrong model."""
    try:
        result = module.load_state_dict(load_file(str(file)), strict=False)
    except RuntimeError as error:  # shape mismatches: name the file, not torch's internals
        raise ValueError(f"{file}: weights do not fit the assembled model: {str(error)[:500]}") from None
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{file}: weights do not match the assembled model: missing {result.missing_keys[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")
