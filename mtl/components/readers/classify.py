"""PALM's ClassifyReader: TSV `label<TAB>text_a`."""
import logging
import re
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator

from mtl.components.readers.base import Feature, Reader
from mtl.components.readers.files import iter_tsv, load_label_map, names_of, tsv_columns
from mtl.components.readers.labels import LabelLookup, is_auto, label_map_from, labels_of
from mtl.components.readers.tokenization import truncated_rows
from mtl.errors import DataError, MtlError

log = logging.getLogger(__name__)
CHUNK = 10_000  # texts tokenized at once: bounds the tokenizer's output held in memory
_ASCII_DIGITS = re.compile(r"[0-9]+")  # str.isdigit() also accepts '²', which int() refuses
HEADER = ("label", "text_a")


class ClassifyReader(Reader):
    """Sentence classification. Labels are integer ids (as PALM wrote them), names given in `label_map` (a JSON
    file, dict or list), or with `label_map="auto"` whatever the training data holds (integers in numeric order,
    names sorted; eval readers from `eval_reader` share the map, and it is saved with the model)."""

    label_fields = ("label_ids",)
    label_maps = {"label_ids": "label_map"}

    def __init__(self, vocab_path: str | Path, max_seqlen: int = 128, label_map=None, seed: int = 0,
                 phase: str = "train", do_lower_case: bool = True) -> None:
        super().__init__(vocab_path, max_seqlen, seed, phase, do_lower_case)
        self.auto_labels = is_auto(label_map)
        self.label_map = None if self.auto_labels else load_label_map(label_map)

    @property
    def label_names(self) -> dict[str, list[str]]:
        return {"label_ids": names_of(self.label_map)} if self.label_map else {}

    def _read_examples(self, path: str, file_format: str) -> Iterator[dict]:
        """The file's examples, read row by row as featurizing asks for them (with `label_map="auto"`, a first
        pass reads the labels alone and checks every row)."""
        if file_format != "tsv":
            raise ValueError(f"ClassifyReader reads file_format='tsv', got {file_format!r}")
        if self.auto_labels and self.label_map is None and self.phase != "predict":  # a first pass: labels only
            labels = [_example(path, line, label, text)["label"] for line, (label, text) in iter_tsv(path, HEADER)]
            self.label_map = label_map_from(labels, path, self.phase, "ClassifyReader", "label<TAB>text_a")
        return (_example(path, line, label, text) for line, (label, text) in iter_tsv(path, HEADER))  # row by row

    def _build_label_maps(self, examples: Iterable[dict], path: str, file_format: str) -> Iterable[dict]:
        """`label_map="auto"` from the examples' `label`s when `_read_examples` has not built it (an override
        reading another format): the examples are then held in a list."""
        if self.auto_labels and self.label_map is None and self.phase != "predict":
            examples = list(examples)
            labels = labels_of(examples, "label", path, "ClassifyReader", '{"label", "text", "line"}')
            self.label_map = label_map_from(labels, path, self.phase, "ClassifyReader", "label<TAB>text_a")
        return examples

    def _examples_from_texts(self, texts: list[str]) -> list[dict]:
        return [{"label": None, "text": text, "line": i + 1} for i, text in enumerate(texts)]

    def _examples_from_lines(self, path: str, lines: list[tuple[int, str]]) -> list[dict]:
        if self.label_map is None and self.auto_labels:
            raise MtlError("ClassifyReader(label_map='auto') cannot stream: the labels are known only after the "
                           "whole file is read; give the label_map (a JSON file, dict or list)")
        rows = ((number, tsv_columns(path, number, text, HEADER)) for number, text in lines)
        return [_example(path, number, *columns) for number, columns in rows if columns is not None]

    def _label_id(self, label: str, line: int, lookup: LabelLookup) -> int:
        if self.label_map is not None:
            return lookup(label, line)
        if not _ASCII_DIGITS.fullmatch(label):
            raise DataError(self.input_file, line, f"label {label!r} is not an integer id",
                            "write integer ids 0..n-1 or give ClassifyReader a label_map")
        return int(label)

    def _featurize(self, examples: Iterable[dict]) -> Iterator[Feature]:
        """Features one by one, tokenizing `CHUNK` texts at a time as the examples come (a file is read row by
        row): neither the file's rows nor a fast tokenizer's output for all of it (an Encoding object per
        text) is ever held whole, only the packed features."""
        source = self.input_file or "<texts>"
        lookup = LabelLookup(self.label_map or {}, source, self.phase, "label")
        cut, total, rows = [], 0, iter(examples)
        while chunk := list(islice(rows, CHUNK)):
            encoded = self.tokenizer([ex["text"] for ex in chunk], truncation=True, max_length=self.max_seqlen,
                                     return_attention_mask=False, return_token_type_ids=False)  # made at collate
            cut += [chunk[i]["line"] for i in truncated_rows(encoded)]
            total += len(chunk)
            for index, example in enumerate(chunk):
                yield self._feature(example, encoded, index, lookup)
        if cut:
            log.warning("%s: %d of %d texts were longer than max_seqlen=%d tokens and were truncated (line %s)",
                        source, len(cut), total, self.max_seqlen,
                        ", ".join(map(str, cut[:10])) + (", ..." if len(cut) > 10 else ""))
        lookup.report()

    def _feature(self, example: dict, encoded: Any, index: int, lookup: LabelLookup) -> Feature:
        ids = encoded["input_ids"][index]
        types = encoded["token_type_ids"][index] if "token_type_ids" in encoded else [0] * len(ids)
        fields = {"input_ids": ids, "token_type_ids": types}
        meta = {"text": example["text"], "line": example["line"], "gold": {}}
        if example["label"] is not None and self.phase != "predict":
            fields["label_ids"] = self._label_id(example["label"], example["line"], lookup)
            meta["gold"]["label_ids"] = example["label"]
        return Feature(fields, meta)


def _example(path: str, line: int, label: str, text: str) -> dict:
    """One `label<TAB>text_a` row as an example; an empty label or text is a DataError naming the line."""
    if not label.strip():
        raise DataError(path, line, "empty label", "write the label before the tab: label<TAB>text_a")
    if not text.strip():
        raise DataError(path, line, "empty text_a", "write the text after the tab, or remove the line")
    return {"label": label.strip(), "text": text, "line": line}
