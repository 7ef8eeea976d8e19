"""Knowledge distillation: each head's teacher signal and student loss, targets computed once and cached by
the teacher's checksum and the data, per-word targets across tokenizers, ensembles, layer-dropped students,
and a whole student run that saves an ordinary model folder and resumes exactly."""
from pathlib import Path

import pytest
import torch

import mtl
from conftest import INTENTS, SLOT_TAGS, TINY_CONFIG, UTTERANCES, joint_heads, tiny_bert, write_intent_slot
from mtl.components.heads.distill import (RELATIONS, Distilling, kl_to_targets, mix_teacher_loss, relation_loss,
                                          soft_targets, token_relations)
from mtl.distill import Teacher, distill_into
from mtl.distill import teacher as teacher_module
from mtl.errors import MtlError


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("distill-data")
    write_intent_slot(root / "train", UTTERANCES * 2)
    write_intent_slot(root / "dev", UTTERANCES)
    return root


def joint_task(vocab: Path, data: Path, max_seqlen: int = 32) -> "mtl.Trainer":
    reader = mtl.reader.IntentSlotReader(vocab, max_seqlen, seed=1).load_data(data / "train", batch_size=8)
    return mtl.Trainer("joint", reader=reader, head=joint_heads(reader), dev_reader=reader.eval_reader(data / "dev"))


@pytest.fixture(scope="module")
def teacher_dir(vocab_file, data, tmp_path_factory) -> Path:
    """A tiny joint intent + slot model trained until it fits the corpus: the teacher."""
    torch.manual_seed(0)
    trainer = mtl.MultiHeadTrainer([joint_task(vocab_file, data)], backbone=tiny_bert(), lr=3e-3, num_epochs=15,
                                   precision="fp32", seed=1)
    trainer.train(print_steps=0)
    return trainer.export(tmp_path_factory.mktemp("teacher") / "model")


def student_trainer(vocab: Path, data: Path, **options) -> "mtl.MultiHeadTrainer":
    torch.manual_seed(3)
    backbone = tiny_bert().keep_layers([1])  # a one-layer student from a two-layer encoder
    options = {"lr": 3e-3, "num_epochs": 3, "precision": "fp32", "seed": 2, **options}
    return mtl.MultiHeadTrainer([joint_task(vocab, data)], backbone=backbone, **options)


# ---- the heads -------------------------------------------------------------------------------------------
def test_classify_soft_loss_is_zero_on_the_teachers_own_logits_and_positive_elsewhere():
    head = mtl.head.Classify(5, 8, 0.0)
    logits = torch.randn(4, 5)
    targets = soft_targets(logits, 2.0)
    assert torch.allclose(targets.sum(-1), torch.ones(4))
    mask = torch.ones(4, dtype=torch.bool)
    assert head.distill_loss({"logits": logits}, {}, targets, mask, 2.0).abs() < 1e-6
    other = torch.randn(4, 5, requires_grad=True)
    loss = head.distill_loss({"logits": other}, {}, targets, mask, 2.0)
    loss.backward()
    assert loss > 0 and other.grad.abs().sum() > 0
    assert head.distill_loss({"logits": other}, {}, targets, torch.zeros(4, dtype=torch.bool), 2.0) == 0


def test_temperature_squared_keeps_the_gradient_scale():
    logits, student = torch.randn(64, 7) * 3, torch.randn(64, 7) * 3
    mask = torch.ones(64, dtype=torch.bool)
    losses = [float(kl_to_targets(soft_targets(logits, t), student, mask, t)) for t in (1.0, 4.0)]
    assert 0.05 < losses[1] / losses[0] < 20  # without T² the T=4 loss would be about 16x smaller


def test_mixing_uses_the_labels_only_where_the_batch_has_them():
    head = mtl.head.Classify(3, 4, 0.0).train()
    head.distilling = Distilling(temperature=1.0, alpha=0.25)
    logits = torch.randn(2, 3)
    targets = (soft_targets(torch.randn(2, 3), 1.0), torch.ones(2, dtype=torch.bool))
    labelled = {"label_ids": torch.tensor([0, 2]), "teacher": {"label_ids": targets}}
    out = mix_teacher_loss(head, {"logits": logits, "loss": torch.tensor(2.0)}, labelled, {})
    assert torch.isclose(out["loss"], 0.25 * out["loss_soft"] + 0.75 * 2.0)
    unlabelled = {"label_ids": torch.tensor([-100, -100]), "teacher": {"label_ids": targets}}
    out = mix_teacher_loss(head, {"logits": logits, "loss": torch.tensor(float("nan"))}, unlabelled, {})
    assert torch.isclose(out["loss"], out["loss_soft"])  # no label: the teacher alone


