"""Optimizers: AdamW with decay groups (no decay on bias / LayerNorm), fused where available."""
from mtl.components.optimizers.adam import Adam, decay_groups

__all__ = ["Adam", "decay_groups"]
