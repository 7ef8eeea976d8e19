"""PALM's SequenceLabel head: per-token softmax or a CRF, read back per word."""
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from mtl.components.heads.base import Head
from mtl.components.heads.crf import CRF
from mtl.components.heads.distill import kl_rows, soft_targets
from mtl.text import words_from_token_predictions
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
    """Word tagging (BIO). Labels sit on first sub-tokens; with `use_crf`, a CRF over words decodes by Viterbi.
    `loss_weight` scales this head's loss in the step's sum (JointBERT's `slot_loss_coef`)."""

    input_fields = ("word_start_mask",)
    backbone_outputs = ("sequence_output",)
    main_metric = "f1"

    def __init__(self, num_classes: int, input_dim: int, dropout_prob: float = 0.1,
                 label_field: str = "label_ids", use_crf: bool = False, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.label_fields, self.num_classes, self.loss_weight = (label_field,), num_classes, float(loss_weight)
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

    def loss_units(self, batch: dict) -> float:
        """A CRF's loss is a mean over sentences with at least one word; softmax's over labelled tokens."""
        if self.crf is None:
            return super().loss_units(batch)
        return float((batch["word_start_mask"].sum(1) > 0).sum())

    def teacher_signal(self, outputs: dict[str, torch.Tensor], batch: dict,
                       temperature: float) -> list[torch.Tensor]:
        """Per word, not per sub-token (a student's tokenizer may split words differently): the tag
        probabilities at each word's first sub-token at `temperature`, or a CRF's marginals (at T = 1: they
        are not a softmax of one vector)."""
        word_emissions, word_mask = pack_words(outputs["logits"].float(), batch["word_start_mask"])
        if self.crf is not None:
            probs = self.crf.marginals(word_emissions, word_mask)
        else:
            probs = soft_targets(word_emissions, temperature)
        return [row[:n] for row, n in zip(probs, word_mask.sum(1).tolist())]

    def distill_loss(self, outputs: dict[str, torch.Tensor], batch: dict, targets: torch.Tensor,
                     mask: torch.Tensor, temperature: float) -> torch.Tensor:
        """KL per word against the teacher's word distributions, over the words both kept (truncation may
        cut them at different places); a CRF student matches its marginals to them."""
        word_emissions, word_mask = pack_words(outputs["logits"].float(), batch["word_start_mask"])
        width = min(word_emissions.size(1), targets.size(1))
        word_emissions, targets = word_emissions[:, :width], targets[:, :width]
        both = word_mask[:, :width] & mask[:, :width].bool()
        if self.crf is not None:
            log_student = self.crf.log_marginals(word_emissions, word_mask[:, :width])
            return kl_rows(targets, log_student, both)
        log_student = torch.log_softmax(word_emissions / temperature, -1)
        return kl_rows(targets, log_student, both) * temperature ** 2

    def predict(self, outputs: dict[str, torch.Tensor], batch: dict) -> list[tuple[list[int], list[float]]]:
        """Tag ids per kept word and each tag's probability (softmax, or the CRF's marginal); words dropped
        by truncation are filled in `decode`."""
        word_emissions, word_mask = pack_words(outputs["logits"].float(), batch["word_start_mask"])
        lengths = word_mask.sum(1).tolist()
        if self.crf is not None:
            paths, probs = self.crf.viterbi(word_emissions, word_mask), self.crf.marginals(word_emissions, word_mask)
        else:
            paths, probs = word_emissions.argmax(-1).tolist(), word_emissions.softmax(-1)
        chosen = probs.gather(2, torch.tensor([p + [0] * (probs.size(1) - len(p)) for p in paths],
                                              dtype=torch.long, device=probs.device).unsqueeze(2)).squeeze(2)
        return [(path[:n], row[:n]) for path, row, n in zip(paths, chosen.tolist(), lengths)]

    def decode(self, prediction: tuple[list[int], list[float]] | list[int], names: list[str] | None,
               meta: dict) -> dict[str, Any]:
        """Tags per word, slot spans, and each word's tag probability (None for words cut by truncation)."""
        ids, probs = prediction if isinstance(prediction, tuple) else (prediction, None)
        kept = [names[i] if names else str(i) for i in ids]
        tags = words_from_token_predictions(meta["word_starts"], kept, "O")
        decoded = {"tags": tags, "spans": entity_spans(meta["words"], tags, meta.get("text"))}
        if probs is not None:
            decoded["probs"] = words_from_token_predictions(meta["word_starts"], [round(p, 6) for p in probs], None)
        return decoded

    def metrics(self, decoded: list[dict], golds: list[list[str]]) -> dict[str, float]:
        return seqeval_scores([d["tags"] for d in decoded], golds)

    def is_correct(self, decoded: dict, gold: list[str]) -> bool:
        return decoded["tags"] == gold