def test_a_crf_student_matches_its_marginals_to_the_teacher():
    head = mtl.head.SequenceLabel(4, 8, 0.0, use_crf=True)
    logits = torch.randn(2, 6, 4, requires_grad=True)
    starts = torch.tensor([[0, 1, 1, 0, 1, 0], [0, 1, 1, 1, 0, 0]])
    targets = torch.softmax(torch.randn(2, 3, 4), -1)
    everywhere = torch.ones(2, 3, dtype=torch.bool)
    loss = head.distill_loss({"logits": logits}, {"word_start_mask": starts}, targets, everywhere, 1.0)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0 and logits.grad.abs().sum() > 0
    marginals = head.crf.log_marginals(torch.randn(1, 3, 4), torch.ones(1, 3, dtype=torch.bool)).exp()
    assert torch.allclose(marginals.sum(-1), torch.ones(1, 3), atol=1e-5)


# ---- teacher targets ---------------------------------------------------------------------------------------
def test_targets_are_computed_once_and_cached_by_teacher_and_data(teacher_dir, data, tmp_path, monkeypatch):
    teacher = Teacher(teacher_dir, temperature=2.0, cache_dir=tmp_path / "cache", precision="fp32")
    tables = teacher.targets(data / "train", "joint")
    assert set(tables) == {"intent_ids", "slot_ids"}
    assert not tables["intent_ids"].per_word and tables["slot_ids"].per_word
    first_line = tables["slot_ids"].rows(1)
    assert first_line.shape == (len(UTTERANCES[0][0].split()), len(SLOT_TAGS))  # one row per word
    assert abs(float(tables["intent_ids"].rows(1).sum()) - 1) < 1e-5

    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher ran again")
    monkeypatch.setattr(teacher_module, "load", no_teacher)
    again = Teacher(teacher_dir, temperature=2.0, cache_dir=tmp_path / "cache").targets(data / "train", "joint")
    assert (again["slot_ids"].rows(1) == first_line).all()
    with pytest.raises(AssertionError, match="ran again"):  # another temperature is another cache entry
        Teacher(teacher_dir, temperature=1.0, cache_dir=tmp_path / "cache").targets(data / "train", "joint")


def test_an_ensemble_averages_its_teachers(teacher_dir, data, tmp_path):
    one = Teacher(teacher_dir, cache_dir=tmp_path, precision="fp32").targets(data / "dev", "joint")
    two = Teacher([teacher_dir, teacher_dir], cache_dir=tmp_path, precision="fp32").targets(data / "dev", "joint")
    assert (abs(one["intent_ids"].values - two["intent_ids"].values) < 1e-6).all()


def test_word_targets_reach_a_student_whose_tokenizer_splits_words_differently(teacher_dir, data, tmp_path,
                                                                                vocab_file):
    words = [w for w in vocab_file.read_text().splitlines() if w not in ("flights", "boston")]
    other_vocab = tmp_path / "vocab.txt"
    other_vocab.write_text("\n".join(words + ["bos", "##ton"]) + "\n", encoding="utf-8")
    trainer = student_trainer(other_vocab, data)
    distill_into(trainer, Teacher(teacher_dir, cache_dir=tmp_path / "cache", precision="fp32"))
    batch = next(trainer.tasks[0].reader.batches())
    targets, mask = batch["teacher"]["slot_ids"]
    words_per_row = torch.tensor([len(meta["words"]) for meta in batch["meta"]])
    assert torch.equal(mask.sum(1), words_per_row)  # one target per word, not per sub-token
    assert int(batch["word_start_mask"].sum()) == int(words_per_row.sum())


def test_a_student_trains_on_its_teacher_and_saves_an_ordinary_model(teacher_dir, data, tmp_path, vocab_file):
    teacher = mtl.load(teacher_dir, precision="fp32")
    texts = [row[0] for row in UTTERANCES]
    taught = [(r["intent"]["label"], r["slots"]["tags"]) for r in teacher.predict(texts)]
    trainer = student_trainer(vocab_file, data, num_epochs=30, lr=1e-2)
    teacher_only = Teacher(teacher_dir, temperature=1.0, cache_dir=tmp_path / "cache", precision="fp32")
    attached = distill_into(trainer, teacher_only, alpha=1.0)  # no label reaches the student: the teacher alone
    assert attached == {"joint": {"intent_ids": 2 * len(UTTERANCES), "slot_ids": 2 * len(UTTERANCES)}}
    trainer.train(print_steps=0)
    student = mtl.load(trainer.export(tmp_path / "student"), precision="fp32")
    assert student.model.backbone.config.num_hidden_layers == 1
    learnt = [(r["intent"]["label"], r["slots"]["tags"]) for r in student.predict(texts)]
    assert sum(a == b for a, b in zip(learnt, taught)) >= len(texts) - 2


