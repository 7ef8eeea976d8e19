"""Backbones: any HF transformers encoder loaded from a name, a local folder or a config; encoders shipped on
PyPI in parts, assembled once (`get_encoder`); LoRA adapters over a shared encoder (`LoRA`)."""
from mtl.components.backbones.adapters import LoRA
from mtl.components.backbones.encoder import BERT, ERNIE, Encoder, RoBERTa
from mtl.components.backbones.store import encoder_dir, get_encoder

__all__ = ["Encoder", "BERT", "ERNIE", "RoBERTa", "LoRA", "get_encoder", "encoder_dir"]
