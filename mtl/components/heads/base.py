"""Head base class: the contract every task layer follows, built-in or written by a user."""
from typing import Any

import numpy as np
import torch
from torch import nn


class Head(nn.Module):
    """A task layer on top of backbone outputs.

    Declare `input_fields` (reader fields needed always), `label_fields` (needed for the loss) and
    `backbone_outputs`; the trainer checks them when the pieces are joined. Constructor arguments should be
    plain values (numbers, strings, lists, dicts): a config can then build the head and an export rebuild it.
    Implement:
    - `forward(batch, enc)` -> dict with `loss` when the batch has labels (and whatever `predict` needs);
    - `predict(outputs, batch)` -> one raw prediction per example (ids);
    - `decode(prediction, names, meta)` -> a readable, JSON-ready prediction;
    - `metrics(decoded, golds)` -> {name: value on 0-100}; `main_metric` names the one to select models by.
    To take part in knowledge distillation (mtl.distill), also implement `teacher_signal` (what this head,
    as a teacher, hands a student) and `distill_loss` (the student's loss on it); a head without them
    trains on its labels alone when distilled.
    """

    input_fields: tuple[str, ...] = ()
    label_fields: tuple[str, ...] = ()
    backbone_outputs: tuple[str, ...] = ()
    main_metric: str = "accuracy"
    num_classes: int | None = None  # when set, readers' label ids are checked against it up front
    loss_weight: float = 1.0  # this head's static weight in the step's sum of losses
    distilling: Any = None  # a `heads.distill.Distilling` while a student trains on a teacher; never saved

    def __new__(cls, *args: Any, **kwargs: Any) -> "Head":
        """Keep the constructor's arguments: an exported model rebuilds its heads from them (`mtl.spec`),
        so a user's own head exports with no extra code."""
        head = super().__new__(cls)
        object.__setattr__(head, "_init_args", (args, kwargs))
        return head

    def forward(self, batch: dict, enc: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def predict(self, outputs: dict[str, torch.Tensor], batch: dict) -> list[Any]:
        raise NotImplementedError

    def loss_units(self, batch: dict) -> float:
        """What this head's loss is a mean over, counted in `batch`: the step weighs micro-batches (gradient
        accumulation, several processes) by it so that their sum is the whole batch's mean. The default:
        labels that are not -100 in the first label field, else the batch's rows. Override it for a loss
        averaged over something else (a CRF's sentences)."""
        targets = batch.get("teacher", {}).get(self.label_fields[0]) if self.distilling and self.label_fields else None
        if targets is not None:  # distilled: a mean over the rows (or words) the teacher labelled
            return float(targets[1].sum())
        labels = batch.get(self.label_fields[0]) if self.label_fields else None
        if not isinstance(labels, torch.Tensor):
            return float(len(batch["input_ids"]))
        return float((labels != -100).sum())

    def teacher_signal(self, outputs: dict[str, torch.Tensor], batch: dict,
                       temperature: float) -> list[torch.Tensor] | None:
        """As a teacher: one tensor per feature of `batch`, independent of the tokenizer (per sentence, or per
        word for word-level heads): probabilities over the label space at `temperature`. None: this head
        hands nothing on (its student learns from labels alone)."""
        return None

    def merge_signals(self, features: list[np.ndarray], temperature: float) -> np.ndarray:
        """As a teacher: one example's targets from the `teacher_signal`s of its features. The default: the
        one feature's, or the mean of several. A head whose reader splits an example into windows overrides
        it (MRC: logits of a word seen in several windows averaged, then one softmax over all words)."""
        return features[0] if len(features) == 1 else np.mean(features, axis=0)

    def distill_loss(self, outputs: dict[str, torch.Tensor], batch: dict, targets: torch.Tensor,
                     mask: torch.Tensor, temperature: float) -> torch.Tensor:
        """As a student: the loss against the teacher's `targets` (collated from `teacher_signal`'s tensors,
        padded; `mask` marks the real rows or words)."""
        raise NotImplementedError(f"{type(self).__name__} has no distill_loss; it cannot be distilled")

    def decode(self, prediction: Any, names: list[str] | None, meta: dict) -> Any:
        return prediction

    def merge(self, decoded: list[Any], metas: list[dict]) -> tuple[list[Any], list[dict]]:
        """Per-feature records -> per-example records, for heads whose reader splits one example into several
        features (MRC's context windows). The default: one feature is one example, nothing to merge."""
        return decoded, metas

    def gold(self, meta: dict) -> Any:
        """The gold answer of one example as the reader kept it (label text, tag list, ...)."""
        return meta.get("gold", {}).get(self.label_fields[0]) if self.label_fields else None

    def metrics(self, decoded: list[Any], golds: list[Any]) -> dict[str, float]:
        raise NotImplementedError

    def is_correct(self, decoded: Any, gold: Any) -> bool:
        """Whether one example is entirely right: sentence (frame) accuracy combines this over heads."""
        return decoded == gold
