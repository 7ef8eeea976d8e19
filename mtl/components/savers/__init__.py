"""The one persistence module: what a checkpoint holds (checkpoint.py) and the Saver that writes and reads
them (saver.py): save, load, resume state, export, keep-last-K, best-of; atomic writes."""
from mtl.components.savers.checkpoint import Snapshot
from mtl.components.savers.saver import Saver

__all__ = ["Saver", "Snapshot"]
