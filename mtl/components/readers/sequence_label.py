"""Word-level tagging readers: PALM's SequenceLabelReader and the ATIS/SNIPS joint intent+slot reader."""
import logging
from pathlib import Path

from mtl.components.readers.base import Feature, Reader
from mtl.components.readers.conll import check_known_tags, read_conll, tag_map_from
from mtl.components.readers.files import load_label_map, names_of, read_tsv, tsv_columns
from mtl.components.readers.intent_folder import check_tags, has_seq_out, read_intent_folder
from mtl.components.readers.labels import LabelLookup, labels_of
from mtl.components.readers.tag_scheme import check_tag_scheme
from mtl.components.readers.words import encode_words, start_mask, token_labels
from mtl.errors import DataError, MtlError

log = logging.getLogger(__name__)

AUTO_LABELS = "auto"  # label_map='auto': built from the training data


class WordTaggingReader(Reader):
    """Shared featurization of word-tagged examples ({"words", "tags", "line"} dicts)."""

    input_fields = Reader.input_fields + ("word_start_mask",)
    tag_field = "label_ids"
    label_maps = {"label_ids": "tag_map"}
    tag_file: str | None = None  # inside a data folder, the file the tags come from (for error messages)

    def __init__(self, vocab_path: str | Path, max_seqlen: int = 128, label_map=None, seed: int = 0,
                 phase: str = "train", do_lower_case: bool = True) -> None:
        super().__init__(vocab_path, max_seqlen, seed, phase, do_lower_case)
        self.tag_map = load_label_map(label_map)

    @property
    def label_names(self) -> dict[str, list[str]]:
        return {self.tag_field: names_of(self.tag_map)} if self.tag_map else {}

    def _examples_from_texts(self, texts: list[str]) -> list[dict]:
        return [{"words": text.split(), "tags": None, "line": i + 1, "text": text} for i, text in enumerate(texts)]

    def _featurize(self, examples: list[dict]) -> list[Feature]:
        source = self.input_file or "<data>"
        encoded = encode_words(self.tokenizer, [ex["words"] for ex in examples], self.max_seqlen, source)
        tag_source = str(Path(source) / self.tag_file) if self.tag_file and self.input_file else source
        lookup = LabelLookup(self.tag_map or {}, tag_source, self.phase, "tag")
        features = []
        for example, enc in zip(examples, encoded):
            length = len(enc["input_ids"])
            fields = {"input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"],
                      "word_start_mask": start_mask(enc["word_starts"], length)}
            meta = {"words": example["words"], "word_starts": enc["word_starts"], "line": example["line"],
                    "text": example.get("text", " ".join(example["words"])), "gold": {}}
            if example["tags"] is not None and self.phase != "predict":
                ids = [lookup(tag, example["line"]) for tag in example["tags"]]
                fields[self.tag_field] = token_labels(enc["word_starts"], ids, length)
                meta["gold"][self.tag_field] = example["tags"]
            self._add_extra(example, fields, meta)
            features.append(Feature(fields, meta))
        lookup.report()
        return features

    def _add_extra(self, example: dict, fields: dict, meta: dict) -> None:
        """Hook for readers that yield more than tags (the joint reader adds the intent)."""


def _check_pieces(path: str, line: int, pieces: list[str], what: str) -> None:
    """No empty token or label between \\x02 separators (a doubled, leading or trailing \\x02)."""
    for index, piece in enumerate(pieces, start=1):
        if not piece.strip():
            raise DataError(path, line, f"{what} {index} of {len(pieces)} is empty",
                            "remove the doubled, leading or trailing \\x02 separator")


