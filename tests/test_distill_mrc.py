"""MRC distillation over words: the word units two tokenizers share, windows merged into one distribution
per question, the window-weighted student loss, and a student with another tokenizer and other windows
trained from an MRC teacher's cached targets."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import mtl
from conftest import tiny_bert
from mtl.components.heads.mrc_distill import context_words, covered_words, merge_windows, window_loss
from mtl.distill import Teacher, distill_into
from mtl.distill.targets import example_key

ITEMS = [("q1", "what is the weather", "what is the weather in boston today , rain or sun", "rain"),
         ("q2", "book a flight to", "book a flight from boston to denver tomorrow morning please", "denver"),
         ("q3", "play some music by", "play some music by the beatles please , some jazz", "the beatles"),
         ("q4", "set an alarm for", "set an alarm for seven am tomorrow morning please", "seven am")]


def squad_file(path: Path) -> Path:
    paragraphs = [{"context": c, "qas": [{"id": qid, "question": q, "answers": [{"text": a, "answer_start":
                                                                                 c.index(a)}]}]}
                  for qid, q, c, a in ITEMS]
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}))
    return path


def mrc_task(vocab: Path, data: Path, max_seqlen: int, doc_stride: int) -> "mtl.Trainer":
    reader = mtl.reader.MRCReader(vocab, max_seqlen=max_seqlen, doc_stride=doc_stride, max_query_len=5)
    reader.load_data(data, batch_size=2)
    return mtl.Trainer("mrc", reader=reader, head=mtl.head.MRC(32, 0.0))


@pytest.fixture(scope="module")
def mrc_teacher(vocab_file, tmp_path_factory) -> tuple[Path, Path]:
    """(model folder, SQuAD file): a tiny MRC model over windows of 16 tokens, stride 4, fitted to ITEMS."""
    folder = tmp_path_factory.mktemp("mrc-teacher")
    data = squad_file(folder / "train.json")
    torch.manual_seed(0)
    trainer = mtl.MultiHeadTrainer([mrc_task(vocab_file, data, 16, 4)], backbone=tiny_bert(), lr=3e-3,
                                   num_epochs=20, precision="fp32", seed=1)
    trainer.train(print_steps=0)
    return trainer.export(folder / "model"), data


def test_words_are_the_units_every_tokenizer_starts_a_token_at():
    assert [("flight's"[a:b]) for a, b in context_words("flight's")] == ["flight", "'", "s"]
    assert len(context_words("去北京, 2 days")) == 6  # 去 北 京 , 2 days: CJK characters one by one
    words = context_words("to boston today")
    whole = [None, (0, 2), (3, 6), (6, 9), (10, 15), None]  # "bos" "##ton" split one word in two tokens
    assert covered_words(whole, words) == ([0, 1, 2], [1, 2, 4], [1, 3, 4])
    cut = [None, (3, 6), (6, 9), None]  # a window holding only "boston": the words on its edges are not covered
    assert covered_words(cut, words) == ([1], [1], [2])


def test_windows_merge_into_one_distribution_over_the_questions_words():
    nan = float("nan")
    first = np.array([[1.0, 0.0], [2.0, 3.0], [nan, nan]])
    second = np.array([[nan, nan], [4.0, 1.0], [0.0, 0.0]])
    merged = merge_windows([first, second], temperature=1.0)
    assert np.allclose(merged.sum(0), 1.0)
    logits = np.array([1.0, 3.0, 0.0])  # word 1 averaged over both windows, the others from their one window
    assert np.allclose(merged[:, 0], np.exp(logits) / np.exp(logits).sum())
    uncovered = merge_windows([np.array([[0.0, 0.0], [nan, nan]])], temperature=2.0)
    assert uncovered[1].tolist() == [0.0, 0.0]


def test_the_window_loss_is_zero_on_the_teachers_own_distribution_and_weighted_by_its_mass():
    meta = {"context": "to boston today", "offsets": [None, (0, 2), (3, 9), (10, 15), None]}
    start, end = torch.tensor([[0.0, 1.0, 3.0, -1.0, 0.0]]), torch.tensor([[0.0, -2.0, 0.5, 2.0, 0.0]])
    targets = torch.from_numpy(merge_windows([np.stack([start[0, 1:4].numpy(), end[0, 1:4].numpy()], 1)], 2.0))
    assert float(window_loss(start, end, [meta], targets[None], 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(window_loss(start.flip(-1), end, [meta], targets[None], 2.0)) > 0.01
    far = {"context": meta["context"], "offsets": [None, (0, 2), None]}  # a window on "to" alone
    only_there = torch.zeros(1, 3, 2)
    only_there[0, 2] = 1.0  # the teacher puts all its mass on "today", outside that window
    assert float(window_loss(start[:, :3], end[:, :3], [far], only_there, 2.0)) == 0.0


def test_a_teacher_labels_each_question_once_over_its_words(mrc_teacher, tmp_path):
    folder, data = mrc_teacher
    tables = Teacher(folder, temperature=1.0, cache_dir=tmp_path, precision="fp32").targets(data, "mrc")
    table = tables["start_positions"]
    assert table.per_word and len(table.keys) == len(ITEMS)  # several windows each, one row set per question
    for qid, _, context, answer in ITEMS:
        rows = table.rows(example_key({"id": qid}))
        assert rows.shape == (len(context_words(context)), 2) and np.allclose(rows.sum(0), 1.0, atol=1e-5)
        first_answer_word = len(context_words(context[:context.index(answer)]))
        assert int(rows[:, 0].argmax()) == first_answer_word  # the fitted teacher points at its answer


def test_a_student_with_other_tokens_and_windows_learns_the_answers_from_the_teacher(mrc_teacher, vocab_file,
                                                                                     tmp_path):
    folder, data = mrc_teacher
    words = [w for w in vocab_file.read_text().splitlines() if w not in ("boston", "beatles")][:-2]  # room kept
    other_vocab = tmp_path / "vocab.txt"  # the student splits these words where the teacher does not
    other_vocab.write_text("\n".join(words + ["bos", "##ton", "beat", "##les"]) + "\n", encoding="utf-8")
    torch.manual_seed(3)
    trainer = mtl.MultiHeadTrainer([mrc_task(other_vocab, data, 20, 6)], backbone=tiny_bert().keep_layers([1]),
                                   lr=1e-2, num_epochs=40, precision="fp32", seed=2)
    attached = distill_into(trainer, Teacher(folder, temperature=1.0, cache_dir=tmp_path / "c", precision="fp32"),
                            alpha=1.0)  # the teacher alone: no label reaches the student's loss
    assert attached == {"mrc": {"start_positions": len(ITEMS)}}
    trainer.train(print_steps=0)
    student = mtl.load(trainer.export(tmp_path / "student"), precision="fp32")
    answers = [r["mrc"]["answer"] for r in student.predict([(q, c) for _, q, c, _ in ITEMS])]
    assert sum(a == gold for a, (_, _, _, gold) in zip(answers, ITEMS)) >= 3
