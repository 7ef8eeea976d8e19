"""Heads: task layers on top of backbone outputs (loss, predictions, metrics)."""
from mtl.components.heads.base import Head
from mtl.components.heads.classify import Classify
from mtl.components.heads.crf import CRF
from mtl.components.heads.joint import intent_slot_heads
from mtl.components.heads.mask_lm import MaskLM
from mtl.components.heads.match import Match
from mtl.components.heads.sequence_label import SequenceLabel
from mtl.components.heads.mrc import MRC

__all__ = ["Head", "Classify", "SequenceLabel", "CRF", "intent_slot_heads", "MaskLM", "Match", "MRC"]
