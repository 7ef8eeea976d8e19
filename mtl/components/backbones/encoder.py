"""Backbone: any HF transformers encoder, from a name, a local folder or a config.

transformers' modelling code (`modeling_utils`, `PreTrainedModel`, the model classes: seconds to import) loads
when an encoder is built, not when this module is imported: `AutoModel` and `MODEL_MAPPING` are read from
transformers' own lazy namespace at call time, and `PreTrainedModel` is named for type checkers only. A
process that only checks a model folder (the ONNX runtime, `mtl predict` on an export) never pays for it."""
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch
import transformers
from safetensors.torch import save_file
from torch import nn
from transformers import AutoConfig, PretrainedConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel

from mtl.components.backbones import adapters
from mtl.components.backbones.adapters import LoRA
from mtl.errors import MtlError

PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")


def safe_weights_kwargs(name_or_path: str | Path, kwargs: dict) -> dict:
    """A local folder loads only from safetensors (pickled weights could run code when unpickled): a folder
    with only `pytorch_model.bin` is refused with a message saying how to convert it."""
    folder = Path(name_or_path)
    if not folder.is_dir() or kwargs.get("use_safetensors") is False:
        return kwargs
    if not any(folder.glob("*.safetensors")):
        found = [name for name in PICKLE_WEIGHTS if (folder / name).exists()]
        if found:
            raise MtlError(f"{folder / found[0]}: refused: mtl loads weights only from safetensors, and this folder "
                           "has only pickled weights, which could run code when loaded. If you trust its source, "
                           "convert it once: `AutoModel.from_pretrained(folder).save_pretrained(folder, "
                           "safe_serialization=True)` (writes model.safetensors)")
    return {**kwargs, "use_safetensors": True}


def attention_implementation(config: PretrainedConfig) -> str | None:
    """`sdpa` (PyTorch's fused attention, and the one the speed kernels build on) where transformers implements
    it for this architecture, `eager` where it does not (MPNet, for one); None for a class transformers does
    not map (remote code), which then picks for itself."""
    model_class = transformers.MODEL_MAPPING.get(type(config), None)
    if model_class is None:
        return None
    return "sdpa" if getattr(model_class, "_supports_sdpa", False) else "eager"