class SequenceLabelReader(WordTaggingReader):
    """PALM's sequence labelling reader. `file_format='tsv'` (PALM's): `text_a<TAB>label`, tokens and labels
    separated by \\x02. `file_format='conll'`: CoNLL columns (word first, the tag in `tag_column`, default
    the last; blank lines between sentences; -DOCSTART- skipped), see `mtl.reader.read_conll`.

    A label map is required, as in PALM: a JSON file, a dict or a list (`mtl.reader.conll_label_map(path)`
    builds one from a CoNLL file), or `"auto"`: built from the training data this reader loads first ('O'
    first, then sorted); readers made with `eval_reader` share it.
    """

    label_fields = ("label_ids",)
    token_label_fields = ("label_ids",)
    file_formats = ("tsv", "conll")

    def __init__(self, vocab_path: str | Path, max_seqlen: int = 128, label_map=None, seed: int = 0,
                 phase: str = "train", do_lower_case: bool = True, tag_column: int = -1) -> None:
        if label_map is None and phase != "predict":
            raise ValueError("SequenceLabelReader needs label_map (a JSON file {label: id}, a dict, a list, "
                             "or 'auto' to build it from the training data)")
        self.auto_labels = isinstance(label_map, str) and label_map == AUTO_LABELS
        super().__init__(vocab_path, max_seqlen, None if self.auto_labels else label_map, seed, phase,
                         do_lower_case)
        self.tag_column = tag_column

    def _read_examples(self, path: str, file_format: str) -> list[dict]:
        if file_format not in self.file_formats:
            raise ValueError(f"SequenceLabelReader reads file_format 'tsv' or 'conll', got {file_format!r}")
        return read_conll(path, self.tag_column) if file_format == "conll" else _read_palm_tsv(path)

    def _build_label_maps(self, examples: list[dict], path: str, file_format: str) -> list[dict]:
        """`label_map="auto"`: the tag map from the training examples' `tags` (checked to look like BIO/BIOES/IO
        tags), whoever read them; CoNLL training tags are checked against a given map too."""
        examples, conll = list(examples), file_format == "conll"
        if self.tag_map is None and self.auto_labels and self.phase == "train":
            _check_tag_lists(examples, path)
            column = (f"tag_column={self.tag_column}" + (" (the last column)" if self.tag_column == -1 else "")
                      if conll else "the label column (text_a<TAB>label)")
            fix = ("put the word in the first column and the tag in tag_column" if conll else
                   "each line is text_a<TAB>label: the words, a tab, then their tags, \\x02-separated")
            check_tag_scheme(examples, path, column, fix)
            self.tag_map = tag_map_from(examples)
            log.info("%s: label map built from the data: %d tags", path, len(self.tag_map))
        if self.tag_map is None and self.phase != "predict":
            raise ValueError("SequenceLabelReader(label_map='auto'): load the training data first (phase 'train'); "
                             "eval readers share its label map")
        if conll and self.phase == "train":
            check_known_tags(examples, self.tag_map, path)
        return examples

    def _examples_from_lines(self, path: str, lines: list[tuple[int, str]]) -> list[dict]:
        """Streaming reads PALM's TSV (`text_a<TAB>label`, one sentence a line); CoNLL files span lines."""
        if self.tag_map is None:
            raise MtlError("SequenceLabelReader(label_map='auto') cannot stream: the tags are known only after the "
                           "whole file is read; give the label_map (a JSON file, dict or list)")
        rows = ((number, tsv_columns(path, number, text, TSV_HEADER)) for number, text in lines)
        return [_palm_tsv_example(path, number, *columns) for number, columns in rows if columns is not None]


TSV_HEADER = ("text_a", "label")


def _check_tag_lists(examples: list[dict], path: str, reader: str = "SequenceLabelReader") -> None:
    """Every example holds `words` and as many `tags` (strings), what the tag map is built from; else a
    DataError naming the example's line and the keys a word-tagging reader reads."""
    for index, example in enumerate(examples):
        words, tags = (example.get("words"), example.get("tags")) if isinstance(example, dict) else (None, None)
        if not (isinstance(words, list) and isinstance(tags, list) and len(words) == len(tags)
                and all(isinstance(tag, str) for tag in tags)):
            line = example.get("line") if isinstance(example, dict) else None
            raise DataError(path, line if isinstance(line, int) else None,
                            f"example {index + 1} from _read_examples has no list of tags, one string per word",
                            f'{reader} examples are dicts {{"words", "tags", "line"}}: words and tags are '
                            "lists of strings of one length; label_map='auto' is built from the tags")


def _read_palm_tsv(path: str) -> list[dict]:
    return [_palm_tsv_example(path, line, text, labels) for line, (text, labels) in read_tsv(path, TSV_HEADER)]


def _palm_tsv_example(path: str, line: int, text: str, labels: str) -> dict:
    """One `text_a<TAB>label` row (words and tags \\x02-separated), checked: no empty piece, one tag a word."""
    words, tags = text.split("\x02"), [tag.strip() for tag in labels.strip().split("\x02")]
    _check_pieces(path, line, words, "token")
    _check_pieces(path, line, tags, "label")
    check_tags(path, line, words, tags, "\\x02")
    return {"words": words, "tags": tags, "line": line}


