"""Per-task LoRA adapters over one shared encoder, through PEFT.

Each task that asks for one gets its own adapter (named after the task) in the chosen linear layers of the
shared encoder; the encoder runs one adapter at a time (`use_adapter`), chosen per batch by the task the
batch belongs to. A task without an adapter runs the encoder with every adapter switched off. Where every
task of a run has an adapter the encoder's own weights are frozen: only the adapters and the heads train, so
a task adds a few hundred kilobytes to a base that stays byte-for-byte the same (`base_checksum`).

PEFT is used for the layers themselves (its LoRA Linear, its adapter file format: `adapter_config.json` +
`adapter_model.safetensors`, which PEFT users load onto the same base with `PeftModel.from_pretrained`), and
imported inside the functions that need it, never at module level: PEFT imports transformers' modelling
code and accelerate, which a process without adapters (an ONNX server, `mtl --help`) must not pay for.
"""
import hashlib
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mtl.errors import MtlError

# the attention's query and value projections, by the names architectures give them (LoRA's default targets)
QUERY_VALUE = (("query", "value"), ("q", "v"), ("q_lin", "v_lin"), ("query_proj", "value_proj"))


@dataclass(frozen=True)
class LoRA:
    """A LoRA adapter: `r` the rank, `alpha` its scale (the update is scaled by alpha / r), `dropout` on its
    input, `target_modules` the linear layers it adapts (names of modules, matched at the end of their path:
    `dense` is every layer of that name, `intermediate.dense` only the feed-forward input projection of BERT's
    layers; "auto": the attention's query and value projections, whatever the architecture calls them)."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.1
    target_modules: tuple[str, ...] | str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)  # passed to peft.LoraConfig as they are

    def __post_init__(self) -> None:
        if not (isinstance(self.r, int) and self.r >= 1):
            raise ValueError(f"LoRA rank r must be an integer >= 1, got {self.r!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if isinstance(self.target_modules, list):
            object.__setattr__(self, "target_modules", tuple(self.target_modules))

    def spec(self) -> dict[str, Any]:
        """Plain values (model.json, configs)."""
        values = asdict(self)
        values["target_modules"] = list(self.target_modules) if not isinstance(self.target_modules, str) \
            else self.target_modules
        return values


def linear_name(path: str) -> str:
    """A linear layer's own name; one an adapter already wraps is `<name>.base_layer`."""
    return path.removesuffix(".base_layer").rsplit(".", 1)[-1]


def names_a_layer(target: str, path: str) -> bool:
    """Whether `target` names the layer at `path` as PEFT matches it: the whole path or its end, at a dot."""
    path = path.removesuffix(".base_layer")
    return path == target or path.endswith("." + target)


def resolve_targets(model: nn.Module, lora: LoRA) -> list[str]:
    """The module names LoRA adapts in `model`: the given ones (each must name at least one nn.Linear), or for
    "auto" the first pair of query/value names the model's linear layers use."""
    paths = [name for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and ".lora_" not in name]
    linear = {linear_name(path) for path in paths}
    if lora.target_modules == "auto":
        for pair in QUERY_VALUE:
            if set(pair) <= linear:
                return list(pair)
        raise MtlError(f"LoRA target_modules='auto' found no query/value projections in {type(model).__name__} "
                       f"(its linear layers: {sorted(linear)[:12]}); name the modules to adapt")
    missing = [target for target in lora.target_modules if not any(names_a_layer(target, p) for p in paths)]
    if missing:
        raise MtlError(f"LoRA target_modules {missing} name no linear layer of {type(model).__name__} (its linear "
                       f"layers: {sorted(linear)[:12]}; a dotted name such as `intermediate.dense` is matched at "
                       "the end of a layer's path)")
    return list(lora.target_modules)


def add_adapter(model: nn.Module, name: str, lora: LoRA) -> None:
    """Inject adapter `name` into `model` (in place). PEFT freezes everything but the adapters as it injects;
    `set_trainable` decides afterwards what trains."""
    from peft import LoraConfig, inject_adapter_in_model
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=resolve_targets(model, lora), **lora.extra)
    with warnings.catch_warnings():  # a second adapter in one model is the point here, not a slip
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        inject_adapter_in_model(config, model, adapter_name=name)