class Encoder(nn.Module):
    """Wraps an HF encoder; provides `sequence_output`, `pooled_output` and `word_embeddings`.

    `pooled_output` is the model's pooler when it has one (BERT/ERNIE), else the first token's vector.
    """

    output_fields = ("sequence_output", "pooled_output", "word_embeddings")
    default_model_type: str | None = None  # from_config's model_type when a config dict has none

    def __init__(self, model: "PreTrainedModel") -> None:
        super().__init__()
        self.model = model
        self.config = model.config
        self.adapters: dict[str, LoRA] = {}  # LoRA adapters by name (a task's name), mtl.components.backbones.adapters
        self._lora_layers: list[nn.Module] = []
        self.source: str | None = None  # the name or folder it was loaded from (an adapter folder records it)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, trust_remote_code: bool = False,
                        layers: Sequence[int] | None = None, **kwargs) -> "Encoder":
        """Load weights from a local folder (or a hub name when online); never runs remote code unasked.
        A local folder loads from safetensors only (`use_safetensors=True`): pickled weights are refused.
        `layers`: keep only these transformer layers (`keep_layers`), e.g. a 3-layer student from a 6-layer
        encoder."""
        kwargs = safe_weights_kwargs(name_or_path, kwargs)
        if "attn_implementation" not in kwargs:
            config = AutoConfig.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code)
            kwargs["attn_implementation"] = attention_implementation(config)
        model = transformers.AutoModel.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code, **kwargs)
        encoder = cls(model)
        encoder.source = str(name_or_path)
        return encoder.keep_layers(layers) if layers is not None else encoder

    def keep_layers(self, layers: Sequence[int]) -> "Encoder":
        """Keep only the transformer layers `layers` (indices, increasing), dropping the others: the usual way
        to start a smaller student from a larger encoder (layers [0, 2, 4] of six). The config follows, so a
        saved folder loads as the smaller model."""
        blocks, owner, name = _layer_list(self.model)
        layers = [int(i) for i in layers]
        if not layers or layers != sorted(set(layers)) or not all(0 <= i < len(blocks) for i in layers):
            raise ValueError(f"layers must be increasing indices of the encoder's {len(blocks)} layers, got {layers}")
        setattr(owner, name, nn.ModuleList([blocks[i] for i in layers]))
        self.config.num_hidden_layers = len(layers)
        if isinstance(getattr(self.config, "layer_types", None), list):
            self.config.layer_types = [self.config.layer_types[i] for i in layers]
        return self

    @classmethod
    def from_config(cls, config: PretrainedConfig | dict) -> "Encoder":
        """Random weights from a config (a PretrainedConfig or a dict with `model_type`; `BERT.from_config`
        takes 'bert' when the dict has none)."""
        if isinstance(config, dict):
            config = {"model_type": cls.default_model_type, **config}
            if config["model_type"] is None:
                raise ValueError("from_config: the config dict needs a model_type (e.g. 'bert', 'roberta'), or "
                                 "use BERT.from_config for a BERT")
            config = AutoConfig.for_model(config.pop("model_type"), **config)
        return cls(transformers.AutoModel.from_config(config, attn_implementation=attention_implementation(config)))

    @property
    def input_fields(self) -> tuple[str, ...]:
        """Fields a reader must yield; token types only for models that have them."""
        needs_types = getattr(self.config, "type_vocab_size", 1) > 1
        return ("input_ids", "attention_mask") + (("token_type_ids",) if needs_types else ())

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def word_embeddings(self) -> nn.Parameter:
        return self.model.get_input_embeddings().weight

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        inputs = {name: batch[name] for name in self.input_fields}
        out = self.model(**inputs, return_dict=True)
        sequence = out.last_hidden_state
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            pooled = sequence[:, 0]
        return {"sequence_output": sequence, "pooled_output": pooled, "word_embeddings": self.word_embeddings}

    # ---- adapters -----------------------------------------------------------------------------------------
    def add_adapter(self, name: str, lora: LoRA) -> None:
        """A LoRA adapter `name` in this encoder's linear layers (freezes the encoder's own weights: see
        `set_trainable`). Adding a name twice is refused."""
        if name in self.adapters:
            raise ValueError(f"the encoder already has an adapter named {name!r}")
        adapters.add_adapter(self.model, name, lora)
        self.adapters[name] = lora
        self._lora_layers = adapters.lora_layers(self.model)

    def use_adapter(self, name: str | None) -> None:
        """Run adapter `name` from now on (None: the encoder's own weights alone); free without adapters."""
        if self.adapters:
            adapters.use_adapter(self._lora_layers, name)

    def set_trainable(self, base: bool) -> None:
        """Adapters train; the encoder's own weights only when `base`."""
        adapters.set_trainable(self.model, base)

    def base_checksum(self) -> str:
        return adapters.base_checksum(self.model)

    def save_adapters(self, folder: str | Path) -> None:
        """Each adapter in `folder/<name>/`, in PEFT's layout."""
        for name, lora in self.adapters.items():
            adapters.save_adapter(self.model, name, lora, Path(folder) / name)

    def load_adapter(self, name: str, lora: LoRA, folder: str | Path) -> None:
        """Add adapter `name` with its settings and load its weights from `folder` (save_adapters' layout)."""
        self.add_adapter(name, lora)
        self.load_adapter_weights(name, folder)

    def load_adapter_weights(self, name: str, folder: str | Path) -> None:
        adapters.load_adapter(self.model, name, Path(folder))

    def base_names(self) -> dict[str, str]:
        """The encoder's own weights: their names in a saved folder -> their names here (adapters wrap layers)."""
        return adapters.base_names(self.model)

    def load_weights(self, folder: str | Path) -> None:
        """Load pretrained weights from an HF folder into this encoder (PALM's load_pretrain)."""
        loaded = transformers.AutoModel.from_pretrained(str(folder), config=self.config,
                                                        **safe_weights_kwargs(folder, {}))
        self.model.load_state_dict(loaded.state_dict())

    def save(self, folder: str | Path, weights: bool = True) -> None:
        """HF format (config.json + model.safetensors): loadable by plain transformers. With adapters, the
        encoder's own weights alone, under their own names (the adapters are saved apart, in PEFT's format);
        `weights=False`: the config alone (a folder of adapters over a base kept elsewhere)."""
        if not weights:
            Path(folder).mkdir(parents=True, exist_ok=True)
            self.config.save_pretrained(str(folder))
            return
        if not self.adapters:
            self.model.save_pretrained(str(folder), safe_serialization=True)
            return
        Path(folder).mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(str(folder))
        state = {key: tensor.contiguous().cpu() for key, tensor in adapters.base_state(self.model).items()}
        save_file(state, str(Path(folder) / "model.safetensors"), metadata={"format": "pt"})


def _layer_list(model: nn.Module) -> tuple[nn.ModuleList, nn.Module, str]:
    """The encoder's stack of transformer layers (the ModuleList as long as `num_hidden_layers`), its owner and
    attribute name; BERT, RoBERTa, MPNet and their kin keep it at `encoder.layer`."""
    count = model.config.num_hidden_layers
    for _, owner in model.named_modules():
        for name, child in owner.named_children():
            if isinstance(child, nn.ModuleList) and len(child) == count:
                return child, owner, name
    raise ValueError(f"{type(model).__name__}: no list of {count} transformer layers found to drop layers from")


class BERT(Encoder):
    """PALM's name for the BERT backbone; any BERT-like HF encoder loads through it."""

    default_model_type = "bert"


ERNIE = BERT
RoBERTa = Encoder
