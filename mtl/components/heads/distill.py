"""Knowledge distillation at the head: what a teacher head hands its student, and the student's loss on it.

A teacher head turns its outputs into targets that do not depend on the tokenizer (`Head.teacher_signal`):
probabilities over its label space at a temperature, per sentence or per word. The student head's
`distill_loss` compares its own outputs with them (KL divergence, times T² so gradients keep their scale as
T changes, as Hinton et al. do). Under distillation a head's loss becomes
`alpha * soft + (1 - alpha) * hard`, the hard part only where the batch has labels (unlabelled text, labelled
by the teacher alone, trains on the soft part). Targets reach a batch as `batch["teacher"][label_field]`:
a (targets, mask) pair the distillation reader hook collates (mtl.distill).

Where teacher and student tokenize alike (a layer-dropped student, or encoders that share a WordPiece
vocabulary), a hidden-state loss can be added (`hidden_weight`): the student's token-by-token cosine
similarities of its last hidden states against the teacher's (a relation loss, in the spirit of MiniLM's
relation transfer). It compares (tokens x tokens) matrices, so hidden sizes may differ and no projection
layer is trained: the student saves as an ordinary model. It is added to one head's loss per task.
"""
from dataclasses import dataclass

import torch
from torch.nn import functional as F

TEACHER = "teacher"  # the batch key under which teacher targets arrive
RELATIONS = "_hidden_relations"  # the teacher field of the hidden-state relation targets


@dataclass(frozen=True)
class Distilling:
    """How a student head mixes the teacher's targets with the labels."""

    temperature: float = 2.0
    alpha: float = 0.5  # the soft loss's weight; 1 - alpha goes to the labels
    hidden_weight: float = 0.0  # the hidden-state relation loss's weight, added to this head's loss

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"distillation temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"distillation alpha (the soft loss's weight) must be in [0, 1], got {self.alpha}")
        if not self.hidden_weight >= 0.0:
            raise ValueError(f"distillation hidden_weight must be >= 0, got {self.hidden_weight}")


def soft_targets(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Probabilities at `temperature` over the last dimension, in float32."""
    return (logits.float() / temperature).softmax(-1)


def kl_to_targets(targets: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor,
                  temperature: float) -> torch.Tensor:
    """Mean over the rows where `mask` is set of KL(targets || softmax(logits / T)), times T²."""
    log_student = F.log_softmax(logits.float() / temperature, dim=-1)
    return kl_rows(targets, log_student, mask) * temperature ** 2


def kl_rows(targets: torch.Tensor, log_student: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked rows of sum_k p_k (log p_k - log q_k); zero-probability targets contribute nothing."""
    targets = targets.float()
    per_row = (targets * (targets.clamp_min(1e-12).log() - log_student)).sum(-1)
    mask = mask.to(per_row.dtype)
    return (per_row * mask).sum() / mask.sum().clamp(min=1.0)


def token_relations(hidden: torch.Tensor) -> torch.Tensor:
    """(tokens, tokens) cosine similarities of one sequence's hidden states."""
    normal = F.normalize(hidden.float(), dim=-1)
    return normal @ normal.T


def relation_loss(hidden: torch.Tensor, attention_mask: torch.Tensor, targets: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
    """Mean over the batch's examples of the mean squared difference between the student's token relations
    and the teacher's (`targets`: each example's n x n matrix flattened, `mask` marking its n² entries);
    an example the teacher tokenized to another length is left out."""
    normal = F.normalize(hidden.float(), dim=-1)
    student = normal @ normal.transpose(1, 2)  # (B, L, L)
    total, counted = student.new_zeros(()), 0
    for row, (length, entries) in enumerate(zip(attention_mask.sum(1).tolist(), mask.sum(1).tolist())):
        if entries == 0 or length * length != entries:
            continue
        teacher = targets[row, :entries, 0].to(student.device).view(length, length)
        total = total + F.mse_loss(student[row, :length, :length], teacher)
        counted += 1
    return total / max(counted, 1)


def has_labels(head: "object", batch: dict) -> bool:
    """Whether the batch carries at least one label for this head (unlabelled text has none)."""
    labels = batch.get(head.label_fields[0]) if head.label_fields else None
    return isinstance(labels, torch.Tensor) and bool((labels != -100).any())


def mix_teacher_loss(head: "object", out: dict[str, torch.Tensor], batch: dict,
                     enc: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`out` with its loss mixed with the teacher's (when the head is being distilled and the batch has its
    targets), plus the hidden-state relation loss where this head carries it; the parts are kept as
    `loss_soft`, `loss_hard` and `loss_hidden` for the logs."""
    settings: Distilling | None = getattr(head, "distilling", None)
    targets = batch.get(TEACHER, {}).get(head.label_fields[0]) if settings is not None and head.label_fields else None
    if targets is None or not head.training:
        return out
    soft = head.distill_loss(out, batch, targets[0], targets[1], settings.temperature)
    out = {**out, "loss_soft": soft.detach()}
    if has_labels(head, batch) and "loss" in out and settings.alpha < 1.0:
        out["loss_hard"] = out["loss"].detach()
        out["loss"] = settings.alpha * soft + (1.0 - settings.alpha) * out["loss"]
    else:
        out["loss"] = soft
    relations = batch[TEACHER].get(RELATIONS) if settings.hidden_weight > 0 else None
    if relations is not None:
        hidden = relation_loss(enc["sequence_output"], batch["attention_mask"], *relations)
        out["loss_hidden"] = hidden.detach()
        out["loss"] = out["loss"] + settings.hidden_weight * hidden
    return out
