"""Head sharing (`Trainer(..., reuse_head_with=other)`): one set of head weights used by two tasks, trained by
both, saved once, tied again on load, export and mtl.load; clear errors when it cannot work."""
import json

import pytest
import torch
from safetensors.torch import load_file

import mtl
from conftest import INTENTS, SLOT_TAGS, UTTERANCES, tiny_bert, write_sequence_tsv
from mtl.config import build_run, validate_config
from mtl.errors import ConfigError, ContractError
from tiny_runs import tiny_config

ROWS = [(intent, text) for text, _, intent in UTTERANCES]


def write_named_tsv(path, rows):
    """`label<TAB>text_a` with label names (read through a label map)."""
    path.write_text("label\ttext_a\n" + "".join(f"{label}\t{text}\n" for label, text in rows), encoding="utf-8")
    return path


def readers(vocab_file, tmp_path, label_map_b=INTENTS):
    a = mtl.reader.ClassifyReader(vocab_file, 32, INTENTS, seed=1).load_data(
        write_named_tsv(tmp_path / "a.tsv", ROWS[:8]), batch_size=4)
    b = mtl.reader.ClassifyReader(vocab_file, 32, label_map_b, seed=2).load_data(
        write_named_tsv(tmp_path / "b.tsv", ROWS[4:]), batch_size=4)
    return a, b


def sharing_trainer(vocab_file, tmp_path, reuse="a", mix_a=1.0, backbone=None, **options):
    ra, rb = readers(vocab_file, tmp_path)
    a = mtl.Trainer("a", reader=ra, head=mtl.head.Classify(len(INTENTS), 32, 0.0), mix_ratio=mix_a,
                    dev_reader=ra.eval_reader(tmp_path / "a.tsv"))
    b = mtl.Trainer("b", reader=rb, reuse_head_with=a if reuse == "object" else reuse,
                    dev_reader=rb.eval_reader(tmp_path / "b.tsv"))
    options = {"lr": 1e-2, "num_epochs": 2, "precision": "fp32", "sampling_reference": "b", **options}
    return mtl.MultiHeadTrainer([a, b], backbone=backbone or tiny_bert(), **options)


@pytest.mark.parametrize("reuse", ["a", "object"])
def test_the_two_tasks_hold_the_same_parameters(vocab_file, tmp_path, reuse):
    trainer = sharing_trainer(vocab_file, tmp_path, reuse)
    model = trainer.build_forward()
    a, b = trainer.tasks
    assert list(b.heads) == ["b"] and b.heads["b"] is a.heads["a"]  # renamed after its task, same module
    assert all(p is q for p, q in zip(b.heads["b"].parameters(), a.heads["a"].parameters()))
    head_params = {id(p) for p in model.heads.parameters()}
    assert len(head_params) == 2  # one weight, one bias: a single copy


def test_a_step_of_b_changes_what_a_predicts(vocab_file, tmp_path):
    backbone = tiny_bert()
    backbone.requires_grad_(False)  # only the shared head can carry B's training over to A
    trainer = sharing_trainer(vocab_file, tmp_path, mix_a=0.0, backbone=backbone)  # A is never drawn
    model = trainer.build_forward()
    batch = trainer.tasks[0].reader.collate(trainer.tasks[0].reader.features)
    model.eval()
    before = model("a", batch)["a"]["logits"].detach().clone()
    result = trainer.train(print_steps=0, max_steps=1)
    assert result["steps"] == 1 and trainer.tasks[0].cur_train_step == 0
    model.eval()
    after = model("a", batch)["a"]["logits"]
    assert not torch.allclose(before, after)


def test_optimizer_holds_each_parameter_once(vocab_file, tmp_path):
    trainer = sharing_trainer(vocab_file, tmp_path)
    trainer.train(print_steps=0, max_steps=1)
    held = [id(p) for group in trainer.optimizer.param_groups for p in group["params"]]
    assert len(held) == len(set(held)) == len({id(p) for p in trainer.model.parameters()})


def test_save_once_then_load_keeps_them_tied(vocab_file, tmp_path):
    trainer = sharing_trainer(vocab_file, tmp_path)
    trainer.train(print_steps=0)
    folder = trainer.save(tmp_path / "ckpt")
    keys = load_file(str(folder / "heads.safetensors"))
    assert sorted(keys) == ["a.a.classifier.bias", "a.a.classifier.weight"]  # the shared head, once
    expected = trainer.predict("b", ["play some jazz", "book a flight to boston"])

    fresh = sharing_trainer(vocab_file, tmp_path)
    fresh.load_checkpoint(folder)
    a, b = fresh.tasks
    assert b.heads["b"] is a.heads["a"]
    assert torch.equal(a.heads["a"].classifier.weight, trainer.tasks[0].heads["a"].classifier.weight)
    assert fresh.predict("b", ["play some jazz", "book a flight to boston"]) == expected


