"""Masked-language-model reader: plain text or SQuAD contexts -> token chunks -> dynamically masked batches.

Masking (BERT's recipe): 15% of the non-special tokens of each sequence, at least one, of which 80% become
[MASK], 10% a random non-special token and 10% stay as they are. Masks are drawn when a batch is made, from a
generator seeded by (seed, epoch, example index): every epoch masks afresh, yet a run resumed at an epoch and
position masks exactly as the run that was never stopped. Eval readers use one fixed mask per example.
"""
import logging
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from mtl.components.readers.base import Feature, Reader
from mtl.components.readers.files import read_lines
from mtl.components.readers.squad import load_json
from mtl.errors import DataError

log = logging.getLogger(__name__)

FORMATS = ("text", "squad")
CHUNK = 10_000  # texts tokenized at once: bounds the tokenizer's output held in memory
_TRAIN, _EVAL = 0, 1  # the phase goes into the mask seed: eval masks never repeat a training epoch's masks


class MaskLMReader(Reader):
    """Texts for masked-language modelling; yields `input_ids` (masked), `token_type_ids`, `attention_mask`
    and `mlm_labels` (the original id at masked positions, -100 elsewhere and in padding).

    Long texts are split into consecutive chunks of at most `max_seqlen` tokens ([CLS] + max_seqlen-2 + [SEP]),
    so no text is lost (counted in a log line); texts given for prediction (`from_texts`) are truncated
    instead, one sequence per text. In 'predict' phase nothing is masked at random: the [MASK] tokens written
    in the text are the positions predicted.

    `whole_word_mask=True` masks whole words: the tokens of a word, a run of text between whitespace, are
    chosen together (how many: the same 15% of the tokens, counted in whole words), so a model cannot guess a
    masked piece from its unmasked neighbours. For Chinese, whose characters are each a token, word boundaries
    are given by segmenting the text with spaces (`北京 天安门`): the spaces separate words, and the tokenizer
    drops them.
    """

    label_fields = ("mlm_labels",)
    token_label_fields = ("mlm_labels",)
    default_format = "text"  # or "squad": the paragraph contexts of a SQuAD v1.1 JSON, each once

    def __init__(self, vocab_path: str | Path, max_seqlen: int = 128, seed: int = 0, mask_prob: float = 0.15,
                 phase: str = "train", do_lower_case: bool = True, whole_word_mask: bool = False) -> None:
        super().__init__(vocab_path, max_seqlen, seed, phase, do_lower_case)
        self.whole_word_mask = bool(whole_word_mask)
        if isinstance(mask_prob, bool) or not isinstance(mask_prob, (int, float)) or not 0 < mask_prob <= 1:
            raise ValueError(f"mask_prob must be a number in (0, 1], got {mask_prob!r}")
        self.mask_prob = float(mask_prob)
        tok = self.tokenizer
        if tok.mask_token_id is None:
            raise ValueError(f"vocab_path {vocab_path}: the vocabulary has no [MASK] token; MLM needs one")
        self.mask_id = tok.mask_token_id
        self.special_ids = np.array(sorted(set(tok.all_special_ids)), dtype=np.int64)
        self.vocab = tok.convert_ids_to_tokens(list(range(len(tok))))
        self.random_ids = np.setdiff1d(np.arange(len(tok)), self.special_ids)

    # ---- reading ----------------------------------------------------------------------------------
    def load_texts(self, texts: list[str], num_epochs: int | None = None, batch_size: int = 32,
                   source: str = "<texts>") -> "MaskLMReader":
        """MLM data from texts already in memory, e.g. another task's text fields (an auxiliary MLM task over
        the main task's own inputs): `mlm.load_texts([f.meta["text"] for f in cls_reader.features])`.
        Blank texts are skipped; the rest is handled as `load_data` handles a file."""
        examples = [{"text": text, "line": i + 1} for i, text in enumerate(texts) if text and text.strip()]
        if not examples:
            raise DataError(source, None, "no non-blank text", "give at least one text")
        self.batch_size, self.num_epochs, self.input_file = batch_size, num_epochs, source
        self.features = self._featurize(examples)
        return self

    def _read_examples(self, path: str, file_format: str) -> list[dict]:
        if file_format not in FORMATS:
            raise ValueError(f"MaskLMReader reads file_format 'text' or 'squad', got {file_format!r}")
        examples = _read_squad_contexts(path) if file_format == "squad" else _read_text_lines(path)
        if not examples:
            raise DataError(path, None, "no text in the file", "write one text per line" if file_format == "text"
                            else "give a SQuAD v1.1 file whose paragraphs have contexts")
        return examples

    def _examples_from_texts(self, texts: list[str]) -> list[dict]:
        return [{"text": text, "line": i + 1} for i, text in enumerate(texts)]

    def _examples_from_lines(self, path: str, lines: list[tuple[int, str]]) -> list[dict]:
        return [{"text": text, "line": number} for number, text in lines if text.strip()]

    def _featurize(self, examples: list[dict]) -> Iterator[Feature]:
        """Tokenize once; split (train/eval) or truncate (predict) to `max_seqlen` with [CLS] and [SEP].
        Features come one by one, `CHUNK` texts tokenized at a time: a large corpus's tokenizer output whole
        would take more memory than the packed features."""
        counts = {"features": 0, "long": 0, "empty": []}
        for first in range(0, len(examples), CHUNK):
            yield from self._chunk_features(examples[first:first + CHUNK], counts)
        if counts["empty"]:
            _report_empty(self.input_file or "<texts>", counts["empty"], counts["features"])
        if counts["long"]:
            what = "truncated" if self.phase == "predict" else f"split into chunks ({counts['features']} sequences " \
                                                               "in all)"
            log.warning("%s: %d of %d texts were longer than max_seqlen=%d tokens and were %s",
                        self.input_file or "<texts>", counts["long"], len(examples), self.max_seqlen, what)

    def _chunk_features(self, examples: list[dict], counts: dict) -> Iterator[Feature]:
        width = self.max_seqlen - 2
        encoded = self.tokenizer([ex["text"] for ex in examples], add_special_tokens=False,
                                 return_offsets_mapping=True, verbose=False, return_attention_mask=False,
                                 return_token_type_ids=False)
        cls_id, sep_id = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        for example, ids, offsets in zip(examples, encoded["input_ids"], encoded["offset_mapping"]):
            if not ids and self.phase != "predict":  # [CLS] [SEP] alone: nothing to mask or learn from
                counts["empty"].append(example["line"])
                continue
            starts = list(range(0, max(len(ids), 1), width))
            counts["long"] += len(starts) > 1
            for chunk, start in enumerate(starts[:1] if self.phase == "predict" else starts):
                piece = ids[start:start + width]
                span = offsets[start:start + width]
                text = example["text"][span[0][0]:span[-1][1]] if span and len(starts) > 1 else example["text"]
                meta = {"text": text, "line": example["line"], "chunk": chunk, "index": counts["features"]}
                if self.whole_word_mask:
                    meta["word_starts"] = word_starts(span)
                counts["features"] += 1
                yield Feature({"input_ids": [cls_id] + piece + [sep_id], "token_type_ids": [0] * (len(piece) + 2)},
                              meta)

    # ---- masking ----------------------------------------------------------------------------------
    def collate(self, features: list[Feature]) -> dict:
        """Mask each example (see the module doc), then pad as every reader does.

        Training masks depend on `self.epoch`, which `batches()` holds at the epoch being drawn."""
        return super().collate([self._masked(feature) for feature in features])

    def _masked(self, feature: Feature) -> Feature:
        ids = np.asarray(feature.fields["input_ids"], dtype=np.int64)
        meta = {**feature.meta, "vocab": self.vocab}
        if self.phase == "predict":
            meta["mlm_positions"] = np.flatnonzero(ids == self.mask_id).tolist()
            return Feature(feature.fields, meta)
        key = [self.seed, _TRAIN, self.epoch] if self.phase == "train" else [self.seed, _EVAL, 0]
        rng = np.random.default_rng(key + [int(feature.meta["index"])])
        masked, labels, chosen = mask_tokens(ids, rng, self.mask_prob, self.mask_id, self.special_ids,
                                             self.random_ids, feature.meta.get("word_starts"))
        meta["mlm_positions"] = chosen.tolist()
        meta["gold"] = {**feature.meta.get("gold", {}), "mlm_labels": [self.vocab[i] for i in ids[chosen]]}
        fields = {**feature.fields, "input_ids": masked.tolist(), "mlm_labels": labels.tolist()}
        return Feature(fields, meta)


