"""Reader base class: file -> examples -> features (tokenized once) -> padded batches of tensors."""
import copy
import logging
import operator
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from mtl.components.readers.batch_drawing import BatchDrawing
from mtl.components.readers.batching import stack
from mtl.components.readers.cache import cached_features
from mtl.components.readers.feature import Feature
from mtl.components.readers.stream import Stream, check_label_ids
from mtl.components.readers.table import FeatureTable
from mtl.components.readers.tokenization import load_tokenizer
from mtl.errors import MtlError, check_contract

log = logging.getLogger(__name__)


class Reader(BatchDrawing):
    """Base of every reader. Subclasses implement `_read_examples` and `_featurize`. How batches are drawn
    from the features (epochs, shuffling, shards, the resumable position) is `BatchDrawing`'s part.

    A reader declares the fields it yields: `input_fields` always, `label_fields` when it has labels
    (phase 'train' or 'eval'). Token-level fields are padded to the longest sequence of each batch.
    """

    input_fields: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")
    label_fields: tuple[str, ...] = ()
    token_label_fields: tuple[str, ...] = ()  # padded with -100 so the loss ignores them
    label_maps: dict[str, str] = {}  # label field -> the attribute holding its {name: id} map
    default_format: str = "tsv"  # load_data's file_format when none is given

    def __init__(self, vocab_path: str | Path, max_seqlen: int = 128, seed: int = 0, phase: str = "train",
                 do_lower_case: bool = True) -> None:
        if phase not in ("train", "eval", "predict"):
            raise ValueError(f"phase must be 'train', 'eval' or 'predict', got {phase!r}")
        max_seqlen = _integer("max_seqlen", max_seqlen, 3, "[CLS], one token, [SEP]")
        self.tokenizer = load_tokenizer(vocab_path, do_lower_case)
        self.max_seqlen, self.seed, self.phase = max_seqlen, seed, phase
        self.features = FeatureTable.of([])
        self.batch_size, self.num_epochs, self.shuffle = 32, None, phase == "train"
        self.group_by_length = True
        # speed switches (see load_data): token budgets, batch widths rounded up, the features cache
        self.max_tokens, self.pad_to_multiple_of, self.cache_dir = None, None, None
        self.input_file: str | None = None
        self.file_format: str | None = None
        # name -> f(metas): extra per-example inputs collated into each training batch (a teacher's targets)
        self.side_inputs: dict[str, Callable[[list[dict]], Any]] = {}
        self.epoch, self.position = 0, 0
        self._stream: Stream | None = None  # load_stream: batches from a file read in a bounded window

    @property
    def features(self) -> FeatureTable:
        """The tokenized examples, stored column by column (mtl.components.readers.table); `features[i]` is
        the Feature of example i. A list of Features may be assigned: it is packed into a table."""
        return self._features

    @features.setter
    def features(self, features: Any) -> None:
        self._features = FeatureTable.of(features)

    # ---- subclass hooks -------------------------------------------------------------------------
    def _read_examples(self, path: str, file_format: str) -> list[dict]:
        raise NotImplementedError

    def _build_label_maps(self, examples: Iterable[dict], path: str, file_format: str) -> Iterable[dict]:
        """Build the label maps that `label_map="auto"` asks for from the examples `_read_examples` returned
        (whoever wrote it: an override reading another format need not build them), and return the examples.
        Readers without auto maps return them as they are."""
        return examples

    def _featurize(self, examples: list[dict]) -> Iterable[Feature]:
        """Features of `examples`: a list, or a generator (packed into a table as they come)."""
        raise NotImplementedError

    def _examples_from_texts(self, texts: list[str]) -> list[dict]:
        raise NotImplementedError(f"{type(self).__name__} cannot predict from raw texts")

    def _examples_from_lines(self, path: str, lines: list[tuple[int, str]]) -> list[dict]:
        """Examples of (line number, text) of a one-example-per-line file, for `load_stream`."""
        raise MtlError(f"{type(self).__name__} cannot stream (its examples are not one per line): use load_data")

    @property
    def label_names(self) -> dict[str, list[str]]:
        """Label field -> label names by id, for decoding predictions."""
        return {}

    def use_label_names(self, names: dict[str, list[str]]) -> "Reader":
        """Take the label maps a trained model was saved with (its labels.json entry: label field -> names by
        id) instead of building them from training data: `mtl eval` reads only the data it scores."""
        for field, values in names.items():
            if field not in self.label_maps:
                raise MtlError(f"{type(self).__name__} has no label field {field!r} to take saved labels for (it "
                               f"has {sorted(self.label_maps) or 'none'}): was the model trained with another reader?")
            setattr(self, self.label_maps[field], {name: index for index, name in enumerate(values)})
        return self

    # ---- PALM verbs -------------------------------------------------------------------------------
    def load_data(self, input_file: str | Path, file_format: str | None = None, num_epochs: int | None = None,
                  batch_size: int = 32, shuffle: bool | None = None, group_by_length: bool = True,
                  max_tokens: int | None = None, pad_to_multiple_of: int | None = None,
                  cache_dir: str | Path | None = None) -> "Reader":
        """Read and tokenize `input_file` once; batches are drawn later by the trainer.

        `group_by_length` (training only) batches examples of similar length to cut padding. `max_tokens`
        (training only): each batch holds as many examples as fit rows x padded width <= max_tokens
        (`batch_size` then only sizes the shuffled chunks that are sorted by length). `pad_to_multiple_of`:
        batch widths rounded up to a multiple, so a compiled model sees few distinct shapes. `cache_dir`:
        tokenized features are cached there per file and settings (mtl.components.readers.cache).
        `file_format` defaults to the reader's `default_format`.
        """
        file_format = file_format or self.default_format
        batch_size = _integer("batch_size", batch_size, 1)
        options = (("max_tokens", max_tokens), ("pad_to_multiple_of", pad_to_multiple_of))
        self.max_tokens, self.pad_to_multiple_of = (None if v is None else _integer(n, v, 1) for n, v in options)
        self.input_file, self.group_by_length, self.file_format = str(input_file), group_by_length, file_format
        self.batch_size, self.num_epochs = batch_size, num_epochs
        if shuffle is not None:
            self.shuffle = shuffle
        self.cache_dir = None if cache_dir is None else str(cache_dir)
        self.features = cached_features(self, file_format, cache_dir, lambda: self._featurize(self._build_label_maps(
            self._read_examples(self.input_file, file_format), self.input_file, file_format)))
        return self

    def load_stream(self, input_path: str | Path, steps_per_epoch: int, batch_size: int = 32,
                    shuffle_buffer: int = 10_000, chunk_lines: int = 1_000, shuffle: bool | None = None) -> "Reader":
        """Train from a file, or a folder of shards, without holding it in memory (mtl.components.readers.stream;
        readers whose examples are one per line: masked-LM text, classification, tagging and matching TSV):
        lines are tokenized `chunk_lines` at a time into a buffer of `shuffle_buffer` examples that each batch
        draws from at random, pass after pass. The corpus size is not known up front, so `steps_per_epoch`
        says how many batches make an epoch of the trainer's budgets (num_epochs x mix_ratio x it). Resumes
        exactly; under torchrun each process reads its own lines. Training only: eval readers load_data."""
        if self.phase != "train":
            raise ValueError("load_stream is for training readers; evaluation reads its file whole (load_data)")
        numbers = (("steps_per_epoch", steps_per_epoch), ("batch_size", batch_size),
                   ("shuffle_buffer", shuffle_buffer), ("chunk_lines", chunk_lines))
        steps_per_epoch, batch_size, shuffle_buffer, chunk_lines = (_integer(n, v, 1) for n, v in numbers)
        if shuffle is not None:
            self.shuffle = shuffle
        self.input_file, self.batch_size, self.num_epochs, self.max_tokens = str(input_path), batch_size, None, None
        self._stream = Stream(self, input_path, steps_per_epoch, shuffle_buffer, chunk_lines)
        return self

    @property
    def streaming(self) -> bool:
        return self._stream is not None

    def register_with(self, backbone: Any) -> None:
        """Check up front that this reader yields every field the backbone needs."""
        check_contract(self, self.fields, backbone, tuple(backbone.input_fields))

    @property
    def fields(self) -> set[str]:
        """The fields this reader yields in its phase."""
        labels = self.label_fields if self.phase != "predict" else ()
        return set(self.input_fields) | set(labels)

    @property
    def num_examples(self) -> int:
        return len(self.features)

    @property
    def steps_per_epoch(self) -> int:
        """Batches in an epoch; with `max_tokens`, the real count of epoch 0 (later epochs differ by a few);
        streaming, the count given to load_stream."""
        if self._stream is not None:
            return self._stream.steps_per_epoch
        if self.max_tokens is not None and self.features:
            return len(self._epoch_batches(0))
        return max(1, -(-self.num_examples // self.batch_size))

    def check_num_classes(self, field: str, num_classes: int) -> None:
        """Fail up front, naming the file and the line, when a label id of `field` is outside a head's
        `num_classes` (PALM's integer-id TSVs): torch would fail later with 'Target out of bounds'."""
        if self._stream is not None:  # checked chunk by chunk as the stream reads
            self._stream.label_checks.append((field, num_classes))
            return
        column = self.features.scalar(field)
        if column is not None and (column.size == 0 or not _outside(column, num_classes).any()):
            return  # the common case, checked on the whole column at once
        check_label_ids(self.features, [(field, num_classes)], self.input_file or "<data>")

    # ---- derived readers ----------------------------------------------------------------------------
    def eval_reader(self, input_file: str | Path, file_format: str | None = None,
                    batch_size: int | None = None) -> "Reader":
        """A reader for dev/test data sharing this reader's tokenizer and label maps."""
        other = self._copy("eval")
        other = other.load_data(input_file, file_format, num_epochs=1, batch_size=batch_size or self.batch_size,
                                shuffle=False, cache_dir=self.cache_dir)
        other.pad_to_multiple_of = self.pad_to_multiple_of  # the same shapes as training (compiled models)
        return other

    def from_texts(self, texts: list[str], batch_size: int | None = None) -> "Reader":
        """A predict-phase reader over raw texts (no labels)."""
        other = self._copy("predict")
        other.batch_size, other.shuffle, other.input_file = batch_size or self.batch_size, False, "<texts>"
        other.features = other._featurize(other._examples_from_texts(list(texts)))
        return other

    def _copy(self, phase: str) -> "Reader":
        other = copy.copy(self)
        other.phase, other.features, other.epoch, other.position, other._stream = phase, [], 0, 0, None
        other.side_inputs = {}  # a teacher's targets belong to the training file alone
        return other

    def collate(self, features: list[Feature]) -> dict:
        """Stack one batch; sequences are padded to the longest in this batch, not to max_seqlen."""
        batch: dict[str, Any] = {}
        for name in sorted(self.fields - {"attention_mask"}):
            values = [feature.fields[name] for feature in features]
            batch[name] = stack(values, self._pad_value(name), self.pad_to_multiple_of, self.max_seqlen)
        lengths = [len(feature.fields["input_ids"]) for feature in features]
        batch["attention_mask"] = stack([[1] * n for n in lengths], 0, self.pad_to_multiple_of, self.max_seqlen)
        batch["meta"] = [feature.meta for feature in features]
        for name, provide in self.side_inputs.items():
            batch[name] = provide(batch["meta"])
        return batch

    def _pad_value(self, name: str) -> int:
        if name == "input_ids":
            return self.tokenizer.pad_token_id or 0
        return -100 if name in self.token_label_fields else 0


def _outside(ids: np.ndarray, num_classes: int) -> np.ndarray:
    """Which ids are neither -100 (ignored) nor a class id 0..num_classes-1."""
    return (ids != -100) & ((ids < 0) | (ids >= num_classes))


def _integer(name: str, value: Any, minimum: int, why: str = "") -> int:
    """`value` as an int >= minimum (numpy integers welcome), else a ValueError naming the argument."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        number = None
    if number is None or number < minimum:
        reason = f" ({why})" if why else ""
        raise ValueError(f"{name} must be an integer >= {minimum}{reason}, got {value!r}")
    return number