def test_export_and_mtl_load_tie_the_head_again(vocab_file, tmp_path):
    trainer = sharing_trainer(vocab_file, tmp_path)
    trainer.train(print_steps=0)
    folder = trainer.export(tmp_path / "export")
    spec = json.loads((folder / "model.json").read_text())
    assert spec["tasks"][1]["reuse_head_with"] == "a" and spec["tasks"][1]["heads"] == {}
    predictor = mtl.load(folder, device="cpu", precision="fp32")
    heads = {t.name: t.heads for t in predictor.tasks}
    assert heads["b"]["b"] is heads["a"]["a"]
    record = predictor.predict(["play some jazz"])[0]
    assert record["a"] == record["b"] == trainer.predict("b", ["play some jazz"])[0]["b"]


def test_heads_that_do_not_fit_the_other_reader_fail_clearly(vocab_file, tmp_path):
    tags = mtl.reader.SequenceLabelReader(vocab_file, 32, SLOT_TAGS).load_data(
        write_sequence_tsv(tmp_path / "slots.tsv", [(t, s) for t, s, _ in UTTERANCES]))
    _, rb = readers(vocab_file, tmp_path)
    a = mtl.Trainer("slots", reader=tags, head=mtl.head.SequenceLabel(len(SLOT_TAGS), 32))
    b = mtl.Trainer("b", reader=rb, reuse_head_with="slots")
    trainer = mtl.MultiHeadTrainer([a, b], backbone=tiny_bert())
    with pytest.raises(ContractError, match=r"task 'b' reuses the head of task 'slots'.*SequenceLabel needs "
                                            r"\['word_start_mask'\] but ClassifyReader"):
        trainer.build_forward()


def test_label_maps_that_differ_fail_clearly(vocab_file, tmp_path):
    ra, rb = readers(vocab_file, tmp_path, label_map_b=list(reversed(INTENTS)))
    a = mtl.Trainer("a", reader=ra, head=mtl.head.Classify(len(INTENTS), 32))
    b = mtl.Trainer("b", reader=rb, reuse_head_with="a")
    with pytest.raises(ContractError, match="share a head but their readers' label maps for label_ids differ"):
        mtl.MultiHeadTrainer([a, b], backbone=tiny_bert()).build_forward()


def test_unknown_name_circle_and_both_head_and_reuse_are_refused(vocab_file, tmp_path):
    ra, rb = readers(vocab_file, tmp_path)
    head = mtl.head.Classify(len(INTENTS), 32)
    with pytest.raises(ValueError, match=r"task 'b': reuse_head_with='nope' is not a task of this "
                                         r"MultiHeadTrainer; the tasks are \['a', 'b'\]"):
        mtl.MultiHeadTrainer([mtl.Trainer("a", reader=ra, head=head),
                              mtl.Trainer("b", reader=rb, reuse_head_with="nope")])
    outsider = mtl.Trainer("a", reader=ra, head=head)  # a Trainer named like a task, but not that task
    with pytest.raises(ValueError, match="is not a task of this MultiHeadTrainer"):
        mtl.MultiHeadTrainer([mtl.Trainer("a", reader=ra, head=head), mtl.Trainer("b", reuse_head_with=outsider)])
    with pytest.raises(ValueError, match="goes round in a circle"):
        mtl.MultiHeadTrainer([mtl.Trainer("a", reuse_head_with="b"), mtl.Trainer("b", reuse_head_with="a")])
    with pytest.raises(ValueError, match="either `head` or `reuse_head_with`"):
        mtl.Trainer("b", head=head, reuse_head_with="a")


def test_config_reuse_head_with(vocab_file, intent_slot_dir, tmp_path):
    config = tiny_config(vocab_file, intent_slot_dir, save_path=str(tmp_path / "out"))
    second = {**config["tasks"][0], "name": "again", "reuse_head_with": "joint"}
    del second["heads"]
    config["tasks"].append(second)
    config["trainer"]["num_epochs"] = 1
    run = build_run(validate_config(config, tmp_path))
    trainer = run.trainer
    trainer.build_forward()
    joint, again = trainer.tasks
    assert again.heads["intent"] is joint.heads["intent"] and again.heads["slots"] is joint.heads["slots"]
    bad = {**second, "reuse_head_with": "nobody"}
    config["tasks"][1] = bad
    with pytest.raises(ConfigError, match=r"tasks\[1\].reuse_head_with: 'nobody' is not another task"):
        validate_config(config, tmp_path)
    config["tasks"][1] = {**bad, "reuse_head_with": "joint", "heads": config["tasks"][0]["heads"]}
    with pytest.raises(ConfigError, match="exactly one of `head`"):
        validate_config(config, tmp_path)