def mask_tokens(ids: np.ndarray, rng: np.random.Generator, mask_prob: float, mask_id: int,
                special_ids: np.ndarray, random_ids: np.ndarray,
                word_starts: list[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(masked ids, labels, chosen positions) of one sequence.

    The number masked is `mask_prob * n` rounded at random (so its mean is exactly mask_prob * n, also for
    short sequences), then at least one; special tokens are never chosen nor drawn as random replacements.
    With `word_starts` (the position where each word begins) whole words are chosen, in random order, while
    they fit in that number (at least one word). Each chosen token then becomes [MASK] (80%), a random token
    (10%) or stays (10%).
    """
    candidates = np.flatnonzero(~np.isin(ids, special_ids))
    labels = np.full(ids.shape, -100, dtype=np.int64)
    if candidates.size == 0:
        return ids.copy(), labels, candidates
    count = int(np.floor(mask_prob * candidates.size + rng.random()))
    count = min(max(count, 1), candidates.size)
    if word_starts is None:
        chosen = np.sort(rng.choice(candidates, size=count, replace=False))
    else:
        chosen = _whole_words(candidates, word_starts, count, rng)
    labels[chosen] = ids[chosen]
    roll = rng.random(chosen.size)
    masked = ids.copy()
    masked[chosen[roll < 0.8]] = mask_id
    swapped = chosen[(roll >= 0.8) & (roll < 0.9)]
    masked[swapped] = rng.choice(random_ids, size=swapped.size)
    return masked, labels, chosen


def _whole_words(candidates: np.ndarray, word_starts: list[int], count: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of whole words, drawn in random order, while their tokens fit in `count` (the first always)."""
    words = [group for group in np.split(candidates, np.searchsorted(candidates, word_starts[1:])) if group.size]
    chosen, total = [], 0
    for index in rng.permutation(len(words)):
        if not chosen or total + words[index].size <= count:
            chosen.append(words[index])
            total += words[index].size
        if total >= count:
            break
    return np.sort(np.concatenate(chosen))


def word_starts(offsets: list[tuple[int, int]]) -> list[int]:
    """Sequence positions ([CLS] is 0) of the tokens that begin a word: the first token, and each token with
    whitespace (a gap in the character offsets) before it."""
    return [1 + i for i, (start, _) in enumerate(offsets) if i == 0 or start > offsets[i - 1][1]]


def _report_empty(source: str, lines: list, kept: int) -> None:
    """Texts without a single token (only control or zero-width characters) are skipped with a warning;
    a file of nothing else is a DataError."""
    where = ", ".join(map(str, lines[:10])) + (", ..." if len(lines) > 10 else "")
    if not kept:
        raise DataError(source, None, "no text has a token (only control or zero-width characters)",
                        "give texts with words in them")
    log.warning("%s: skipped %d texts without any token, only control or zero-width characters (line %s)",
                source, len(lines), where)


def _read_text_lines(path: str) -> list[dict]:
    """One text per line; blank and whitespace-only lines skipped (logged at INFO with their numbers)."""
    lines = read_lines(path)
    blank = [number for number, line in enumerate(lines, start=1) if not line.strip()]
    if blank and len(blank) < len(lines):
        log.info("%s: skipped %d blank or whitespace-only lines (line %s)", path, len(blank),
                 ", ".join(map(str, blank[:10])) + (", ..." if len(blank) > 10 else ""))
    return [{"text": line, "line": number} for number, line in enumerate(lines, start=1) if line.strip()]


def _read_squad_contexts(path: str) -> list[dict]:
    """Each distinct paragraph context of a SQuAD v1.1 file, in file order; `line` holds its JSON path."""
    root: Any = load_json(path)  # empty file, invalid UTF-8 or JSON: a DataError with the line
    if not isinstance(root, dict) or not isinstance(root.get("data"), list):
        raise DataError(path, None, "no 'data' list at the top level", "give a SQuAD v1.1 JSON file")
    examples, seen = [], set()
    for a, article in enumerate(root["data"]):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise DataError(path, None, f"data[{a}]: no 'paragraphs' list", "each article needs a paragraphs list")
        for p, paragraph in enumerate(paragraphs):
            context = paragraph.get("context") if isinstance(paragraph, dict) else None
            where = f"data[{a}].paragraphs[{p}].context"
            if not isinstance(context, str):
                raise DataError(path, None, f"{where}: missing or not a string",
                                "each paragraph needs a context string")
            if context.strip() and context not in seen:
                seen.add(context)
                examples.append({"text": context, "line": where})
    return examples
