"""Sub-word alignment for word-level labels: the label sits on the first sub-token of each word."""
import logging

from transformers import PreTrainedTokenizerFast

from mtl.components.readers.labels import IGNORE
from mtl.components.readers.tokenization import truncated_rows

log = logging.getLogger(__name__)


def encode_words(tokenizer: PreTrainedTokenizerFast, sentences: list[list[str]], max_seqlen: int,
                 source: str) -> list[dict]:
    """Tokenize pre-split sentences in one fast call; per sentence: input_ids, token_type_ids, word_starts.

    `word_starts[j]` is the position of word j's first sub-token, or -1 when truncation dropped the word
    or the word has no sub-token at all (only control or zero-width characters); such words are predicted
    'O', skipped in the loss, and counted in the log (one warning for each cause).
    """
    encoded = tokenizer(sentences, is_split_into_words=True, truncation=True, max_length=max_seqlen,
                        return_attention_mask=False, return_token_type_ids=False)  # both made at collate
    cut = set(truncated_rows(encoded))
    out, beyond, empty = [], 0, 0
    for index, words in enumerate(sentences):
        starts = [-1] * len(words)
        for position, word in enumerate(encoded.word_ids(index)):
            if word is not None and starts[word] == -1:
                starts[word] = position
        last_kept = max((j for j, start in enumerate(starts) if start >= 0), default=-1)
        for j, start in enumerate(starts):
            if start == -1:
                if index in cut and j > last_kept:
                    beyond += 1
                else:
                    empty += 1
        ids = encoded["input_ids"][index]
        types = encoded["token_type_ids"][index] if "token_type_ids" in encoded else [0] * len(ids)
        out.append({"input_ids": ids, "token_type_ids": types, "word_starts": starts})
    if cut:
        log.warning("%s: %d of %d sentences were longer than max_seqlen=%d tokens and were truncated; "
                    "their %d words beyond it are predicted 'O' (raise max_seqlen to keep them)",
                    source, len(cut), len(sentences), max_seqlen, beyond)
    if empty:
        log.warning("%s: %d word%s no sub-token (only control or zero-width characters); predicted 'O', "
                    "skipped in the loss", source, empty, " has" if empty == 1 else "s have")
    return out


def token_labels(word_starts: list[int], word_labels: list[int], length: int) -> list[int]:
    """Word labels placed on first sub-tokens; every other position is IGNORE."""
    labels = [IGNORE] * length
    for start, label in zip(word_starts, word_labels):
        if start >= 0:
            labels[start] = label
    return labels


def start_mask(word_starts: list[int], length: int) -> list[int]:
    """1 on each word's first sub-token: how heads read predictions back per word."""
    mask = [0] * length
    for start in word_starts:
        if start >= 0:
            mask[start] = 1
    return mask
