"""The one encoder a Predictor runs, built from checked model folders: a folder's own backbone/, or for folders
of LoRA adapters (exported with `base=False`) the base encoder the caller names, with every folder's adapters
added after checking that the base holds the very weights they were trained over.

Several folders can share one encoder: a deployed model and the adapter tasks trained over its base later,
served from one process with the base loaded once. A folder whose encoder was fine-tuned (no adapters) has
weights of its own and cannot share.
"""
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from transformers.utils import logging as hf_logging

from mtl.components.backbones.encoder import Encoder
from mtl.errors import MtlError
from mtl.safe_load import ModelPlan


@contextmanager
def quiet_progress() -> Iterator[None]:
    """transformers' `Loading weights: 100%` bar on stderr: its progress, not the user's (a load takes a
    second). Off while the backbone loads; as it was afterwards."""
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def shared_encoder(plans: list[ModelPlan], trust_code: bool, base: str | Path | None = None) -> Encoder:
    """The encoder of `plans` (checked model folders), with their adapters: from `base` when given, else from
    the first folder that holds encoder weights."""
    own = [str(plan.backbone_folder.parent) for plan in plans if not plan.adapters]
    if own and (len(plans) > 1 or base is not None):
        raise MtlError(f"{own[0]}: its encoder was fine-tuned (it has no adapters), so it runs its own encoder: it "
                       "takes no `base` and shares with no other folder; serve it as a model of its own")
    holder = None if base is not None else next((plan for plan in plans if plan.base_weights), None)
    if holder is not None:
        encoder = load_encoder(holder, holder.backbone_folder, trust_code)
    else:
        encoder = load_encoder(plans[0], base_folder(plans[0], base), trust_code)
    checksum = encoder.base_checksum() if any(plan.adapters for plan in plans) else None
    for plan in plans:
        add_adapters(encoder, plan, checksum)
    return encoder


def load_encoder(plan: ModelPlan, folder: Path, trust_code: bool) -> Encoder:
    """The checked Encoder class from an HF folder: safetensors only, local files only; transformers may run
    code the folder ships only when the caller trusts it (else `auto_map` was refused)."""
    try:
        with quiet_progress():
            return plan.backbone.cls.from_pretrained(folder, trust_remote_code=trust_code, use_safetensors=True,
                                                     local_files_only=True)
    except MtlError:
        raise  # already names the file (pickled weights refused)
    except Exception as error:  # noqa: BLE001 - a broken config or weights file
        raise MtlError(f"{plan.backbone.where}: cannot load the backbone from {folder}: "
                       f"{type(error).__name__}: {error}") from error


def base_folder(plan: ModelPlan, base: str | Path | None) -> Path:
    """The HF folder of the base a folder of adapters goes over: `base` itself, or an mtl model folder's
    backbone/ (a deployed model whose encoder the adapters were trained over)."""
    if base is None:
        raise MtlError(f"{plan.backbone_folder.parent}: holds adapters and heads only (tasks {sorted(plan.adapters)}); "
                       f"give the base encoder they were trained over (base=..., --base; it was loaded from "
                       f"{plan.base_source or 'an unrecorded place'}, weights checksum {plan.base_checksum[:12]})")
    base = Path(base)
    folder = base / "backbone" if (base / "model.json").is_file() else base
    if not (folder / "config.json").is_file():
        raise MtlError(f"{base}: not an encoder folder (no config.json) nor an mtl model folder")
    return folder


def add_adapters(encoder: Encoder, plan: ModelPlan, checksum: str | None) -> None:
    """The folder's LoRA adapters added to the encoder, after checking that its base weights (`checksum`) are
    the ones they were trained over: an adapter over other weights would predict nonsense, silently."""
    if not plan.adapters:
        return
    if checksum != plan.base_checksum:
        raise MtlError(f"{plan.backbone_folder.parent}: the encoder weights given (checksum {checksum[:12]}) are not "
                       f"the base the adapters of {sorted(plan.adapters)} were trained over "
                       f"({plan.base_checksum[:12]}); load them over that base")
    for name, (lora, folder) in plan.adapters.items():
        if name in encoder.adapters:
            raise MtlError(f"{folder}: a task named {name!r} is already served; task names must differ")
        try:
            encoder.load_adapter(name, lora, folder)
        except Exception as error:  # noqa: BLE001 - a corrupt or mismatched adapter file
            raise MtlError(f"{folder}: adapter {name!r} cannot be loaded: {type(error).__name__}: {error}") from error
