"""PALM's Classify head: dropout + linear over the pooled output, softmax cross-entropy."""
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from mtl.components.heads.base import Head
from mtl.metrics import accuracy, macro_f1


class Classify(Head):
    """Sentence classification; predictions decode to {label, prob}."""

    backbone_outputs = ("pooled_output",)
    main_metric = "accuracy"

    def __init__(self, num_classes: int, input_dim: int, dropout_prob: float = 0.1,
                 label_field: str = "label_ids") -> None:
        super().__init__()
        self.label_fields, self.num_classes = (label_field,), num_classes
        self.dropout = nn.Dropout(dropout_prob)
        self.classifier = nn.Linear(input_dim, num_classes)

    def forward(self, batch: dict, enc: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = self.classifier(self.dropout(enc["pooled_output"]))
        out = {"logits": logits}
        labels = batch.get(self.label_fields[0])
        if labels is not None and self.training:
            out["loss"] = F.cross_entropy(logits.float(), labels, ignore_index=-100)
        return out

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
