"""PALM's MRCReader: SQuAD v1.1 JSON -> sliding windows over the context, answers mapped through offsets.

Each question becomes one or more features (windows): `[CLS] query [SEP] context window [SEP]`. The query
is cut to `max_query_len` tokens; the context is split with the fast tokenizer (`return_overflowing_tokens`,
`return_offsets_mapping`), consecutive windows starting `doc_stride` context tokens apart, as in BERT's
SQuAD recipe. A window that holds the whole first answer is labelled with its token span; any other window
is labelled start = end = 0 (the [CLS] token). A context longer than one window is simply split (counted in
an INFO log line). Predictions are merged back to one answer per question by the `MRC` head.
"""
import logging
from pathlib import Path
from mtl.components.readers.base import Feature, Reader, _integer
from mtl.components.readers.squad import read_squad
from mtl.errors import DataError

log = logging.getLogger(__name__)


class MRCReader(Reader):
    """Extractive question answering (SQuAD v1.1 JSON, `file_format="json"`).

    Fields: input_ids, attention_mask, token_type_ids and, in phases 'train' and 'eval', `start_positions`
    and `end_positions` (token indices of the first answer in the window, 0 = [CLS] where the window does not
    hold it; the eval positions are not used for metrics, which are computed on the answer texts).
    Meta per window: `id` (question id), `example_index`, `window`, `offsets` (character span of each token in
    the context, None for query and special tokens), `context`, `text` (the question), `gold.answers`.
    """

    label_fields = ("start_positions", "end_positions")
    default_format = "json"

    def __init__(self, vocab_path: str | Path, max_seqlen: int = 384, doc_stride: int = 128,
                 max_query_len: int = 64, seed: int = 0, phase: str = "train", do_lower_case: bool = True) -> None:
        super().__init__(vocab_path, max_seqlen, seed, phase, do_lower_case)
        self.doc_stride = _integer("doc_stride", doc_stride, 1)
        self.max_query_len = _integer("max_query_len", max_query_len, 1)
        if self.max_query_len + 4 > self.max_seqlen:
            raise ValueError(f"max_query_len ({max_query_len}) + 4 must be <= max_seqlen ({max_seqlen}): a window "
                             "holds [CLS] query [SEP] at least one context token [SEP]")

    # ---- reading --------------------------------------------------------------------------------------------
    def _read_examples(self, path: str, file_format: str) -> list[dict]:
        if file_format not in ("json", "squad"):
            raise ValueError(f"MRCReader reads file_format='json' (SQuAD v1.1), got {file_format!r}")
        return read_squad(path, self.phase)

    def _examples_from_texts(self, texts: list) -> list[dict]:
        """(question, context) pairs, or dicts with "question", "context" and optionally "id"."""
        examples = []
        for index, item in enumerate(texts):
            if isinstance(item, dict):
                question, context, qid = item.get("question"), item.get("context"), str(item.get("id", index))
            elif isinstance(item, (tuple, list)) and len(item) == 2:
                (question, context), qid = item, str(index)
            else:
                raise TypeError(f"MRCReader.from_texts takes (question, context) pairs or dicts with 'question' "
                                f"and 'context'; item {index} is {type(item).__name__}")
            if not isinstance(question, str) or not isinstance(context, str) or not context.strip():
                raise ValueError(f"MRCReader.from_texts: item {index} needs a question string and a non-empty "
                                 "context string")
            examples.append({"id": qid, "question": question, "context": context, "answers": [],
                             "answer_start": None, "path": f"item {index}"})
        return examples

    # ---- windows --------------------------------------------------------------------------------------------
    def _featurize(self, examples: list[dict]) -> list[Feature]:
        source = self.input_file or "<texts>"
        queries = self._truncated_queries([ex["question"] for ex in examples])
        features, split, cut_queries = [], 0, sum(q != ex["question"] for q, ex in zip(queries, examples))
        for index, (example, query) in enumerate(zip(examples, queries)):
            windows = self._windows(example, query, index, source)
            split += len(windows) > 1
            features.extend(windows)
        if cut_queries:
            log.warning("%s: %d of %d questions were longer than max_query_len=%d tokens and were truncated",
                        source, cut_queries, len(examples), self.max_query_len)
        if split:
            log.info("%s: %d of %d contexts were longer than one window of max_seqlen=%d tokens and were split "
                     "into overlapping windows (doc_stride=%d): %d windows for %d questions", source, split,
                     len(examples), self.max_seqlen, self.doc_stride, len(features), len(examples))
        return features

    def _truncated_queries(self, questions: list[str]) -> list[str]:
        """Each question cut after its `max_query_len`-th token (at that token's last character)."""
        encoded = self.tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
        return [question[:offsets[self.max_query_len - 1][1]] if len(offsets) > self.max_query_len else question
                for question, offsets in zip(questions, encoded["offset_mapping"])]

    def _windows(self, example: dict, query: str, index: int, source: str) -> list[Feature]:
        query_len = len(self.tokenizer(query, add_special_tokens=False)["input_ids"])
        room = self.max_seqlen - query_len - 3  # context tokens per window
        overlap = max(0, room - self.doc_stride)  # HF's `stride` is the overlap between windows
        encoded = self.tokenizer(query, example["context"], truncation="only_second", max_length=self.max_seqlen,
                                 stride=overlap, return_overflowing_tokens=True, return_offsets_mapping=True)
        gold = {"answers": example["answers"]} if self.phase != "predict" else {}
        features = []
        for window in range(len(encoded["input_ids"])):
            sequence_ids = encoded.sequence_ids(window)
            offsets = [tuple(span) if kind == 1 else None
                       for kind, span in zip(sequence_ids, encoded["offset_mapping"][window])]
            ids = encoded["input_ids"][window]
            types = encoded["token_type_ids"][window] if "token_type_ids" in encoded else [0] * len(ids)
            fields = {"input_ids": ids, "token_type_ids": types}
            if self.phase != "predict":
                fields["start_positions"], fields["end_positions"] = self._span(example, offsets, source)
            meta = {"id": example["id"], "example_index": index, "window": window, "offsets": offsets,
                    "context": example["context"], "text": example["question"], "gold": gold}
            features.append(Feature(fields, meta))
        if self.phase == "train" and not any(f.fields["start_positions"] for f in features):
            self._no_window_holds(example, features, source)
        return features

    def _no_window_holds(self, example: dict, features: list[Feature], source: str) -> None:
        """An answer covering no token is an error; one longer than a window is counted (all windows [CLS])."""
        start, end = example["answer_start"], example["answer_start"] + len(example["answers"][0])
        if not any(span and span[0] < end and span[1] > start for f in features for span in f.meta["offsets"]):
            raise DataError(source, None, f"{example['path']}: the first answer {example['answers'][0]!r} covers "
                            "no token of the context", "check the answer's text and answer_start")
        log.warning("%s: %s: the first answer is longer than one window (max_seqlen=%d); every window of this "
                    "question is labelled [CLS]", source, example["path"], self.max_seqlen)

    @staticmethod
    def _span(example: dict, offsets: list[tuple[int, int] | None], source: str) -> tuple[int, int]:
        """Token span of the first answer when this window holds all of it; else (0, 0), the [CLS] token."""
        start_char = example["answer_start"]
        if start_char is None or not example["answers"]:
            return 0, 0
        end_char = start_char + len(example["answers"][0])
        context_tokens = [i for i, span in enumerate(offsets) if span is not None]
        if not context_tokens:
            return 0, 0
        first, last = context_tokens[0], context_tokens[-1]
        if not (offsets[first][0] <= start_char and offsets[last][1] >= end_char):
            return 0, 0
        start = first
        while start <= last and offsets[start][1] <= start_char:  # first token ending after the answer starts
            start += 1
        end = last
        while end >= first and offsets[end][0] >= end_char:  # last token starting before the answer ends
            end -= 1
        return (start, end) if start <= end else (0, 0)