class IntentSlotReader(WordTaggingReader):
    """The ATIS/SNIPS folder format (seq.in, seq.out, label): one pass feeds an intent and a slot head.

    A training folder without seq.out is read as intents only (logged): the reader then yields `intent_ids`
    alone, for a Classify head; `with_slots` says so explicitly (None: decided by the training folder).
    Label maps are built from the first data loaded in phase 'train' unless given (a slot map built so must
    look like BIO/BIOES/IO tags, see mtl.components.readers.tag_scheme); dev/test readers made with
    `eval_reader` share them.
    """

    token_label_fields = ("slot_ids",)
    tag_field = "slot_ids"
    tag_file = "seq.out"
    label_maps = {"intent_ids": "intent_map", "slot_ids": "tag_map"}

    def __init__(self, vocab_path: str | Path, max_seqlen: int = 128, intent_labels=None, slot_labels=None,
                 seed: int = 0, phase: str = "train", do_lower_case: bool = True,
                 with_slots: bool | None = None) -> None:
        super().__init__(vocab_path, max_seqlen, slot_labels, seed, phase, do_lower_case)
        self.intent_map = load_label_map(intent_labels)
        self.with_slots = with_slots

    @property
    def label_fields(self) -> tuple[str, ...]:  # type: ignore[override]
        """`intent_ids` and `slot_ids`; `intent_ids` alone for intent-only data."""
        return ("intent_ids",) if self.with_slots is False else ("intent_ids", "slot_ids")

    @property
    def label_names(self) -> dict[str, list[str]]:
        names = super().label_names if self.with_slots is not False else {}
        if self.intent_map:
            names["intent_ids"] = names_of(self.intent_map)
        return names

    def use_label_names(self, names: dict[str, list[str]]) -> "IntentSlotReader":
        super().use_label_names(names)
        if self.with_slots is None:
            self.with_slots = "slot_ids" in names  # a model saved without slot labels read intents only
        return self

    def _read_examples(self, path: str, file_format: str = "tsv") -> list[dict]:
        slots = self.with_slots if self.with_slots is not None else self._reads_slots(path)
        examples = read_intent_folder(path, slots)
        if self.with_slots is None and not slots:
            log.info("%s: no seq.out: reading intents only (seq.in + label); this reader yields intent_ids alone, "
                     "for a Classify head (add seq.out for slots)", path)
        self.with_slots = slots  # decided once, by the first data read; eval readers inherit it
        return examples

    def _build_label_maps(self, examples: list[dict], path: str, file_format: str) -> list[dict]:
        """The intent and slot maps from the training examples (`intent`, `tags`) unless given, whoever read
        them; an override of `_read_examples` that left `with_slots` undecided has slots if its examples do."""
        examples = list(examples)
        if self.with_slots is None:
            self.with_slots = any(isinstance(ex, dict) and ex.get("tags") is not None for ex in examples)
        self._build_maps(examples, path)
        return examples

    def _reads_slots(self, path: str) -> bool:
        """With slot labels given (or taken from a checkpoint), slots; else training data decides: a folder
        without seq.out is intent-only (a missing folder is reported as such by the reading)."""
        if self.tag_map is not None:
            return True
        return self.phase == "train" and (has_seq_out(path) or not Path(path).is_dir())

    def _build_maps(self, examples: list[dict], path: str) -> None:
        if self.intent_map is None and self.phase == "train":
            intents = labels_of(examples, "intent", path, "IntentSlotReader", '{"words", "tags", "intent", "line"}')
            self.intent_map = {name: i for i, name in enumerate(sorted(set(intents)))}
        if self.with_slots and self.tag_map is None and self.phase == "train":
            _check_tag_lists(examples, path, "IntentSlotReader")
            check_tag_scheme(examples, str(Path(path) / "seq.out"), "seq.out",
                             "seq.out holds one slot tag per word of seq.in (are seq.in and seq.out swapped?)")
            self.tag_map = tag_map_from(examples)
        if self.intent_map is None or (self.with_slots and self.tag_map is None):
            raise ValueError("IntentSlotReader: load training data first, or pass intent_labels and slot_labels")

    def _featurize(self, examples: list[dict]) -> list[Feature]:
        source = str(Path(self.input_file or "<data>") / "label")
        self._intents = LabelLookup(self.intent_map or {}, source, self.phase, "intent")
        features = super()._featurize(examples)
        self._intents.report()
        return features

    def _add_extra(self, example: dict, fields: dict, meta: dict) -> None:
        if example.get("intent") is None or self.phase == "predict":
            return
        fields["intent_ids"] = self._intents(example["intent"], example["line"])
        meta["gold"]["intent_ids"] = example["intent"]
