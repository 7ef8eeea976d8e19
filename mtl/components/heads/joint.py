"""The joint intent + slot pair of heads, sized from an IntentSlotReader's label maps."""
from typing import Any

from mtl.components.heads.base import Head
from mtl.components.heads.classify import Classify
from mtl.components.heads.sequence_label import SequenceLabel


def intent_slot_heads(reader: Any, input_dim: int, dropout_prob: float = 0.1, use_crf: bool = False,
                      slot_loss_coef: float = 3.0, sentence_vector: str = "cls") -> dict[str, Head]:
    """{"intent": Classify, "slots": SequenceLabel} over one reader's `intent_ids` and `slot_ids`: one encoder
    pass feeds both (the joint mode). The reader must have read its training data (its label maps).

    `slot_loss_coef` weighs the slot loss against the intent loss (JointBERT's name). The slot loss is a mean
    over words, most of them `O` and learnt early, so in a plain sum it soon gets a small share of each
    update: on ATIS (MiniLM, 5 epochs) a plain sum trained slots 2 F1 points below a slots-only model, and a
    weight of 3 put them above it (benchmarks/results/joint_ablation.json, docs/multitask.md).

    `sentence_vector`: what the intent head reads, `cls` (the [CLS] token's vector, the default) or
    `pooled_output` (the encoder's pooler, PALM's and JointBERT's choice). In the same ablation, with the
    slot loss at 3x, the pooler's intent accuracy swung by 2 points from seed to seed and fell below an
    intent-only model's, while the [CLS] vector's did not."""
    names = reader.label_names
    return {"intent": Classify(len(names["intent_ids"]), input_dim, dropout_prob, label_field="intent_ids",
                               sentence_vector=sentence_vector),
            "slots": SequenceLabel(len(names["slot_ids"]), input_dim, dropout_prob, label_field="slot_ids",
                                   use_crf=use_crf, loss_weight=slot_loss_coef)}
