"""Helpers for the config, resume, selection, export and CLI tests: tiny two-task trainers and tiny configs."""
import json
from pathlib import Path

import torch
import yaml

import mtl
from conftest import TINY_CONFIG, tiny_bert

TEXTS = ["book a flight from boston to new york", "play some jazz", "will it rain in denver today",
         "booking flights to san francisco", "set an alarm for six am"]


def two_task_trainer(vocab: Path, data: Path, init_seed: int = 0, dropout: float = 0.1,
                     **options) -> "mtl.MultiHeadTrainer":
    """PALM's shape on the tiny corpus: a `slot` task and an `intent` task, each with its own reader
    (different batch sizes and seeds), one shared backbone with dropout, batches drawn by mix ratio."""
    torch.manual_seed(init_seed)  # the random init: a resumed run must overwrite it from the checkpoint
    backbone = tiny_bert(hidden_dropout_prob=dropout)
    slot_reader = mtl.reader.IntentSlotReader(vocab, 32, seed=3).load_data(data / "train", batch_size=4)
    intent_reader = mtl.reader.IntentSlotReader(vocab, 32, seed=4).load_data(data / "train", batch_size=6)
    names = slot_reader.label_names
    slot = mtl.Trainer("slot", reader=slot_reader, dev_reader=slot_reader.eval_reader(data / "dev"),
                       head=mtl.head.SequenceLabel(len(names["slot_ids"]), 32, dropout, label_field="slot_ids"))
    intent = mtl.Trainer("intent", reader=intent_reader, mix_ratio=0.5,
                         dev_reader=intent_reader.eval_reader(data / "dev"),
                         head=mtl.head.Classify(len(names["intent_ids"]), 32, dropout, label_field="intent_ids"))
    options = {"lr": 3e-3, "num_epochs": 2, "precision": "fp32", "seed": 7, "sampling_reference": "slot",
               **options}
    return mtl.MultiHeadTrainer([slot, intent], backbone=backbone, **options)


def tiny_config(vocab: Path, data: Path, save_path: str = "out", **sections) -> dict:
    """A joint intent+slot run config over a tiny random BERT built with `from_config` (no download)."""
    config = {
        "backbone": {"_component_": "mtl.backbone.BERT.from_config", "config": dict(TINY_CONFIG)},
        "tasks": [{"name": "joint",
                   "reader": {"_component_": "mtl.reader.IntentSlotReader", "vocab_path": str(vocab),
                              "max_seqlen": 32},
                   "train_data": str(data / "train"), "dev_data": str(data / "dev"),
                   "test_data": str(data / "dev"), "batch_size": 8,
                   "heads": {"intent": {"_component_": "mtl.head.Classify", "num_classes": "auto",
                                        "input_dim": "auto", "dropout_prob": 0.0, "label_field": "intent_ids"},
                             "slots": {"_component_": "mtl.head.SequenceLabel", "num_classes": "auto",
                                       "input_dim": "auto", "label_field": "slot_ids"}}}],
        "trainer": {"lr": 3e-3, "num_epochs": 2, "precision": "fp32", "seed": 2},
        "train": {"print_steps": 2, "eval_steps": 3},
        "saver": {"save_path": save_path, "save_steps": 4},
    }
    config.update(sections)
    return config


def write_yaml(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def same_records(ours: list[dict], theirs: list[dict]) -> bool:
    """Labels, tags and spans identical; probabilities equal to within float noise."""
    if len(ours) != len(theirs):
        return False
    for a, b in zip(ours, theirs):
        if a.keys() != b.keys() or a["text"] != b["text"]:
            return False
        for key in set(a) - {"text"}:
            if json.dumps(_labels(a[key])) != json.dumps(_labels(b[key])):
                return False
            if any(abs(x - y) > 2e-6 for x, y in zip(_probs(a[key]), _probs(b[key]))):
                return False
    return True


def _labels(decoded: dict) -> dict:
    return {k: v for k, v in decoded.items() if k not in ("prob", "probs")}


def _probs(decoded: dict) -> list[float]:
    values = [decoded["prob"]] if "prob" in decoded else []
    return values + [p for p in decoded.get("probs", []) if p is not None]


def exported_tiny_joint(vocab: Path, tmp_path_factory) -> Path:
    """An exported tiny joint intent + slot model, untrained: for tests of the paths around a model folder."""
    from conftest import UTTERANCES, joint_trainer, write_intent_slot
    data = tmp_path_factory.mktemp("data")
    write_intent_slot(data / "train", UTTERANCES)
    write_intent_slot(data / "dev", UTTERANCES)
    return joint_trainer(vocab, data).export(tmp_path_factory.mktemp("export") / "model")
