"""Backbones: any HF transformers encoder loaded from a name, a local folder or a config."""
from mtl.components.backbones.encoder import BERT, ERNIE, Encoder, RoBERTa

__all__ = ["Encoder", "BERT", "ERNIE", "RoBERTa"]
