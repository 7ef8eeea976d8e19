"""MRC distillation over words, so that teacher and student may tokenize and window the context differently.

A context's words are its runs of letters or digits, each CJK character, and each punctuation mark: the
units every BERT-style pre-tokenizer splits at, so a word starts a token under any of them. A window covers a
word when the word lies wholly inside the window's context tokens; the word's start score is the start logit
of the token holding its first character, its end score the end logit of the token holding its last.

Teacher: each window hands on, per word of the whole context, its (start, end) logits, NaN where the window
does not cover the word; an example's windows are merged by averaging each word's logits over the windows
that cover it (logits, not probabilities, are comparable across windows: SQuAD decoding compares them), then
one softmax at the temperature over all words. Student: per window, KL from the teacher's distribution
restricted to the covered words (renormalised) to the student's softmax over them, weighted by the teacher's
mass inside the window, so a window far from the answer teaches little.
"""
import re

import numpy as np
import torch

from mtl.components.heads.distill import kl_rows

WORD = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+|[^\w\s]")


def context_words(context: str) -> list[tuple[int, int]]:
    """Character spans of the context's words."""
    return [match.span() for match in WORD.finditer(context)]


def covered_words(offsets: list[tuple[int, int] | None], words: list[tuple[int, int]]
                  ) -> tuple[list[int], list[int], list[int]]:
    """(word indices, first tokens, last tokens) of the words the window's context tokens wholly cover."""
    spans = [(i, span) for i, span in enumerate(offsets) if span is not None and span[1] > span[0]]
    if not spans:
        return [], [], []
    low, high = spans[0][1][0], spans[-1][1][1]
    index, firsts, lasts = [], [], []
    starts = np.array([span[0] for _, span in spans])
    ends = np.array([span[1] for _, span in spans])
    for w, (start, end) in enumerate(words):
        if start < low or end > high:
            continue
        first = int(np.searchsorted(ends, start, side="right"))  # first token ending after the word starts
        last = int(np.searchsorted(starts, end, side="left")) - 1  # last token starting before the word ends
        if first <= last:
            index.append(w)
            firsts.append(spans[first][0])
            lasts.append(spans[last][0])
    return index, firsts, lasts


def window_signal(start: torch.Tensor, end: torch.Tensor, meta: dict) -> torch.Tensor:
    """(words of the context, 2): this window's start and end logits per covered word, NaN elsewhere."""
    words = context_words(meta["context"])
    index, firsts, lasts = covered_words(meta["offsets"], words)
    signal = torch.full((len(words), 2), float("nan"))
    if index:
        signal[index, 0] = start[firsts].float().cpu()
        signal[index, 1] = end[lasts].float().cpu()
    return signal


def merge_windows(features: list[np.ndarray], temperature: float) -> np.ndarray:
    """One example's (words, 2) targets: each word's logits averaged over the windows that cover it, then a
    softmax over all words per column; a word no window covered gets probability 0."""
    stacked = np.stack(features)
    seen = ~np.isnan(stacked)
    counts = seen.sum(0)
    logits = np.where(counts > 0, np.where(seen, stacked, 0.0).sum(0) / np.maximum(counts, 1), -np.inf)
    logits = logits / temperature
    logits -= logits.max(0, keepdims=True)
    probs = np.exp(logits)
    return (probs / probs.sum(0, keepdims=True)).astype(np.float32)


def window_loss(start: torch.Tensor, end: torch.Tensor, metas: list[dict], targets: torch.Tensor,
                temperature: float) -> torch.Tensor:
    """Mean over the batch's windows of (start KL + end KL) / 2 on the covered words, each weighted by the
    teacher's probability mass on them; times T²."""
    total = start.new_zeros(())
    for row, meta in enumerate(metas):
        index, firsts, lasts = covered_words(meta["offsets"], context_words(meta["context"]))
        index = [w for w in index if w < targets.size(1)]
        if not index:
            continue
        for column, logits, tokens in ((0, start[row], firsts), (1, end[row], lasts)):
            wanted = targets[row, index, column].to(start.device)
            mass = wanted.sum()
            if float(mass) <= 1e-6:
                continue
            student = torch.log_softmax(logits[tokens[:len(index)]].float() / temperature, -1)
            total = total + mass * kl_rows((wanted / mass).unsqueeze(0), student.unsqueeze(0),
                                           torch.ones(1, device=start.device)) / 2
    return total / max(len(metas), 1) * temperature ** 2
