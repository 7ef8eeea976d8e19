"""Metrics on decoded predictions, on a 0-100 scale: accuracy, macro-F1, seqeval entity F1, frame accuracy,
extractive QA (SQuAD v1.1's word-level EM/F1, CMRC 2018's character-level ones).

seqeval (and scikit-learn, which it imports: about a second) is imported by `seqeval_scores`, when entity F1
is computed, not with this module: heads import it to decode, and a server or `mtl predict` computes no
metric. This deferred import of an optional heavy library is deliberate (DESIGN.md, "Import rules"); the
entity spans a prediction needs come from `get_entities` below, seqeval's rules without its imports."""
from mtl.text import word_char_offsets


def accuracy(predicted: list, gold: list) -> float:
    return 100.0 * sum(p == g for p, g in zip(predicted, gold)) / max(len(gold), 1)


def macro_f1(predicted: list, gold: list) -> float:
    """Unweighted mean of per-class F1 over the classes seen in gold or predictions."""
    scores = []
    for label in set(gold) | set(predicted):
        tp = sum(p == g == label for p, g in zip(predicted, gold))
        fp = sum(p == label != g for p, g in zip(predicted, gold))
        fn = sum(g == label != p for p, g in zip(predicted, gold))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return 100.0 * sum(scores) / max(len(scores), 1)


def binary_f1(predicted: list, gold: list, positive) -> float:
    """F1 of the `positive` class alone (GLUE's MRPC F1): 2TP / (2TP + FP + FN), 0 when nothing is right."""
    tp = sum(p == g == positive for p, g in zip(predicted, gold))
    fp = sum(p == positive != g for p, g in zip(predicted, gold))
    fn = sum(g == positive != p for p, g in zip(predicted, gold))
    return 100.0 * 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def roc_auc(scores: list[float], is_positive: list[bool]) -> float:
    """Share of (positive, negative) pairs whose positive scores higher, ties counting half: the ranking
    accuracy a pairwise loss trains for, over every such pair (Mann-Whitney U). 50 when a class is absent."""
    positives = [s for s, p in zip(scores, is_positive) if p]
    negatives = sorted(s for s, p in zip(scores, is_positive) if not p)
    if not positives or not negatives:
        return 50.0
    from bisect import bisect_left, bisect_right
    wins = sum(bisect_left(negatives, s) + 0.5 * (bisect_right(negatives, s) - bisect_left(negatives, s))
               for s in positives)
    return 100.0 * wins / (len(positives) * len(negatives))


def seqeval_scores(predicted: list[list[str]], gold: list[list[str]]) -> dict[str, float]:
    """Entity-level micro precision/recall/F1 (CoNLL rules, as seqeval's default mode). seqeval is imported
    here, when metrics are computed (see the module's docstring)."""
    from seqeval.metrics import f1_score, precision_score, recall_score
    return {"f1": 100.0 * float(f1_score(gold, predicted)),
            "precision": 100.0 * float(precision_score(gold, predicted, zero_division=0)),
            "recall": 100.0 * float(recall_score(gold, predicted, zero_division=0))}


def get_entities(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, first, last) of each entity in IOB1/IOB2/IOBES tags (`B-PER`, `I-PER`, `O`, ...), last inclusive:
    seqeval's `get_entities` (prefix tags, its default), rule for rule, so spans and entity F1 agree."""
    chunks, begin, prev_tag, prev_type = [], 0, "O", ""
    for i, chunk in enumerate(list(tags) + ["O"]):
        tag, kind = chunk[0], chunk[1:].split("-", maxsplit=1)[-1] or "_"
        if _chunk_ends(prev_tag, tag, prev_type, kind):
            chunks.append((prev_type, begin, i - 1))
        if _chunk_starts(prev_tag, tag, prev_type, kind):
            begin = i
        prev_tag, prev_type = tag, kind
    return chunks


def _chunk_ends(prev_tag: str, tag: str, prev_type: str, kind: str) -> bool:
    return (prev_tag in ("E", "S") or (prev_tag in ("B", "I") and tag in ("B", "S", "O"))
            or (prev_tag not in ("O", ".") and prev_type != kind))


def _chunk_starts(prev_tag: str, tag: str, prev_type: str, kind: str) -> bool:
    return (tag in ("B", "S") or (prev_tag in ("E", "S", "O") and tag in ("E", "I"))
            or (tag not in ("O", ".") and prev_type != kind))


def entity_spans(words: list[str], tags: list[str], text: str | None = None) -> list[dict]:
    """Decoded slot spans: text, type, word range [start, end) and, given the words' source `text`, the
    character range [char_start, end) in it (the span's text is then the source's own, spacing included)."""
    offsets = word_char_offsets(text, words) if text is not None else None
    spans = []
    for kind, start, end in get_entities(tags):
        span = {"text": " ".join(words[start:end + 1]), "type": kind, "start": start, "end": end + 1}
        if offsets is not None:
            span["char_start"], span["char_end"] = offsets[start][0], offsets[end][1]
            span["text"] = text[span["char_start"]:span["char_end"]]
        spans.append(span)
    return spans