def lora_layers(model: nn.Module) -> list[nn.Module]:
    from peft.tuners.lora import LoraLayer
    return [module for module in model.modules() if isinstance(module, LoraLayer)]


def use_adapter(layers: list[nn.Module], name: str | None) -> None:
    """Run adapter `name` in every LoRA layer, or none of them (None: the encoder's own weights alone).
    PEFT's switch also sets requires_grad; it is put back, so every adapter keeps training when its task's
    turn comes (the optimizer holds them all)."""
    for layer in layers:
        if name is None:
            layer.enable_adapters(False)
            continue
        layer.enable_adapters(True)
        layer.set_adapter(name)
        for adapter in layer.lora_A:
            layer.lora_A[adapter].requires_grad_(True)
            layer.lora_B[adapter].requires_grad_(True)


def set_trainable(model: nn.Module, base: bool) -> None:
    """Adapters always train; the encoder's own weights only when `base` (some task fine-tunes it)."""
    for param_name, param in model.named_parameters():
        param.requires_grad_(base or ".lora_" in param_name)


def adapter_state(model: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """Adapter `name`'s weights in PEFT's file layout (keys without the adapter name)."""
    from peft import get_peft_model_state_dict
    return get_peft_model_state_dict(model, adapter_name=name)


def load_adapter_state(model: nn.Module, name: str, state: dict[str, torch.Tensor]) -> None:
    from peft import set_peft_model_state_dict
    result = set_peft_model_state_dict(model, state, adapter_name=name)
    missing = [key for key in result.missing_keys if ".lora_" in key and f".{name}." in key]
    if missing:
        raise ValueError(f"adapter {name!r}: weights missing for {missing[:4]}")


def base_names(model: nn.Module) -> dict[str, str]:
    """The base weights' own names -> their names in `model` (PEFT moves a wrapped layer's to `base_layer.`)."""
    return {key.replace(".base_layer.", "."): key for key in model.state_dict() if ".lora_" not in key}


def base_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The encoder's own weights under their own names (PEFT's `base_layer.` taken out, adapters left out):
    what plain transformers loads, and what the checksum covers."""
    return {key.replace(".base_layer.", "."): tensor for key, tensor in model.state_dict().items()
            if ".lora_" not in key}


def base_checksum(model: nn.Module) -> str:
    """sha256 of the base weights (names, shapes, dtypes and bytes, in name order): an adapter is only valid
    over the very weights it was trained on."""
    digest = hashlib.sha256()
    for key, tensor in sorted(base_state(model).items()):
        tensor = tensor.detach().contiguous().cpu()
        digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


ADAPTER_WEIGHTS, ADAPTER_CONFIG = "adapter_model.safetensors", "adapter_config.json"
PEFT_PREFIX = "base_model.model."  # how a PeftModel names the encoder's weights in its files


def save_adapter(model: nn.Module, name: str, lora: LoRA, folder: Path) -> None:
    """Adapter `name` in PEFT's own layout: `PeftModel.from_pretrained(<the base encoder>, folder)` loads it."""
    from peft import LoraConfig
    folder.mkdir(parents=True, exist_ok=True)
    state = {PEFT_PREFIX + key: tensor.detach().contiguous().cpu()
             for key, tensor in adapter_state(model, name).items()}
    save_file(state, str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=resolve_targets(model, lora), **lora.extra)
    config.save_pretrained(str(folder))


def load_adapter(model: nn.Module, name: str, folder: Path) -> None:
    """The weights of adapter `name` (already added with its LoRA settings) from `folder`'s safetensors file;
    the folder's adapter_config.json is PEFT's, for PEFT: what mtl builds comes from model.json."""
    state = {key.removeprefix(PEFT_PREFIX): tensor for key, tensor in load_file(str(folder / ADAPTER_WEIGHTS)).items()}
    load_adapter_state(model, name, state)