def test_a_distilled_run_resumes_exactly(teacher_dir, data, tmp_path, vocab_file):
    def run(folder: Path, max_steps: int | None, resume: Path | None) -> dict:
        trainer = student_trainer(vocab_file, data, num_epochs=2)
        distill_into(trainer, Teacher(teacher_dir, cache_dir=tmp_path / "cache", precision="fp32"))
        trainer.set_saver(folder, save_steps=2)
        trainer.train(print_steps=0, max_steps=max_steps, resume_from=resume)
        return {k: v.clone() for k, v in trainer.model.state_dict().items()}
    whole = run(tmp_path / "whole", None, None)
    run(tmp_path / "halves", 4, None)
    resumed = run(tmp_path / "halves", None, tmp_path / "halves" / "step-4")
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_a_teacher_for_an_unknown_task_or_label_space_is_refused(teacher_dir, data, tmp_path, vocab_file):
    trainer = student_trainer(vocab_file, data)
    with pytest.raises(MtlError, match="does not have"):
        distill_into(trainer, {"other": Teacher(teacher_dir, cache_dir=tmp_path)})
    with pytest.raises(MtlError, match="does not exist"):
        Teacher(tmp_path / "nope")


def test_keep_layers_saves_and_loads_as_the_smaller_model(tmp_path):
    encoder = mtl.backbone.BERT.from_config(dict(TINY_CONFIG)).keep_layers([1])
    encoder.save(tmp_path)
    again = mtl.backbone.BERT.from_pretrained(tmp_path)
    assert again.config.num_hidden_layers == 1 and len(again.model.encoder.layer) == 1
    batch = {"input_ids": torch.tensor([[2, 7, 8, 3]]), "attention_mask": torch.ones(1, 4, dtype=torch.long),
             "token_type_ids": torch.zeros(1, 4, dtype=torch.long)}
    encoder.eval(), again.eval()
    with torch.no_grad():
        assert torch.allclose(encoder(batch)["sequence_output"], again(batch)["sequence_output"], atol=1e-6)
    with pytest.raises(ValueError, match="increasing indices"):
        mtl.backbone.BERT.from_config(dict(TINY_CONFIG)).keep_layers([1, 0])


# ---- the config and the CLI --------------------------------------------------------------------------------
def test_mtl_distill_trains_a_student_from_a_config(teacher_dir, data, vocab_file, tmp_path, capsys):
    from mtl.cli import main
    from tiny_runs import tiny_config, write_yaml
    distill = {"teacher": str(teacher_dir), "temperature": 2.0, "alpha": 0.7, "cache_dir": str(tmp_path / "cache")}
    config = write_yaml(tmp_path / "student.yaml", tiny_config(vocab_file, data, str(tmp_path / "run"),
                                                               distill=distill))
    assert main(["distill", str(config), "--threads", "1"]) == 0
    assert any((tmp_path / "cache").iterdir())  # the teacher's targets, kept for the next run
    texts = tmp_path / "in.txt"
    texts.write_text("play some jazz\n", encoding="utf-8")
    assert main(["predict", "--model", str(tmp_path / "run" / "best"), "--input", str(texts),
                 "--output", str(tmp_path / "out.jsonl")]) == 0
    assert "intent" in (tmp_path / "out.jsonl").read_text(encoding="utf-8")

    plain = write_yaml(tmp_path / "plain.yaml", tiny_config(vocab_file, data, str(tmp_path / "run2")))
    assert main(["distill", str(plain)]) == 2
    assert "no `distill:` section" in capsys.readouterr().err


def test_a_distill_section_is_checked_before_anything_is_built(vocab_file, data, tmp_path):
    from mtl.config import validate_config
    from mtl.errors import ConfigError
    from tiny_runs import tiny_config
    both = tiny_config(vocab_file, data, distill={"teacher": str(tmp_path), "teachers": {"joint": str(tmp_path)}})
    with pytest.raises(ConfigError, match="exactly one of `teacher`"):
        validate_config(both, tmp_path)
    unknown = tiny_config(vocab_file, data, distill={"teachers": {"nope": str(tmp_path / "missing")}})
    with pytest.raises(ConfigError, match="distill.teachers.nope") as error:
        validate_config(unknown, tmp_path)
    assert "missing" in str(error.value)


