"""PALM's Match head: sentence-pair matching, pointwise (softmax cross-entropy) or pairwise (hinge on scores)."""
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from mtl.components.heads.base import Head
from mtl.components.heads.distill import kl_rows, kl_to_targets, soft_targets
from mtl.errors import MtlError
from mtl.metrics import accuracy, binary_f1, macro_f1, roc_auc

STRATEGIES = ("pointwise", "pairwise")
THRESHOLD = 0.5  # a pairwise score at or above it predicts "match" (class id 1)


def hinge_loss(positive: torch.Tensor, negative: torch.Tensor, margin: float) -> torch.Tensor:
    """PALM's pairwise loss: mean(max(0, margin - s_pos + s_neg)); zero once each positive pair scores at
    least `margin` above its negative."""
    return torch.relu(margin - positive + negative).mean()


def split_pairs(scores: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The positive and negative halves of a pairwise batch (`MatchReader` puts the B positives first);
    any other layout is refused: a pointwise batch would silently train the wrong thing."""
    half = labels.shape[0] // 2
    layout_ok = labels.shape[0] == 2 * half and bool((labels[:half] == 1).all()) and bool((labels[half:] == 0).all())
    if not layout_ok:
        raise MtlError("Match(learning_strategy='pairwise') trains on batches of MatchReader(learning_strategy="
                       "'pairwise'): B positive pairs then their B negative pairs (label_ids 1...1 0...0), but got "
                       f"label_ids {labels.tolist()[:8]}...; give the task a pairwise reader")
    return scores[:half], scores[half:]


class Match(Head):
    """Sentence-pair matching over the pooled output of `[CLS] a [SEP] b [SEP]`.

    - pointwise: dropout + linear to `num_classes`, softmax cross-entropy (as `Classify`); predicts a label
      and its probability.
    - pairwise (PALM's): dropout + linear to 1 + sigmoid gives each pair a score in (0, 1); training batches
      hold B positive then B negative pairs and the loss is `mean(max(0, margin - s_pos + s_neg))`. A pair is
      predicted "match" (class id 1) when its score >= 0.5. The hinge only orders scores, so 0.5 is a
      convention, not a calibrated probability: `auc` (the share of matching/non-matching pairs ranked the
      right way round, which is what the pairwise loss trains) is the threshold-free measure.

    Metrics: `accuracy` (main), and for two classes `f1` of class id 1 (GLUE's MRPC F1) and `auc` (from the
    probability or score of class 1); `macro_f1` for more classes. Gold ids come from `MatchReader`'s meta.
    """

    backbone_outputs = ("pooled_output",)
    main_metric = "accuracy"

    def __init__(self, num_classes: int, input_dim: int, dropout_prob: float = 0.1,
                 learning_strategy: str = "pointwise", margin: float = 0.5, label_field: str = "label_ids") -> None:
        super().__init__()
        if learning_strategy not in STRATEGIES:
            raise ValueError(f"learning_strategy must be 'pointwise' or 'pairwise', got {learning_strategy!r}")
        if learning_strategy == "pairwise" and num_classes != 2:
            raise ValueError(f"pairwise matching scores a pair as matching or not: num_classes must be 2, "
                             f"got {num_classes}")
        self.label_fields, self.num_classes = (label_field,), num_classes
        self.learning_strategy, self.margin = learning_strategy, margin
        self.dropout = nn.Dropout(dropout_prob)
        self.classifier = nn.Linear(input_dim, 1 if learning_strategy == "pairwise" else num_classes)

    @property
    def pairwise(self) -> bool:
        return self.learning_strategy == "pairwise"

    def forward(self, batch: dict, enc: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = self.classifier(self.dropout(enc["pooled_output"])).float()
        labels = batch.get(self.label_fields[0])
        if self.pairwise:
            out = {"scores": torch.sigmoid(logits.squeeze(-1))}
            if labels is not None and self.training:
                out["loss"] = hinge_loss(*split_pairs(out["scores"], labels), self.margin)
            return out
        out = {"logits": logits}
        if labels is not None and self.training:
            out["loss"] = F.cross_entropy(logits, labels, ignore_index=-100)
        return out

    def teacher_signal(self, outputs: dict[str, torch.Tensor], batch: dict,
                       temperature: float) -> list[torch.Tensor]:
        """Pointwise: class probabilities at `temperature`; pairwise: (1 - score, score), the sigmoid score
        being what the hinge trained (no temperature: it is not a softmax)."""
        if self.pairwise:
            scores = outputs["scores"].float()
            return list(torch.stack([1 - scores, scores], -1))
        return list(soft_targets(outputs["logits"], temperature))

    def distill_loss(self, outputs: dict[str, torch.Tensor], batch: dict, targets: torch.Tensor,
                     mask: torch.Tensor, temperature: float) -> torch.Tensor:
        if self.pairwise:
            scores = outputs["scores"].float().clamp(1e-6, 1 - 1e-6)
            return kl_rows(targets, torch.stack([(1 - scores).log(), scores.log()], -1), mask)
        return kl_to_targets(targets, outputs["logits"], mask, temperature)

    def predict(self, outputs: dict[str, torch.Tensor], batch: dict) -> list[tuple[int, float, float | None]]:
        """(class id, probability of that class or None, score of class 1 or None) per pair."""
        if self.pairwise:
            scores = outputs["scores"].tolist()
            return [(int(s >= THRESHOLD), None, s) for s in scores]
        probs = outputs["logits"].softmax(-1)
        best, index = probs.max(-1)
        positive = probs[:, 1].tolist() if self.num_classes == 2 else [None] * len(best)
        return list(zip(index.tolist(), best.tolist(), positive))

    def decode(self, prediction: tuple, names: list[str] | None, meta: dict) -> dict[str, Any]:
        index, prob, score = prediction
        out: dict[str, Any] = {"label": names[index] if names else str(index), "label_id": index}
        if prob is not None:
            out["prob"] = round(prob, 6)
        if score is not None:
            out["score"] = round(score, 6)
        return out

    def gold(self, meta: dict) -> dict[str, Any]:
        """The gold label text (compared with predicted names) and id (for F1 and AUC of class 1)."""
        return {"label": super().gold(meta), "label_id": meta.get("label_id")}

    def metrics(self, decoded: list[dict], golds: list[dict]) -> dict[str, float]:
        predicted = [d["label"] for d in decoded]
        gold_labels = [g["label"] for g in golds]
        out = {"accuracy": accuracy(predicted, gold_labels)}
        if self.num_classes != 2:
            out["macro_f1"] = macro_f1(predicted, gold_labels)
            return out
        gold_ids = [g["label_id"] for g in golds]
        out["f1"] = binary_f1([d["label_id"] for d in decoded], gold_ids, 1)
        out["auc"] = roc_auc([d["score"] for d in decoded], [i == 1 for i in gold_ids])
        return out

    def is_correct(self, decoded: dict, gold: dict) -> bool:
        return decoded["label"] == gold["label"]