def frame_accuracy(correct_per_head: list[list[bool]]) -> float:
    """Share of examples every head got entirely right (JointBERT's sentence accuracy)."""
    rows = list(zip(*correct_per_head))
    return 100.0 * sum(all(row) for row in rows) / max(len(rows), 1)


# ---- SQuAD v1.1 (as the official evaluation script computes them) -----------------------------------------
import re  # noqa: E402  (kept with the SQuAD functions they serve)
import string  # noqa: E402
import unicodedata  # noqa: E402
from collections import Counter  # noqa: E402


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation, the articles a/an/the, and extra whitespace (the official script's order)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def squad_exact_match(prediction: str, golds: list[str]) -> float:
    """1.0 when the normalized prediction equals any normalized gold answer."""
    return max((float(normalize_answer(prediction) == normalize_answer(g)) for g in golds), default=0.0)


def squad_f1(prediction: str, golds: list[str]) -> float:
    """Token-overlap F1 of the normalized texts, the best over the gold answers."""
    return max((_token_f1(normalize_answer(prediction).split(), normalize_answer(g).split()) for g in golds),
               default=0.0)


def _token_f1(predicted: list[str], gold: list[str]) -> float:
    return _overlap_f1(sum((Counter(predicted) & Counter(gold)).values()), len(predicted), len(gold))


def _overlap_f1(overlap: int, predicted: int, gold: int) -> float:
    """F1 of a predicted and a gold answer of these lengths sharing `overlap` units (0 when they share none)."""
    if overlap == 0:
        return 0.0
    precision, recall = overlap / predicted, overlap / gold
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: list[str], golds: list[list[str]]) -> dict[str, float]:
    """exact_match and f1 on a 0-100 scale, averaged over questions."""
    return _averaged(squad_exact_match, squad_f1, predictions, golds)


def _averaged(exact_match, f1, predictions: list[str], golds: list[list[str]]) -> dict[str, float]:
    total = max(len(golds), 1)
    return {"exact_match": 100.0 * sum(exact_match(p, g) for p, g in zip(predictions, golds)) / total,
            "f1": 100.0 * sum(f1(p, g) for p, g in zip(predictions, golds)) / total}


_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


# ---- CMRC 2018 (Chinese): characters, not whitespace words --------------------------------------------------
def cmrc_segments(text: str) -> list[str]:
    """Lower-cased segments with punctuation dropped: each CJK character alone, runs of other characters
    (Latin words, numbers) whole. Whitespace words would make a Chinese answer one token, so F1 = EM."""
    segments, run = [], ""
    for char in text.lower():
        if char.isspace() or _is_punctuation(char) or _is_cjk(char):
            segments += [run] if run else []
            run = ""
            segments += [char] if _is_cjk(char) else []
        else:
            run += char
    return segments + ([run] if run else [])


def cmrc_exact_match(prediction: str, golds: list[str]) -> float:
    """1.0 when the prediction equals a gold answer once case, punctuation and whitespace are ignored."""
    return max((float("".join(cmrc_segments(prediction)) == "".join(cmrc_segments(g))) for g in golds),
               default=0.0)


def cmrc_f1(prediction: str, golds: list[str]) -> float:
    """F1 from the longest common contiguous run of segments (CMRC 2018's evaluation), best over the golds."""
    predicted = cmrc_segments(prediction)
    return max((_run_f1(predicted, cmrc_segments(g)) for g in golds), default=0.0)


def _run_f1(predicted: list[str], gold: list[str]) -> float:
    longest, previous = 0, [0] * (len(gold) + 1)
    for segment in predicted:
        current = [0] * (len(gold) + 1)
        for j, other in enumerate(gold):
            if segment == other:
                current[j + 1] = previous[j] + 1
                longest = max(longest, current[j + 1])
        previous = current
    return _overlap_f1(longest, len(predicted), len(gold))


def cmrc_scores(predictions: list[str], golds: list[list[str]]) -> dict[str, float]:
    """exact_match and f1 on a 0-100 scale, averaged over questions (CMRC 2018's measures)."""
    return _averaged(cmrc_exact_match, cmrc_f1, predictions, golds)


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return (0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0xF900 <= code <= 0xFAFF
            or 0x20000 <= code <= 0x2FFFF)


def _is_punctuation(char: str) -> bool:
    return char in _PUNCTUATION or unicodedata.category(char).startswith("P")


# How an extractive QA answer is scored: (scores over questions, one question's exact match).
QA_METRICS = {"squad": (squad_scores, squad_exact_match), "cmrc2018": (cmrc_scores, cmrc_exact_match)}


def qa_metric(name: str) -> tuple:
    """QA_METRICS[name], or a ValueError that lists the names there are."""
    if name not in QA_METRICS:
        raise ValueError(f"metric must be one of {sorted(QA_METRICS)}, got {name!r}")
    return QA_METRICS[name]
