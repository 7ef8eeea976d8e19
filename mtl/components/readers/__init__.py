"""Readers: file -> examples -> features -> batches (dicts of tensors)."""
from mtl.components.readers.base import Feature, Reader
from mtl.components.readers.classify import ClassifyReader
from mtl.components.readers.conll import conll_label_map, read_conll
from mtl.components.readers.mask_lm import MaskLMReader
from mtl.components.readers.match import MatchReader
from mtl.components.readers.sequence_label import IntentSlotReader, SequenceLabelReader, WordTaggingReader
from mtl.components.readers.mrc import MRCReader
from mtl.components.readers.squad import score_squad_predictions

__all__ = ["conll_label_map", "read_conll", "Feature", "Reader", "ClassifyReader", "SequenceLabelReader", "IntentSlotReader", "WordTaggingReader", "MaskLMReader", "MatchReader", "MRCReader", "score_squad_predictions"]