def test_a_student_with_other_label_ids_is_refused(teacher_dir, data, tmp_path, vocab_file):
    other = tmp_path / "other"
    for split in ("train", "dev"):  # other intent names, so other ids
        write_intent_slot(other / split, [(t, s, "zz_" + i) for t, s, i in UTTERANCES])
    trainer = student_trainer(vocab_file, other)
    with pytest.raises(MtlError, match="not the teacher's"):
        distill_into(trainer, Teacher(teacher_dir, cache_dir=tmp_path / "cache", precision="fp32"))


def test_unlabelled_text_is_labelled_by_the_teacher_and_trains_the_shared_heads(teacher_dir, data, tmp_path,
                                                                                 vocab_file):
    reader = mtl.reader.IntentSlotReader(vocab_file, 32, seed=1).load_data(data / "train", batch_size=8)
    labelled = mtl.Trainer("joint", reader=reader, head=joint_heads(reader))
    texts = ["book a flight to denver tomorrow", "play some music", "will it rain in boston"] * 4
    extra = mtl.Trainer("extra", reader=reader.from_texts(texts, batch_size=4), reuse_head_with=labelled)
    trainer = mtl.MultiHeadTrainer([labelled, extra], backbone=tiny_bert(), lr=3e-3, num_epochs=2,
                                   precision="fp32", sampling_reference="joint")
    teacher = Teacher(teacher_dir, task="joint", cache_dir=tmp_path, precision="fp32")
    attached = distill_into(trainer, {"joint": teacher, "extra": teacher})
    assert attached["extra"] == {"intent_ids": len(texts), "slot_ids": len(texts)}
    batch = next(extra.reader.batches())
    assert "intent_ids" not in batch and batch["teacher"]["intent_ids"][1].all()  # no label, every target
    result = trainer.train(print_steps=0)
    assert result["steps"] > 0 and all(torch.isfinite(p).all() for p in trainer.model.parameters())


# ---- the hidden-state relation loss ------------------------------------------------------------------------
def test_the_relation_loss_is_zero_on_the_teachers_own_states_and_skips_other_lengths():
    torch.manual_seed(0)
    hidden, mask = torch.randn(2, 5, 8), torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    targets = torch.zeros(2, 16, 1)
    targets[0, :16, 0] = token_relations(hidden[0, :4]).flatten()
    targets[1, :9, 0] = token_relations(hidden[1, :3]).flatten()
    seen = torch.tensor([[True] * 16, [True] * 9 + [False] * 7])
    assert float(relation_loss(hidden, mask, targets, seen)) == pytest.approx(0.0, abs=1e-6)
    assert float(relation_loss(hidden[:, torch.randperm(5)] * 3 + 1, mask, targets, seen)) > 1e-3
    other_length = torch.tensor([[True] * 16, [True] * 4 + [False] * 12])  # the teacher cut row 1 to 2 tokens
    assert float(relation_loss(hidden, mask, targets, other_length)) == pytest.approx(0.0, abs=1e-6)


def test_a_layer_dropped_student_matches_its_teachers_token_relations(teacher_dir, data, tmp_path, vocab_file):
    trainer = student_trainer(vocab_file, data)
    teacher = Teacher(teacher_dir, cache_dir=tmp_path / "cache", precision="fp32")
    assert distill_into(trainer, teacher, hidden_weight=1.0) == {"joint": {"intent_ids": 2 * len(UTTERANCES),
                                                                         "slot_ids": 2 * len(UTTERANCES)}}
    batch = next(trainer.tasks[0].reader.batches())
    targets, mask = batch["teacher"][RELATIONS]
    assert torch.equal(mask.sum(1), batch["attention_mask"].sum(1) ** 2)
    model = trainer.build_forward()
    out = model("joint", batch)
    carriers = [name for name, head_out in out.items() if "loss_hidden" in head_out]
    assert len(carriers) == 1 and float(out[carriers[0]]["loss_hidden"]) > 0
    trainer.train(print_steps=0)
    after = trainer.model("joint", batch)[carriers[0]]["loss_hidden"]  # the model trained in place
    assert float(after) < float(out[carriers[0]]["loss_hidden"])


def test_the_hidden_state_loss_is_refused_where_the_tokenizers_differ(teacher_dir, data, tmp_path, vocab_file):
    words = [w for w in vocab_file.read_text().splitlines() if w not in ("flights", "boston")]
    other_vocab = tmp_path / "vocab.txt"
    other_vocab.write_text("\n".join(words + ["bos", "##ton"]) + "\n", encoding="utf-8")
    trainer = student_trainer(other_vocab, data)
    teacher = Teacher(teacher_dir, cache_dir=tmp_path / "cache", precision="fp32")
    with pytest.raises(MtlError, match="another number of tokens"):
        distill_into(trainer, teacher, hidden_weight=0.5)
    distill_into(trainer, teacher)  # without it, per-word targets still reach this student
