"""Readers: file -> examples -> features -> batches (dicts of tensors)."""
from mtl.components.readers.base import Feature, Reader
from mtl.components.readers.classify import ClassifyReader
from mtl.components.readers.sequence_label import IntentSlotReader, SequenceLabelReader, WordTaggingReader

__all__ = ["Feature", "Reader", "ClassifyReader", "SequenceLabelReader", "IntentSlotReader", "WordTaggingReader"]
