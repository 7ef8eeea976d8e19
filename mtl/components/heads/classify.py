"""PALM's Classify head: dropout + linear over the pooled output (or the first token's vector), softmax
cross-entropy."""
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from mtl.components.heads.base import Head
from mtl.components.heads.distill import kl_to_targets, soft_targets
from mtl.metrics import accuracy, macro_f1


class Classify(Head):
    """Sentence classification; predictions decode to {label, prob}.

    `sentence_vector`: `pooled_output` (the encoder's pooler, PALM's and JointBERT's choice) or `cls` (the
    first token's last hidden state, untouched by a pooler the checkpoint may never have trained).
    `loss_weight` scales this head's loss in the step's sum (see mtl.trainers.balancing)."""

    backbone_outputs = ("pooled_output",)
    main_metric = "accuracy"

    def __init__(self, num_classes: int, input_dim: int, dropout_prob: float = 0.1,
                 label_field: str = "label_ids", loss_weight: float = 1.0,
                 sentence_vector: str = "pooled_output") -> None:
        super().__init__()
        if sentence_vector not in ("pooled_output", "cls"):
            raise ValueError(f"Classify: sentence_vector must be 'pooled_output' or 'cls', got {sentence_vector!r}")
        self.label_fields, self.num_classes, self.loss_weight = (label_field,), num_classes, float(loss_weight)
        self.sentence_vector = sentence_vector
        if sentence_vector == "cls":
            self.backbone_outputs = ("sequence_output",)
        self.dropout = nn.Dropout(dropout_prob)
        self.classifier = nn.Linear(input_dim, num_classes)

    def forward(self, batch: dict, enc: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        vector = enc["pooled_output"] if self.sentence_vector == "pooled_output" else enc["sequence_output"][:, 0]
        logits = self.classifier(self.dropout(vector))
        out = {"logits": logits}
        labels = batch.get(self.label_fields[0])
        if labels is not None and self.training:
            out["loss"] = F.cross_entropy(logits.float(), labels, ignore_index=-100)
        return out

    def teacher_signal(self, outputs: dict[str, torch.Tensor], batch: dict,
                       temperature: float) -> list[torch.Tensor]:
        return list(soft_targets(outputs["logits"], temperature))

    def distill_loss(self, outputs: dict[str, torch.Tensor], batch: dict, targets: torch.Tensor,
                     mask: torch.Tensor, temperature: float) -> torch.Tensor:
        return kl_to_targets(targets, outputs["logits"], mask, temperature)

    def predict(self, outputs: dict[str, torch.Tensor], batch: dict) -> list[tuple[int, float]]:
        probs = outputs["logits"].float().softmax(-1)
        best, index = probs.max(-1)
        return list(zip(index.tolist(), best.tolist()))

    def decode(self, prediction: tuple[int, float], names: list[str] | None, meta: dict) -> dict[str, Any]:
        index, prob = prediction
        return {"label": names[index] if names else str(index), "prob": round(prob, 6)}

    def metrics(self, decoded: list[dict], golds: list[str]) -> dict[str, float]:
        predicted = [d["label"] for d in decoded]
        return {"accuracy": accuracy(predicted, golds), "macro_f1": macro_f1(predicted, golds)}

    def is_correct(self, decoded: dict, gold: str) -> bool:
        return decoded["label"] == gold
