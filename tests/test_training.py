"""End to end on tiny data: PALM's script shape, the joint mode, RoBERTa, aux tasks, decay groups, clipping."""
import json
import re

import pytest
import torch

import mtl
from conftest import (INTENTS, SLOT_TAGS, UTTERANCES, joint_trainer, tiny_bert, tiny_roberta, write_classify_tsv,
                      write_intent_slot, write_sequence_tsv)
from mtl.optimizer import decay_groups
from mtl.trainers.sampling import MixRatioSampler, plan_total_steps

LOG_LINE = re.compile(r"global step: (\d+), (\w+): step (\d+)/(\d+) \(epoch (\d+)\), batch loss: ([\d.]+), "
                      r"mean loss of steps (\d+)-\1: ([\d.]+), speed: ([\d.]+) steps/s")


def test_palm_multi_task_script_runs_and_logs(vocab_file, tmp_path, classify_rows, capsys):
    """DESIGN.md's script, line for line, on PALM-format TSV files."""
    train_slot = write_sequence_tsv(tmp_path / "slot.tsv", [(text, tags) for text, tags, _ in UTTERANCES])
    train_intent = write_classify_tsv(tmp_path / "intent.tsv", classify_rows)
    model_dir = tmp_path / "pretrained"
    tiny_bert().save(model_dir)
    label_map = tmp_path / "label_map.json"
    label_map.write_text(json.dumps({tag: i for i, tag in enumerate(SLOT_TAGS)}), encoding="utf-8")
    max_seqlen, batch_size, num_epochs, random_seed, lr = 32, 4, 3, 1, 1e-3
    num_classes, num_classes_intent, input_dim, dropout_prob = len(SLOT_TAGS), len(INTENTS), 32, 0.1

    seq_label_reader = mtl.reader.SequenceLabelReader(vocab_file, max_seqlen, label_map, seed=random_seed)
    cls_reader = mtl.reader.ClassifyReader(vocab_file, max_seqlen, seed=random_seed)
    seq_label_reader.load_data(train_slot, file_format='tsv', num_epochs=None, batch_size=batch_size)
    cls_reader.load_data(train_intent, batch_size=batch_size, num_epochs=None)
    ernie = mtl.backbone.BERT.from_pretrained(model_dir)
    seq_label_reader.register_with(ernie)
    cls_reader.register_with(ernie)
    seq_label_head = mtl.head.SequenceLabel(num_classes, input_dim, dropout_prob)
    cls_head = mtl.head.Classify(num_classes_intent, input_dim, dropout_prob)
    trainer_seq_label = mtl.Trainer("slot", mix_ratio=1.0)
    trainer_cls = mtl.Trainer("intent", mix_ratio=1.0)
    trainer = mtl.MultiHeadTrainer([trainer_seq_label, trainer_cls], precision="fp32")
    loss1 = trainer_cls.build_forward(ernie, cls_head)
    loss2 = trainer_seq_label.build_forward(ernie, seq_label_head)
    loss_var = trainer.build_forward()
    n_steps = seq_label_reader.num_examples * 1.5 * num_epochs
    sched = mtl.lr_sched.TriangularSchedualer(int(0.1 * n_steps), n_steps)
    adam = mtl.optimizer.Adam(loss_var, lr, sched)
    trainer.build_backward(optimizer=adam, weight_decay=0.01)
    trainer.fit_readers_with_mixratio([seq_label_reader, cls_reader], "slot", num_epochs)
    trainer.load_pretrain(model_dir)
    trainer.set_saver(save_path=tmp_path / "outputs", save_steps=300)
    result = trainer.train(print_steps=2)

    assert loss1 is cls_head and loss2 is seq_label_head
    assert trainer_seq_label.budget == trainer_cls.budget == 3 * (12 // 4)
    assert result["steps"] == trainer.global_step == trainer.total_steps
    lines = [LOG_LINE.fullmatch(line) for line in capsys.readouterr().out.splitlines() if "global step" in line]
    assert lines and all(lines)
    steps = [int(m.group(1)) for m in lines]
    assert steps == list(range(2, trainer.total_steps + 1, 2))
    for match in lines:
        task = {"slot": trainer_seq_label, "intent": trainer_cls}[match.group(2)]
        assert int(match.group(3)) <= int(match.group(1))
        assert int(match.group(4)) == task.budget
    assert (tmp_path / "outputs" / "final" / "heads.safetensors").is_file()


def test_load_pretrain_restores_pretrained_weights(vocab_file, intent_slot_dir, tmp_path):
    pretrained = tiny_bert()
    pretrained.save(tmp_path / "pretrained")
    mh = joint_trainer(vocab_file, intent_slot_dir)  # another random init
    mh.build_forward()
    word_embeddings = mh.backbone.word_embeddings
    assert not torch.equal(word_embeddings, pretrained.word_embeddings)
    mh.load_pretrain(tmp_path / "pretrained")
    assert torch.equal(mh.backbone.word_embeddings, pretrained.word_embeddings)


@pytest.fixture
def learned(vocab_file, intent_slot_dir):
    """The joint model after ~150 steps at lr 3e-3: before/after metrics on the training data."""
    mh = joint_trainer(vocab_file, intent_slot_dir, num_epochs=50, lr=3e-3)
    train_eval = {"joint": mh.tasks[0].reader.eval_reader(intent_slot_dir / "train")}
    before = mh.evaluate(train_eval)["joint"]
    mh.train(print_steps=0)
    return mh, before, mh.evaluate(train_eval)["joint"]


def test_joint_mode_learns_the_tiny_data(learned):
    mh, before, after = learned
    assert mh.global_step == 150
    assert before["intent.accuracy"] < 50 and before["slots.f1"] < 30
    assert after["intent.accuracy"] >= 75  # chance is 25 (4 intents)
    assert after["slots.f1"] >= 70
    assert after["frame_accuracy"] >= 50


def test_evaluate_returns_metrics_consistent_with_predictions(learned, intent_slot_dir):
    mh, _, _ = learned
    metrics = mh.evaluate()["joint"]
    for key in ("intent.accuracy", "intent.macro_f1", "slots.f1", "slots.precision", "slots.recall",
                "frame_accuracy", "score"):
        assert 0.0 <= metrics[key] <= 100.0, key
    records = mh.predict("joint", mh.tasks[0].dev_reader)
    intents_right = [r["intent"]["label"] == intent for r, (_, _, intent) in zip(records, UTTERANCES)]
    slots_right = [r["slots"]["tags"] == tags.split() for r, (_, tags, _) in zip(records, UTTERANCES)]
    assert metrics["intent.accuracy"] == pytest.approx(100 * sum(intents_right) / len(UTTERANCES))
    assert metrics["frame_accuracy"] == pytest.approx(
        100 * sum(a and b for a, b in zip(intents_right, slots_right)) / len(UTTERANCES))
    assert metrics["score"] == pytest.approx(
        (metrics["intent.accuracy"] + metrics["slots.f1"] + metrics["frame_accuracy"]) / 3)


def test_predict_decodes_labels_and_spans_and_writes_jsonl(learned, tmp_path):
    mh, _, _ = learned
    texts = ["book a flight from boston to denver", "play some music by the beatles"]
    records = mh.predict("joint", texts, output_file=tmp_path / "out" / "pred.jsonl")
    assert [r["text"] for r in records] == texts
    for record in records:
        assert record["intent"]["label"] in INTENTS
        assert 0.0 < record["intent"]["prob"] <= 1.0
        words = record["text"].split()
        assert len(record["slots"]["tags"]) == len(words)
        for span in record["slots"]["spans"]:
            assert span["text"] == " ".join(words[span["start"]:span["end"]])
            assert record["slots"]["tags"][span["start"]] == "B-" + span["type"]
    written = [json.loads(line) for line in (tmp_path / "out" / "pred.jsonl").read_text(encoding="utf-8").splitlines()]
    assert written == records
    assert records[0]["intent"]["label"] == "book_flight"
    assert {"text": "boston", "type": "from", "start": 4, "end": 5, "char_start": 19, "char_end": 25} \
        in records[0]["slots"]["spans"]


def test_slot_spans_give_character_offsets_into_the_text_as_sent(learned):
    """Extra spaces, tabs and leading blanks stay in the text; a span's characters are found where they are."""
    mh, _, _ = learned
    text = "  book a   flight from\tboston  to denver "
    spans = mh.predict("joint", [text])[0]["slots"]["spans"]
    assert spans, "the model learned slots, so something must be compared"
    for span in spans:
        assert text[span["char_start"]:span["char_end"]] == span["text"]
        assert span["text"].split() == text.split()[span["start"]:span["end"]]


def test_roberta_backbone_with_the_same_readers(vocab_file, intent_slot_dir):
    roberta = tiny_roberta()
    assert roberta.input_fields == ("input_ids", "attention_mask")
    mh = joint_trainer(vocab_file, intent_slot_dir, backbone=roberta, num_epochs=2)
    model = mh.build_forward()
    batch = next(mh.tasks[0].reader.eval_reader(intent_slot_dir / "train", batch_size=24).iter_once())
    model.train()
    before = sum(out["loss"].item() for out in model("joint", batch).values())
    mh.train(print_steps=0)
    after = sum(out["loss"].item() for out in model("joint", batch).values())
    assert mh.global_step == 6 and after < before
    assert set(mh.evaluate()["joint"]) >= {"intent.accuracy", "slots.f1", "frame_accuracy"}
    record = mh.predict("joint", ["play some jazz"])[0]
    assert len(record["slots"]["tags"]) == 3


def test_aux_task_never_holds_training_open(vocab_file, intent_slot_dir, tmp_path, classify_rows):
    main_reader = mtl.reader.IntentSlotReader(vocab_file, 32).load_data(intent_slot_dir / "train", batch_size=8)
    aux_reader = mtl.reader.ClassifyReader(vocab_file, 32).load_data(
        write_classify_tsv(tmp_path / "aux.tsv", classify_rows), batch_size=4)
    main = mtl.Trainer("joint", reader=main_reader, head=mtl.head.Classify(4, 32, 0.0, label_field="intent_ids"))
    aux = mtl.Trainer("aux", reader=aux_reader, head=mtl.head.Classify(4, 32, 0.0), mix_ratio=5.0)
    aux.set_as_aux()
    # equal draw probabilities, but the aux budget is five times the main one
    sampler = MixRatioSampler([1.0, 1.0], seed=2)
    mh = mtl.MultiHeadTrainer([main, aux], backbone=tiny_bert(), num_epochs=2, sampler=sampler, precision="fp32")
    mh.train(print_steps=0)
    assert main.budget == 6 and aux.budget == 30
    assert mh.total_steps == plan_total_steps(MixRatioSampler([1.0, 1.0], seed=2), [6, 30], [False, True])
    assert main.cur_train_step == main.budget  # the run ended the step the main task used its budget
    assert aux.cur_train_step < aux.budget
    assert main.cur_train_step + aux.cur_train_step == mh.global_step


def test_decay_groups_exclude_bias_and_layer_norm(vocab_file, intent_slot_dir):
    mh = joint_trainer(vocab_file, intent_slot_dir)
    model = mh.build_forward()
    decayed, not_decayed = decay_groups(model, 0.05)
    assert decayed["weight_decay"] == 0.05 and not_decayed["weight_decay"] == 0.0
    name_of = {id(p): n for n, p in model.named_parameters()}
    decayed_names = {name_of[id(p)] for p in decayed["params"]}
    plain_names = {name_of[id(p)] for p in not_decayed["params"]}
    assert not decayed_names & plain_names
    assert decayed_names | plain_names == set(name_of.values())
    assert plain_names == {n for n in name_of.values() if n.endswith("bias") or "LayerNorm" in n}
    assert any("LayerNorm.weight" in n for n in plain_names)
    assert {"backbone.model.embeddings.word_embeddings.weight", "heads.joint.intent.classifier.weight",
            "heads.joint.slots.classifier.weight"} <= decayed_names


def test_build_backward_weight_decay_reaches_the_optimizer(vocab_file, intent_slot_dir):
    mh = joint_trainer(vocab_file, intent_slot_dir, lr=None)
    mh.build_backward(mtl.optimizer.Adam(None, 1e-3), weight_decay=0.07)
    mh.train(print_steps=0)
    assert [group["weight_decay"] for group in mh.optimizer.param_groups] == [0.07, 0.0]


def test_the_optimizer_is_the_one_home_of_lr_and_weight_decay(vocab_file, intent_slot_dir, recwarn):
    """The trainer's lr and weight_decay only build the default Adam; next to a given optimizer, a value that
    differs from the optimizer's is ignored, and said so once."""
    default = joint_trainer(vocab_file, intent_slot_dir, lr=2e-3, weight_decay=0.03)
    default.build_backward()
    assert (default.adam.lr, default.adam.weight_decay) == (2e-3, 0.03)
    plain = joint_trainer(vocab_file, intent_slot_dir, lr=None)
    plain.build_backward()
    assert (plain.adam.lr, plain.adam.weight_decay) == (5e-5, 0.01)  # Adam's own defaults
    same = joint_trainer(vocab_file, intent_slot_dir, lr=1e-3)
    same.build_backward(mtl.optimizer.Adam(None, 1e-3))
    assert not recwarn.list
    mh = joint_trainer(vocab_file, intent_slot_dir, lr=3e-3, weight_decay=0.2)
    with pytest.warns(UserWarning) as caught:
        mh.build_backward(mtl.optimizer.Adam(None, 1e-3, weight_decay=0.0))
    assert len(caught) == 1
    assert str(caught[0].message).startswith("MultiHeadTrainer lr=0.003 (the optimizer's: 0.001), "
                                             "weight_decay=0.2 (the optimizer's: 0.0) is not used")
    mh.train(print_steps=0)
    assert mh.optimizer.param_groups[0]["initial_lr"] == 1e-3
    assert [group["weight_decay"] for group in mh.optimizer.param_groups] == [0.0, 0.0]


def one_step_change(vocab_file, intent_slot_dir, max_grad_norm) -> float:
    """Largest parameter change after one step at constant lr 1e-2, no weight decay."""
    torch.manual_seed(0)
    mh = joint_trainer(vocab_file, intent_slot_dir, batch_size=24, lr=None)  # 24 // 24 * 1 epoch = one step
    mh.build_backward(mtl.optimizer.Adam(None, 1e-2, mtl.lr_sched.ConstantScheduler(), weight_decay=0.0,
                                         max_grad_norm=max_grad_norm))
    model = mh.build_forward()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    mh.train(print_steps=0)
    assert mh.global_step == 1
    return max(float((p.detach() - start[n]).abs().max()) for n, p in model.named_parameters())


def test_gradient_clipping_max_grad_norm_honoured(vocab_file, intent_slot_dir):
    # Adam's first step moves each weight by ~lr * g / (|g| + eps): about lr unclipped; clipping the global
    # norm to 1e-16 makes every gradient far below eps, so nothing moves.
    assert one_step_change(vocab_file, intent_slot_dir, None) == pytest.approx(1e-2, rel=0.05)
    assert one_step_change(vocab_file, intent_slot_dir, 1e-16) < 1e-6


def test_two_trained_models_in_one_process_do_not_interfere(vocab_file, intent_slot_dir, tmp_path):
    first = joint_trainer(vocab_file, intent_slot_dir, num_epochs=2)
    first.train(print_steps=0)
    texts = ["play some jazz", "book a flight from boston to denver"]
    alone = first.predict("joint", texts)
    other_data = write_intent_slot(tmp_path / "other" / "train", list(reversed(UTTERANCES)))
    write_intent_slot(tmp_path / "other" / "dev", UTTERANCES[:3])
    second = joint_trainer(vocab_file, other_data.parent, num_epochs=2, lr=5e-3, seed=7)
    second.train(print_steps=0)
    assert first.predict("joint", texts) == alone


def test_eval_steps_keep_the_best_model_in_memory(vocab_file, intent_slot_dir):
    mh = joint_trainer(vocab_file, intent_slot_dir, num_epochs=4)  # 12 steps
    result = mh.train(print_steps=0, eval_steps=4)
    assert [entry["step"] for entry in result["history"]] == [4, 8, 12]
    best = max(entry["score"] for entry in result["history"])
    assert result["best_score"] == best
    mh.load_best()
    assert mh.evaluate()["joint"]["score"] == pytest.approx(best)


def test_eval_steps_with_a_saver_write_best_folder(vocab_file, intent_slot_dir, tmp_path):
    mh = joint_trainer(vocab_file, intent_slot_dir, num_epochs=2)
    mh.set_saver(tmp_path / "out")
    result = mh.train(print_steps=0, eval_steps=3)
    assert (tmp_path / "out" / "best" / "heads.safetensors").is_file()
    mh.load_best()
    assert mh.evaluate()["joint"]["score"] == pytest.approx(result["best_score"])


def test_single_task_trainer_trains_evaluates_predicts(vocab_file, intent_slot_dir):
    reader = mtl.reader.IntentSlotReader(vocab_file, 32).load_data(intent_slot_dir / "train", batch_size=8)
    task = mtl.Trainer("intent", reader=reader, head=mtl.head.Classify(4, 32, 0.0, label_field="intent_ids"),
                       dev_reader=reader.eval_reader(intent_slot_dir / "dev"), num_epochs=2, precision="fp32")
    task.build_forward(tiny_bert())
    assert task.train(print_steps=0)["steps"] == 6
    assert set(task.evaluate()) == {"intent.accuracy", "intent.macro_f1", "score"}
    assert task.predict(["play some jazz"])[0]["intent"]["label"] in INTENTS


def test_palm_single_task_script_takes_epochs_from_the_reader(vocab_file, tmp_path, classify_rows):
    reader = mtl.reader.ClassifyReader(vocab_file, 32, seed=1)
    reader.load_data(write_classify_tsv(tmp_path / "cls.tsv", classify_rows), file_format="tsv", num_epochs=2,
                     batch_size=4)
    ernie = tiny_bert()
    reader.register_with(ernie)
    trainer = mtl.Trainer("cls", precision="fp32")
    loss_var = trainer.build_forward(ernie, mtl.head.Classify(4, 32, 0.1))
    n_steps = reader.num_examples * 2 // 4
    adam = mtl.optimizer.Adam(loss_var, 1e-3, mtl.lr_sched.TriangularSchedualer(int(0.1 * n_steps), n_steps))
    trainer.build_backward(optimizer=adam, weight_decay=0.01)
    trainer.fit_reader(reader)
    trainer.set_saver(save_path=tmp_path / "out", save_steps=100)
    trainer.train(print_steps=0)
    assert trainer.cur_train_step == n_steps


def test_single_task_trainer_accepts_backbone_in_constructor(vocab_file, intent_slot_dir):
    reader = mtl.reader.IntentSlotReader(vocab_file, 32).load_data(intent_slot_dir / "train", batch_size=8)
    task = mtl.Trainer("intent", reader=reader, head=mtl.head.Classify(4, 32, 0.0, label_field="intent_ids"),
                       backbone=tiny_bert(), num_epochs=1, precision="fp32")
    assert task.train(print_steps=0)["steps"] == 3


def test_reader_epochs_fewer_than_training_needs_fail_clearly(vocab_file, intent_slot_dir):
    reader = mtl.reader.IntentSlotReader(vocab_file, 32).load_data(intent_slot_dir / "train", batch_size=8,
                                                                    num_epochs=1)
    task = mtl.Trainer("intent", reader=reader, head=mtl.head.Classify(4, 32, 0.0, label_field="intent_ids"))
    mh = mtl.MultiHeadTrainer([task], backbone=tiny_bert(), num_epochs=3, precision="fp32")
    try:
        mh.train(print_steps=0)
    except mtl.MtlError as error:  # acceptable: a clear error naming the reader's epochs
        assert "num_epochs" in str(error)
    else:  # also acceptable: the trainer's epochs win and the planned steps all run
        assert mh.global_step == mh.total_steps == 9
