"""PALM's SequenceLabel head: per-token softmax or a CRF, read back per word."""
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from mtl.components.heads.base import Head
from mtl.components.heads.crf import CRF
from mtl.components.readers.words import words_from_token_predictions
from mtl.metrics import entity_spans, seqeval_scores


def pack_words(values: torch.Tensor, start_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather each word's first sub-token to the left: (B, T, ...) -> (B, W, ...), plus the word mask."""
    mask = start_mask.bool()
    counts = mask.sum(1)
    width = max(int(counts.max()), 1)
    order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices[:, :width]
    index = order.view(*order.shape, *([1] * (values.dim() - 2))).expand(-1, -1, *values.shape[2:])
    word_mask = torch.arange(width, device=values.device).unsqueeze(0) < counts.unsqueeze(1)
    return values.gather(1, index), word_mask


class SequenceLabel(Head):
    """Word tagging (BIO). Labels sit on first sub-tokens; with `use_crf`, a CRF over words decodes by Viterbi."""

    input_fields = ("word_start_mask",)
    backbone_outputs = ("sequence_output",)
    main_metric = "f1"

    def __init__(self, num_classes: int, input_dim: int, dropout_prob: float = 0.1,
                 label_field: str = "label_ids", use_crf: bool = False) -> None:
        super().__init__()
        self.label_fields = (label_field,)
        self.dropout = nn.Dropout(dropout_prob)
        self.classifier = nn.Linear(input_dim, num_classes)
        self.crf = CRF(num_classes) if use_crf else None

    def forward(self, batch: dict, enc: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        emissions = self.classifier(self.dropout(enc["sequence_output"]))
        out = {"logits": emissions}
        labels = batch.get(self.label_fields[0])
        if labels is None or not self.training:
            return out
        if self.crf is None:
            out["loss"] = F.cross_entropy(emissions.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
        else:
            word_emissions, word_mask = pack_words(emissions, batch["word_start_mask"])
            word_labels, _ = pack_words(labels, batch["word_start_mask"])
            out["loss"] = self.crf.nll(word_emissions, word_labels, word_mask)
        return out

    def predict(self, outputs: dict[str, torch.Tensor], batch: dict) -> list[list[int]]:
        """Tag ids per kept word (words dropped by truncation are filled in `decode`)."""
        word_emissions, word_mask = pack_words(outputs["logits"].float(), batch["word_start_mask"])
        if self.crf is not None:
            return self.crf.viterbi(word_emissions, word_mask)
        best = word_emissions.argmax(-1)
        return [row[:n].tolist() for row, n in zip(best, word_mask.sum(1).tolist())]

    def decode(self, prediction: list[int], names: list[str] | None, meta: dict) -> dict[str, Any]:
        kept = [names[i] if names else str(i) for i in prediction]
        tags = words_from_token_predictions(meta["word_starts"], kept, "O")
        return {"tags": tags, "spans": entity_spans(meta["words"], tags)}

    def metrics(self, decoded: list[dict], golds: list[list[str]]) -> dict[str, float]:
        return seqeval_scores([d["tags"] for d in decoded], golds)

    def is_correct(self, decoded: dict, gold: list[str]) -> bool:
        return decoded["tags"] == gold
