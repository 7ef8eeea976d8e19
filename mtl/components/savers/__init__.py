"""Savers: checkpoints every N steps, keep last K, final save, atomic writes."""
from mtl.components.savers.saver import Saver

__all__ = ["Saver"]
