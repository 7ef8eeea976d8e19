"""PALM's MatchReader: sentence pairs, pointwise (`label text_a text_b`) or pairwise (`text_a text_b text_b_neg`)."""
import logging
import re
from pathlib import Path
from typing import Any

from mtl.components.readers.base import Feature, Reader
from mtl.components.readers.files import load_label_map, names_of, read_lines, read_tsv, tsv_columns
from mtl.components.readers.labels import LabelLookup, is_auto, label_map_from, labels_of
from mtl.components.readers.tokenization import truncated_rows
from mtl.errors import DataError, MtlError

log = logging.getLogger(__name__)
_ASCII_DIGITS = re.compile(r"[0-9]+")  # str.isdigit() also accepts '²', which int() refuses
STRATEGIES = ("pointwise", "pairwise")
POINTWISE = ("label", "text_a", "text_b")
PAIRWISE = ("text_a", "text_b", "text_b_neg")
UNLABELLED = ("text_a", "text_b")


class MatchReader(Reader):
    """Sentence-pair matching, each pair encoded as `[CLS] a [SEP] b [SEP]` (token types 0 then 1), cut to
    `max_seqlen` by removing tokens from the longer text first ("longest_first").

    - pointwise training and every evaluation read `label<TAB>text_a<TAB>text_b`; labels are integer ids (as
      PALM wrote them) or names given in `label_map`.
    - pairwise training reads `text_a<TAB>text_b<TAB>text_b_neg` (b matches a, b_neg does not). A batch of B
      triples becomes 2B rows, the B positive pairs first, then the B negative pairs in the same order, with
      `label_ids` 1...1 0...0: the encoder runs once per batch and `mtl.head.Match` splits the rows in halves.
      Evaluation of a pairwise model reads labelled pairs like pointwise (see `mtl.head.Match` for what it
      scores); class id 1 is the matching class.
    - predict reads `text_a<TAB>text_b` (a third, label column is ignored); `from_texts` takes `(a, b)` pairs
      or `"a<TAB>b"` strings.
    """

    label_fields = ("label_ids",)
    label_maps = {"label_ids": "label_map"}

    def __init__(self, vocab_path: str | Path, max_seqlen: int = 128, label_map=None, seed: int = 0,
                 phase: str = "train", learning_strategy: str = "pointwise", do_lower_case: bool = True) -> None:
        if learning_strategy not in STRATEGIES:
            raise ValueError(f"learning_strategy must be 'pointwise' or 'pairwise', got {learning_strategy!r}")
        self.auto_labels = is_auto(label_map)
        if self.auto_labels and learning_strategy == "pairwise":
            raise ValueError("MatchReader(label_map='auto') builds the map from pointwise training labels; pairwise "
                             "training data has none: give integer labels (1 = match) or a label_map for evaluation")
        super().__init__(vocab_path, max_seqlen, seed, phase, do_lower_case)
        self.learning_strategy = learning_strategy
        self.label_map = None if self.auto_labels else load_label_map(label_map)

    @property
    def label_names(self) -> dict[str, list[str]]:
        return {"label_ids": names_of(self.label_map)} if self.label_map else {}

    @property
    def reads_triples(self) -> bool:
        """Pairwise training data: (a, b, b_neg) triples; every other case reads pairs."""
        return self.learning_strategy == "pairwise" and self.phase == "train"

    # ---- reading ---------------------------------------------------------------------------------------
    def _read_examples(self, path: str, file_format: str) -> list[dict]:
        if file_format != "tsv":
            raise ValueError(f"MatchReader reads file_format='tsv', got {file_format!r}")
        header = PAIRWISE if self.reads_triples else POINTWISE
        if self.phase == "predict" and _first_row_width(path) == len(UNLABELLED):
            header = UNLABELLED
        return [_example(path, line, header, columns) for line, columns in read_tsv(path, header)]

    def _build_label_maps(self, examples: list[dict], path: str, file_format: str) -> list[dict]:
        """`label_map="auto"`: built from the pointwise training examples' `label`s."""
        if self.auto_labels and self.label_map is None and self.phase != "predict":
            examples = list(examples)
            labels = labels_of(examples, "label", path, "MatchReader", '{"label", "text_a", "text_b", "line"}')
            self.label_map = label_map_from(labels, path, self.phase, "MatchReader", "<TAB>".join(POINTWISE))
        return examples

    def _examples_from_lines(self, path: str, lines: list[tuple[int, str]]) -> list[dict]:
        if self.label_map is None and self.auto_labels:
            raise MtlError("MatchReader(label_map='auto') cannot stream: the labels are known only after the whole "
                           "file is read; give the label_map (a JSON file, dict or list)")
        header = PAIRWISE if self.reads_triples else POINTWISE
        rows = ((number, tsv_columns(path, number, text, header)) for number, text in lines)
        return [_example(path, number, header, columns) for number, columns in rows if columns is not None]

    def _examples_from_texts(self, texts: list[Any]) -> list[dict]:
        examples = []
        for index, text in enumerate(texts):
            pair = text.split("\t") if isinstance(text, str) else list(text)
            if len(pair) != 2 or not all(isinstance(t, str) and t.strip() for t in pair):
                raise DataError("<texts>", index + 1, f"{text!r} is not a pair of texts",
                                "give (text_a, text_b) pairs or 'text_a<TAB>text_b' strings")
            examples.append({"label": None, "text_a": pair[0], "text_b": pair[1], "text_b_neg": None,
                             "line": index + 1})
        return examples

    # ---- featurizing -----------------------------------------------------------------------------------
    def _encode(self, examples: list[dict], second: str) -> Any:
        """Tokenize (text_a, `second`) pairs; log how many were cut to max_seqlen."""
        encoded = self.tokenizer([ex["text_a"] for ex in examples], [ex[second] for ex in examples],
                                 truncation="longest_first", max_length=self.max_seqlen,
                                 return_attention_mask=False)  # made at collate
        cut = truncated_rows(encoded)
        if cut:
            lines = ", ".join(str(examples[i]["line"]) for i in cut[:10]) + (", ..." if len(cut) > 10 else "")
            log.warning("%s: %d of %d (text_a, %s) pairs were longer than max_seqlen=%d tokens and were truncated, "
                        "longest text first (line %s)", self.input_file or "<texts>", len(cut), len(examples),
                        second, self.max_seqlen, lines)
        return encoded

    def _featurize(self, examples: list[dict]) -> list[Feature]:
        positive = self._encode(examples, "text_b")
        negative = self._encode(examples, "text_b_neg") if self.reads_triples else None
        lookup = LabelLookup(self.label_map or {}, self.input_file or "<texts>", self.phase, "label")
        features = []
        for index, example in enumerate(examples):
            fields = _pair_fields(positive, index)
            meta = {"text": example["text_a"] + "\t" + example["text_b"], "line": example["line"], "gold": {}}
            if negative is not None:
                fields["label_ids"] = 1  # the pair (a, b) matches; (a, b_neg) is built with 0 by `collate`
                fields.update({f"neg_{name}": value for name, value in _pair_fields(negative, index).items()})
                meta["negative_text"] = example["text_a"] + "\t" + example["text_b_neg"]
            elif example["label"] is not None and self.phase != "predict":
                fields["label_ids"] = self._label_id(example["label"], example["line"], lookup)
                meta["gold"]["label_ids"] = example["label"]
                meta["label_id"] = fields["label_ids"]
            features.append(Feature(fields, meta))
        lookup.report()
        return features

    def _label_id(self, label: str, line: int, lookup: LabelLookup) -> int:
        if self.label_map is not None:
            return lookup(label, line)
        if not _ASCII_DIGITS.fullmatch(label):
            raise DataError(self.input_file, line, f"label {label!r} is not an integer id",
                            "write integer ids 0..n-1 (1 = the texts match) or give MatchReader a label_map")
        return int(label)

    # ---- batching --------------------------------------------------------------------------------------
    def collate(self, features: list[Feature]) -> dict:
        """Pairwise training: 2B rows, the B positive pairs then their B negative pairs (label_ids 1 then 0),
        so one encoder pass scores both; `meta[i]` describes row i. Otherwise one row per pair."""
        if not self.reads_triples:
            return super().collate(features)
        negatives = [Feature({"input_ids": f.fields["neg_input_ids"], "token_type_ids": f.fields["neg_token_type_ids"],
                              "label_ids": 0}, {**f.meta, "text": f.meta["negative_text"]}) for f in features]
        return super().collate(list(features) + negatives)


def _example(path: str, line: int, header: tuple[str, ...], columns: list[str]) -> dict:
    """One row as an example; an empty column is a DataError naming the line."""
    row = dict(zip(header, columns))
    for name in header:
        if not row[name].strip():
            raise DataError(path, line, f"empty {name}", f"each line is {'<TAB>'.join(header)}; write "
                            f"the {name} or remove the line")
    return {"label": row["label"].strip() if "label" in row else None, "text_a": row["text_a"],
            "text_b": row["text_b"], "text_b_neg": row.get("text_b_neg"), "line": line}


def _pair_fields(encoded: Any, index: int) -> dict[str, list[int]]:
    ids = encoded["input_ids"][index]
    types = encoded["token_type_ids"][index] if "token_type_ids" in encoded else [0] * len(ids)
    return {"input_ids": ids, "token_type_ids": types}


def _first_row_width(path: str) -> int:
    """Columns of the first non-blank line: a predict file may have `text_a text_b` or `label text_a text_b`."""
    for line in read_lines(path):
        if line.strip():
            return len(line.split("\t"))
    return 0
