"""Metrics on decoded predictions, on a 0-100 scale: accuracy, macro-F1, seqeval entity F1, frame accuracy."""
from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities


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


def seqeval_scores(predicted: list[list[str]], gold: list[list[str]]) -> dict[str, float]:
    """Entity-level micro precision/recall/F1 (CoNLL rules, as seqeval's default mode)."""
    return {"f1": 100.0 * float(f1_score(gold, predicted)),
            "precision": 100.0 * float(precision_score(gold, predicted, zero_division=0)),
            "recall": 100.0 * float(recall_score(gold, predicted, zero_division=0))}


def entity_spans(words: list[str], tags: list[str]) -> list[dict]:
    """Decoded slot spans: text, type and word range [start, end)."""
    return [{"text": " ".join(words[start:end + 1]), "type": kind, "start": start, "end": end + 1}
            for kind, start, end in get_entities(tags)]


def frame_accuracy(correct_per_head: list[list[bool]]) -> float:
    """Share of examples every head got entirely right (JointBERT's sentence accuracy)."""
    rows = list(zip(*correct_per_head))
    return 100.0 * sum(all(row) for row in rows) / max(len(rows), 1)
