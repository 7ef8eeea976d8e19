"""The exported model folder and `mtl.load`: rebuilt with no user code in a new process, identical
predictions, one encoder pass for every head that can share it, no interference between two models."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import AutoModel

import mtl
from conftest import UTTERANCES, joint_trainer, tiny_bert, write_intent_slot
from tiny_runs import TEXTS, same_records, two_task_trainer

# `python -m mtl predict ...` in a new process, seeded unlike the parent: every weight must come from the folder
CHILD = ("import runpy, torch; torch.set_num_threads(1); torch.manual_seed(4321); "
         "runpy.run_module('mtl', run_name='__main__')")


@pytest.fixture
def joint(vocab_file, intent_slot_dir):
    mh = joint_trainer(vocab_file, intent_slot_dir, num_epochs=6, seed=1)
    mh.train(print_steps=0)
    return mh


def test_export_then_load_in_a_new_process_gives_identical_predictions(joint, tmp_path):
    folder = joint.export(tmp_path / "model")
    assert {p.name for p in folder.iterdir()} == {"backbone", "heads.safetensors", "labels.json", "tokenizer",
                                                  "model.json", "trainer_state.json"}
    assert not [p for p in folder.rglob("*") if p.suffix in (".pt", ".bin", ".pkl", ".pickle")]  # no pickle
    ours = joint.predict("joint", TEXTS)
    (tmp_path / "texts.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = ["predict", "--model", str(folder), "--input", "texts.txt", "--precision", "fp32"]
    done = subprocess.run([sys.executable, "-c", CHILD, *command],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = [json.loads(line) for line in done.stdout.splitlines()]
    assert same_records(ours, theirs)
    assert any(record["slots"]["spans"] for record in theirs)  # the model learned something to compare
    assert all(len(r["slots"]["probs"]) == len(r["text"].split()) for r in theirs)
    assert AutoModel.from_pretrained(str(folder / "backbone")).config.hidden_size == 32  # plain transformers


def test_checkpoints_are_loadable_models_too(joint, tmp_path):
    joint.set_saver(tmp_path / "run")
    folder = joint.save(tmp_path / "run" / "step-1")
    assert same_records(mtl.load(folder, precision="fp32").predict(TEXTS), joint.predict("joint", TEXTS))


def test_two_models_in_one_process_do_not_interfere(joint, vocab_file, tmp_path):
    rows = [row for row in UTTERANCES if row[2] != "set_alarm"]  # other label maps, other weights
    write_intent_slot(tmp_path / "other" / "train", rows * 2)
    write_intent_slot(tmp_path / "other" / "dev", rows)
    other = joint_trainer(vocab_file, tmp_path / "other", num_epochs=3, lr=5e-3, seed=9)
    other.train(print_steps=0)
    first = mtl.load(joint.export(tmp_path / "a"), precision="fp32")
    second = mtl.load(other.export(tmp_path / "b"), precision="fp32")
    a1, b1 = first.predict(TEXTS), second.predict(TEXTS)
    a2 = first.predict(TEXTS)
    assert same_records(a1, joint.predict("joint", TEXTS)) and same_records(b1, other.predict("joint", TEXTS))
    assert a1 == a2 and a1 != b1
    assert "set_alarm" not in {r["intent"]["label"] for r in b1}


def test_encoder_runs_once_for_all_heads_of_all_tasks(vocab_file, intent_slot_dir, tmp_path):
    """Two tasks (slot, intent) whose readers tokenize alike, one of them a joint pair: one pass per batch."""
    mh = two_task_trainer(vocab_file, intent_slot_dir, num_epochs=1)
    mh.train(print_steps=0)
    predictor = mtl.load(mh.export(tmp_path / "model"), precision="fp32")
    calls = []
    predictor.model.backbone.register_forward_hook(lambda *args: calls.append(1))
    records = predictor.predict(TEXTS + ["play the song by the beatles"], batch_size=4)
    assert len(calls) == 2  # 6 texts in batches of 4: two passes feed both tasks' heads
    assert set(records[0]) == {"text", "slot", "intent"}
    assert same_records([{"text": r["text"], "slot": r["slot"]} for r in records[:5]], mh.predict("slot", TEXTS))
    assert same_records([{"text": r["text"], "intent": r["intent"]} for r in records[:5]],
                        mh.predict("intent", TEXTS))


def test_readers_that_tokenize_differently_get_their_own_pass(vocab_file, intent_slot_dir, tmp_path):
    mh = two_task_trainer(vocab_file, intent_slot_dir, num_epochs=1)
    mh.tasks[1].reader.max_seqlen = 5  # the intent reader truncates: its inputs differ from the slot reader's
    mh.build_forward()
    predictor = mtl.load(mh.export(tmp_path / "model"), precision="fp32")
    calls = []
    predictor.model.backbone.register_forward_hook(lambda *args: calls.append(1))
    predictor.predict(TEXTS)
    assert len(calls) == 2


class TableHead(mtl.head.Classify):
    """A head built from a non-plain argument: it cannot be written as a spec."""

    def __init__(self, table: nn.Linear) -> None:
        super().__init__(table.out_features, table.in_features, 0.0, "intent_ids")


def test_export_needs_plain_constructor_arguments(vocab_file, intent_slot_dir, tmp_path, caplog):
    reader = mtl.reader.IntentSlotReader(vocab_file, 32).load_data(intent_slot_dir / "train", batch_size=8)
    task = mtl.Trainer("intent", reader=reader, head=TableHead(nn.Linear(32, 4)))
    mh = mtl.MultiHeadTrainer([task], backbone=tiny_bert(), precision="fp32")
    with pytest.raises(ValueError, match="cannot export TableHead: argument 'table' is a Linear"):
        mh.export(tmp_path / "model")
    assert not (tmp_path / "model").exists()
    folder = mh.save(tmp_path / "ckpt")  # a checkpoint still saves, without model.json, and says so
    assert (folder / "heads.safetensors").is_file() and not (folder / "model.json").exists()
    assert "mtl.load cannot rebuild it" in caplog.text
    with pytest.raises(FileNotFoundError, match="no model.json"):
        mtl.load(folder, precision="fp32")


def test_load_runs_no_pickle_and_no_remote_code(joint, tmp_path, monkeypatch):
    folder = joint.export(tmp_path / "model")

    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.load called while loading a model folder")
    monkeypatch.setattr(torch, "load", no_pickle)
    predictor = mtl.load(folder, precision="fp32")
    assert same_records(predictor.predict(TEXTS[:2]), joint.predict("joint", TEXTS[:2]))
    assert Path(folder / "model.json").read_text().count("_component_") == 4  # backbone, reader, two heads


def test_palm_format_readers_export_and_share_one_pass(vocab_file, tmp_path, classify_rows):
    """PALM's readers (TSV sequence labels with a label map file, classification with integer ids)."""
    from conftest import SLOT_TAGS, write_classify_tsv, write_sequence_tsv
    label_map = tmp_path / "label_map.json"
    label_map.write_text(json.dumps({tag: i for i, tag in enumerate(SLOT_TAGS)}), encoding="utf-8")
    slot_reader = mtl.reader.SequenceLabelReader(vocab_file, 32, label_map, seed=1).load_data(
        write_sequence_tsv(tmp_path / "slot.tsv", [(t, g) for t, g, _ in UTTERANCES]), batch_size=4)
    cls_reader = mtl.reader.ClassifyReader(vocab_file, 32, seed=1).load_data(
        write_classify_tsv(tmp_path / "intent.tsv", classify_rows), batch_size=4)
    slot = mtl.Trainer("slot", reader=slot_reader, head=mtl.head.SequenceLabel(len(SLOT_TAGS), 32, 0.1))
    intent = mtl.Trainer("intent", reader=cls_reader, head=mtl.head.Classify(4, 32, 0.1))
    mh = mtl.MultiHeadTrainer([slot, intent], backbone=tiny_bert(), num_epochs=1, precision="fp32")
    mh.train(print_steps=0)
    predictor = mtl.load(mh.export(tmp_path / "model"), precision="fp32")
    calls = []
    predictor.model.backbone.register_forward_hook(lambda *args: calls.append(1))
    records = predictor.predict(TEXTS[:3])
    assert len(calls) == 1  # different readers, identical encoder inputs: one pass
    assert same_records([{"text": r["text"], "slot": r["slot"]} for r in records], mh.predict("slot", TEXTS[:3]))
    assert same_records([{"text": r["text"], "intent": r["intent"]} for r in records],
                        mh.predict("intent", TEXTS[:3]))


class KeywordHead(mtl.head.Classify):
    def __init__(self, num_classes: int, **options) -> None:
        super().__init__(num_classes, **options)


def test_component_specs_rebuild_heads_from_their_recorded_arguments():
    from mtl.spec import build, component_spec, locate_component
    head = mtl.head.SequenceLabel(5, 8, label_field="slot_ids", use_crf=True)
    spec = component_spec(head)
    assert spec == {"_component_": "mtl.components.heads.sequence_label.SequenceLabel", "num_classes": 5,
                    "input_dim": 8, "dropout_prob": 0.1, "label_field": "slot_ids", "use_crf": True,
                    "loss_weight": 1.0}
    assert component_spec(build(spec)) == spec
    assert locate_component(spec["_component_"], mtl.head.Head, "key") is mtl.head.SequenceLabel  # what mtl.load admits
    keyword = component_spec(KeywordHead(3, input_dim=8, label_field="intent_ids"))
    assert keyword == {"_component_": f"{__name__}.KeywordHead", "num_classes": 3, "input_dim": 8,
                       "label_field": "intent_ids"}
