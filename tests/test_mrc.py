"""MRC: sliding windows and answer offsets on constructed contexts (English words, Chinese characters), n-best
merge across windows, SQuAD EM/F1 as the official script computes them, CMRC 2018's character-level EM/F1,
and a tiny end-to-end run through MultiHeadTrainer."""
import json
from pathlib import Path

import pytest
import torch

import mtl
from conftest import SPECIAL as SPECIAL_TOKENS, WORDS, tiny_bert
from mtl.errors import DataError
from mtl.metrics import (cmrc_exact_match, cmrc_f1, cmrc_scores, cmrc_segments, normalize_answer, squad_exact_match,
                         squad_f1, squad_scores)
from mtl.model.decode import merge_task

CONTEXT = " ".join(WORDS[:30])  # 30 distinct in-vocab words: one token each, token i = word i


def word_span(first: int, last: int) -> tuple[int, str]:
    """(answer_start, text) of context words first..last."""
    start = len(" ".join(WORDS[:first])) + (1 if first else 0)
    return start, " ".join(WORDS[first:last + 1])


def squad_file(path: Path, items: list[tuple[str, str, str, int]]) -> Path:
    """A SQuAD v1.1 file, one paragraph per (id, question, context, answer_start/text) item."""
    paragraphs = [{"context": context, "qas": [{"id": qid, "question": question,
                                                "answers": [{"text": text, "answer_start": start}]}]}
                  for qid, question, context, (start, text) in items]
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}))
    return path


def context_tokens(feature) -> list[int]:
    return [i for i, span in enumerate(feature.meta["offsets"]) if span is not None]


def test_windows_step_by_doc_stride_and_cover_the_context(vocab_file, tmp_path):
    path = squad_file(tmp_path / "d.json", [("q", "book a flight", CONTEXT, word_span(12, 15))])
    reader = mtl.reader.MRCReader(vocab_file, max_seqlen=20, doc_stride=4, max_query_len=4).load_data(path)
    assert [f.meta["window"] for f in reader.features] == [0, 1, 2, 3, 4]
    seen = set()
    for index, feature in enumerate(reader.features):
        ids = feature.fields["input_ids"]
        assert len(ids) <= 20 and feature.meta["id"] == "q"
        spans = [feature.meta["offsets"][i] for i in context_tokens(feature)]
        first_word = CONTEXT[:spans[0][0]].count(" ")
        assert first_word == 4 * index  # windows start doc_stride tokens apart (BERT's meaning of doc_stride)
        seen.update(CONTEXT[s:e] for s, e in spans)
    assert seen == set(WORDS[:30])


def test_answer_across_a_window_edge_is_labelled_only_where_it_is_whole(vocab_file, tmp_path):
    """Context tokens 0-13 in window 0, 4-17 in 1, ... The answer (words 12-15) crosses window 0's edge."""
    start, text = word_span(12, 15)
    path = squad_file(tmp_path / "d.json", [("q", "book a flight", CONTEXT, (start, text))])
    reader = mtl.reader.MRCReader(vocab_file, max_seqlen=20, doc_stride=4, max_query_len=4).load_data(path)
    labels = [(f.fields["start_positions"], f.fields["end_positions"]) for f in reader.features]
    assert labels[0] == (0, 0) and labels[4] == (0, 0)  # 0: holds words 12-13 only; 4: starts at word 16
    for feature, (s, e) in zip(reader.features[1:4], labels[1:4]):
        offsets = feature.meta["offsets"]
        assert s > 0 and e - s == 3
        assert CONTEXT[offsets[s][0]:offsets[e][1]] == text  # the round trip through offsets
    assert all(f.fields["input_ids"][0] == reader.tokenizer.cls_token_id for f in reader.features)


@pytest.mark.parametrize("stride,seqlen", [(3, 16), (5, 24), (8, 32), (20, 24)])
def test_every_window_holding_the_answer_decodes_it_exactly(vocab_file, tmp_path, stride, seqlen):
    items = [(f"q{i}", "what is the weather", CONTEXT, word_span(i, i + length))
             for i, length in [(0, 0), (3, 2), (10, 4), (17, 1), (25, 4), (29, 0)]]
    path = squad_file(tmp_path / "d.json", items)
    reader = mtl.reader.MRCReader(vocab_file, max_seqlen=seqlen, doc_stride=stride, max_query_len=6).load_data(path)
    held, starts = {}, {qid: span[0] for qid, _, _, span in items}
    for feature in reader.features:
        s, e = feature.fields["start_positions"], feature.fields["end_positions"]
        gold, start = feature.meta["gold"]["answers"][0], starts[feature.meta["id"]]
        spans = [feature.meta["offsets"][i] for i in context_tokens(feature)]
        whole = spans[0][0] <= start and start + len(gold) <= spans[-1][1]
        assert (s > 0) == whole, (feature.meta["id"], feature.meta["window"])
        if s:
            assert CONTEXT[feature.meta["offsets"][s][0]:feature.meta["offsets"][e][1]] == gold
            held[feature.meta["id"]] = True
    assert set(held) == {qid for qid, *_ in items}  # every answer is whole in some window


def test_query_is_cut_to_max_query_len_and_eval_keeps_all_gold_answers(vocab_file, tmp_path):
    data = {"data": [{"paragraphs": [{"context": "play some music by the beatles", "qas": [
        {"id": "x", "question": "what is the weather in boston today please", "answers": [
            {"text": "the beatles", "answer_start": 19}, {"text": "beatles", "answer_start": 23}]}]}]}]}
    path = tmp_path / "d.json"
    path.write_text(json.dumps(data))
    reader = mtl.reader.MRCReader(vocab_file, max_seqlen=24, max_query_len=3).load_data(path)
    types = reader.features[0].fields["token_type_ids"]
    assert types.count(0) == 3 + 2  # [CLS] 3 query tokens [SEP]
    evaluation = reader.eval_reader(path)
    assert evaluation.features[0].meta["gold"]["answers"] == ["the beatles", "beatles"]
    assert {"start_positions", "end_positions"} <= evaluation.fields


def fake_batch(windows: list[tuple[str, list]], width: int) -> dict:
    metas = [{"id": qid, "offsets": offsets + [None] * (width - len(offsets)), "context": CONTEXT, "window": i,
              "text": "q", "gold": {"answers": [WORDS[3]]}} for i, (qid, offsets) in enumerate(windows)]
    return {"meta": metas, "attention_mask": torch.ones(len(windows), width, dtype=torch.long)}


def word_offsets(first: int, count: int) -> list:
    """[CLS] q [SEP] then `count` context words from word `first`, then [SEP]."""
    spans = []
    for word in range(first, first + count):
        start, text = word_span(word, word)
        spans.append((start, start + len(text)))
    return [None, None, None] + spans + [None]


def test_nbest_merge_picks_the_best_span_over_all_windows():
    head = mtl.head.MRC(8, max_answer_len=3, n_best=5)
    windows = [("a", word_offsets(0, 6)), ("a", word_offsets(4, 6)), ("b", word_offsets(0, 6)),
               ("c", word_offsets(0, 6))]
    batch = fake_batch(windows, 10)
    start, end = torch.full((4, 10), -10.0), torch.full((4, 10), -10.0)
    start[0, 3], end[0, 4] = 2.0, 2.0      # question a, window 0: words 0-1, score 4
    start[1, 4], end[1, 5] = 3.0, 3.0      # question a, window 1: words 5-6, score 6: the best of a
    start[2, 1], end[2, 1] = 50.0, 50.0    # b: a query token is never an answer
    start[2, 3], end[2, 8] = 9.0, 9.0      # b: 6 tokens > max_answer_len
    start[2, 5], end[2, 6] = 1.0, 1.0      # b: words 2-3, the best valid span
    start[3, 7], end[3, 4] = 8.0, 8.0      # c: end before start
    start[3, 5], end[3, 5] = 1.0, 1.0      # c: word 2 alone, the best valid span
    predictions = head.predict({"start_logits": start, "end_logits": end}, batch)
    assert all(0 < len(p) <= 5 for p in predictions)
    assert all(e >= s and e - s < 3 and 3 <= s <= 8 for p in predictions for _, s, e in p)
    decoded = [head.decode(p, None, m) for p, m in zip(predictions, batch["meta"])]
    answers, metas = head.merge(decoded, batch["meta"])
    assert [a["id"] for a in answers] == ["a", "b", "c"] and [m["id"] for m in metas] == ["a", "b", "c"]
    assert answers[0]["answer"] == " ".join(WORDS[5:7]) and answers[0]["score"] == pytest.approx(6.0)
    assert answers[1]["answer"] == " ".join(WORDS[2:4]) and answers[2]["answer"] == WORDS[2]
    assert "offsets" not in metas[0]


def test_max_answer_len_bounds_the_decoded_span():
    head = mtl.head.MRC(8, max_answer_len=2, n_best=20)
    batch = fake_batch([("a", word_offsets(0, 8))], 12)
    start, end = torch.full((1, 12), -5.0), torch.full((1, 12), -5.0)
    start[0, 3], end[0, 10] = 10.0, 10.0  # the 8-word span scores highest but is too long
    (best, *_), = head.predict({"start_logits": start, "end_logits": end}, batch)
    assert best[2] - best[1] + 1 <= 2


@pytest.mark.parametrize("text,normal", [
    ("The Denver Broncos!", "denver broncos"), ("  a   cat,\tan  apple; THE end ", "cat apple end"),
    ("Theatre of the absurd", "theatre of absurd"), ("U.S.-led", "usled"), ("", ""), ("the", "")])
def test_squad_normalisation(text, normal):
    assert normalize_answer(text) == normal


def test_a_predictions_file_is_scored_over_every_question_of_the_squad_file(tmp_path):
    path = squad_file(tmp_path / "eval.json", [(qid, q, c, (c.index(a), a)) for qid, q, c, a in ITEMS])
    scored = mtl.reader.score_squad_predictions({"q1": "rain", "q2": "boston to denver", "q9": "x"}, path)
    assert scored["exact_match"] == pytest.approx(25.0)  # q1 right; q3, q4 unanswered count as wrong
    assert scored["f1"] == pytest.approx(100 * (1 + 0.5) / 4)  # q2: 1 of 3 predicted tokens, the gold's 1
    (tmp_path / "bad.json").write_text('{"data": [{"paragraphs": [{"context": "c", "qas": [{"question": "x"}]}]}]}')
    with pytest.raises(DataError, match=r"bad\.json: data\[0\]\.paragraphs\[0\]\.qas\[0\] has no 'id'"):
        mtl.reader.score_squad_predictions({}, tmp_path / "bad.json")


def test_squad_em_and_f1_take_the_best_gold():
    golds = ["Denver Broncos", "The Broncos", "broncos"]
    assert squad_exact_match("the broncos.", golds) == 1.0
    assert squad_exact_match("Denver", golds) == 0.0
    assert squad_f1("Denver", golds) == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert squad_f1("Denver Broncos team", golds) == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert squad_f1("Carolina", golds) == 0.0 and squad_f1("", golds) == 0.0
    assert squad_f1("the the", ["a"]) == 0.0  # both normalise to nothing: the official script scores 0
    scores = squad_scores(["broncos", "Carolina", "Denver"], [golds, ["Panthers"], golds])
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 0 + 2 / 3) / 3)


def test_cmrc_segments_are_characters_and_latin_runs_without_punctuation():
    assert cmrc_segments("《红楼梦》是 Cao Xueqin 写的，1791年。") == ["红", "楼", "梦", "是", "cao", "xueqin", "写", "的",
                                                                "1791", "年"]
    assert cmrc_segments("  ，。！") == [] and cmrc_segments("") == []


def test_cmrc_em_and_f1_score_characters_best_over_golds():
    golds = ["曹雪芹", "清代曹雪芹"]
    assert cmrc_exact_match("“曹雪芹”。", golds) == 1.0 and cmrc_exact_match("曹雪", golds) == 0.0
    assert cmrc_f1("曹雪", golds) == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))  # 2 of the 3 characters
    assert cmrc_f1("作者曹雪芹", golds) == pytest.approx(2 * (3 / 5) * 1 / (3 / 5 + 1))
    assert cmrc_f1("芹雪曹", ["曹雪芹"]) == pytest.approx(1 / 3)  # a common run, not a bag: one character
    assert squad_f1("作者曹雪芹", golds) == 0.0  # why the option exists: no spaces, one "word"
    assert cmrc_f1("", golds) == 0.0 and cmrc_f1("。", golds) == 0.0
    scores = cmrc_scores(["曹雪芹", "北京"], [golds, ["上海"]])
    assert scores == pytest.approx({"exact_match": 50.0, "f1": 50.0})


def test_the_mrc_metric_option_scores_the_head_and_a_predictions_file(tmp_path):
    decoded, golds = [{"answer": "曹雪"}], [["曹雪芹"]]
    assert mtl.head.MRC(8).metrics(decoded, golds)["f1"] == 0.0
    assert mtl.head.MRC(8, metric="cmrc2018").metrics(decoded, golds)["f1"] == pytest.approx(80.0)
    assert mtl.head.MRC(8, metric="cmrc2018").is_correct({"answer": "曹雪芹。"}, golds[0])
    with pytest.raises(ValueError, match="metric must be one of"):
        mtl.head.MRC(8, metric="bleu")
    context = "红楼梦的作者是曹雪芹。"
    path = squad_file(tmp_path / "zh.json", [("z1", "作者是谁", context, (context.index("曹雪芹"), "曹雪芹"))])
    assert mtl.reader.score_squad_predictions({"z1": "曹雪"}, path, metric="cmrc2018")["f1"] == pytest.approx(80.0)
    with pytest.raises(ValueError, match="metric must be one of"):
        mtl.reader.score_squad_predictions({}, path, metric="bleu")


def test_chinese_windows_map_every_answer_back_to_its_characters(tmp_path):
    context = "北京是中国的首都，上海是中国最大的城市，广州在南方，深圳靠近香港。"
    chars = sorted({c for c in context + "哪里是谁" if c not in "，。"})
    (tmp_path / "vocab.txt").write_text("\n".join(SPECIAL_TOKENS + chars + ["，", "。"]) + "\n", encoding="utf-8")
    answers = ["北京", "中国最大的城市", "广州", "香港"]
    items = [(f"z{i}", "哪里是", context, (context.index(a), a)) for i, a in enumerate(answers)]
    reader = mtl.reader.MRCReader(tmp_path / "vocab.txt", max_seqlen=16, doc_stride=5, max_query_len=4)
    reader.load_data(squad_file(tmp_path / "zh.json", items))
    held = set()
    for feature in reader.features:
        s, e = feature.fields["start_positions"], feature.fields["end_positions"]
        if s:
            offsets = feature.meta["offsets"]
            assert context[offsets[s][0]:offsets[e][1]] == feature.meta["gold"]["answers"][0]
            held.add(feature.meta["id"])
    assert held == {qid for qid, *_ in items} and max(f.meta["window"] for f in reader.features) > 2


ITEMS = [("q1", "what is the weather", "will it rain in boston today", "rain"),
         ("q2", "book a flight to", "book a flight from boston to denver tomorrow", "denver"),
         ("q3", "play some music by", "play some music by the beatles please", "the beatles"),
         ("q4", "set an alarm for", "set an alarm for seven am tomorrow morning", "seven am")]


def tiny_mrc_trainer(vocab_file: Path, folder: Path, num_epochs: float = 3) -> "mtl.MultiHeadTrainer":
    """MRC on ITEMS (written to folder/train.json, also the dev data) over a tiny random BERT, windows of 16
    tokens with stride 4, trained."""
    path = squad_file(folder / "train.json", [(qid, q, c, (c.index(a), a)) for qid, q, c, a in ITEMS])
    reader = mtl.reader.MRCReader(vocab_file, max_seqlen=16, doc_stride=4, max_query_len=5)
    reader.load_data(path, batch_size=2)
    task = mtl.Trainer("mrc", reader=reader, head=mtl.head.MRC(32, 0.0), dev_reader=reader.eval_reader(path))
    trainer = mtl.MultiHeadTrainer([task], backbone=tiny_bert(), lr=3e-3, num_epochs=num_epochs, precision="fp32")
    trainer.train(print_steps=0)
    return trainer


def test_train_evaluate_and_predict_mrc_end_to_end(vocab_file, tmp_path):
    trainer = tiny_mrc_trainer(vocab_file, tmp_path)
    metrics = trainer.evaluate()["mrc"]
    assert {"mrc.exact_match", "mrc.f1", "score"} <= set(metrics)
    assert 0 <= metrics["mrc.exact_match"] <= metrics["mrc.f1"] <= 100
    records = trainer.predict("mrc", [(q, c) for _, q, c, _ in ITEMS] + [{"id": "z", "question": "rain",
                                                                          "context": "will it rain"}])
    assert len(records) == 5 and records[0]["text"] == ITEMS[0][1]
    for record, (_, _, context, _) in zip(records, ITEMS):  # the answer, where it is in the context, its score
        answer = record["mrc"]
        assert context[answer["start"]:answer["end"]] == answer["answer"] and isinstance(answer["score"], float)
    written = mtl.head.MRC.write_predictions(records, tmp_path / "predictions.json")
    answers = json.loads(written.read_text())
    assert list(answers) == ["0", "1", "2", "3", "z"] and answers["z"] in "will it rain"
    dev_answers = mtl.head.MRC.answers_by_id(trainer.predict("mrc", trainer.tasks[0].dev_reader))
    scored = mtl.reader.score_squad_predictions(dev_answers, tmp_path / "train.json")  # the official way
    assert scored == pytest.approx({"exact_match": metrics["mrc.exact_match"], "f1": metrics["mrc.f1"]})
    loaded = mtl.load(trainer.export(tmp_path / "model"), precision="fp32")  # windows merged there too
    reloaded = loaded.predict([(q, c) for _, q, c, _ in ITEMS])
    assert [r["mrc"]["answer"] for r in reloaded] == [r["mrc"]["answer"] for r in records[:4]]


def test_merge_refuses_heads_that_disagree_and_from_texts_says_what_it_takes(vocab_file):
    task = mtl.Trainer("t", head={"mrc": mtl.head.MRC(8), "cls": mtl.head.Classify(2, 8)})
    window = {"candidates": [{"text": "x", "score": 1.0, "start": 0, "end": 1}]}
    records = [{"text": "q", "mrc": window, "cls": {"label": "0"}}] * 2
    metas = [{"id": "a", "offsets": [], "text": "q"}] * 2
    with pytest.raises(ValueError, match="merge features into different numbers of examples"):
        merge_task(task, records, metas)
    reader = mtl.reader.MRCReader(vocab_file, max_seqlen=16, max_query_len=4)
    with pytest.raises(TypeError, match=r"takes \(question, context\) pairs"):
        reader.from_texts(["just a string"])
    with pytest.raises(ValueError, match="max_query_len"):
        mtl.reader.MRCReader(vocab_file, max_seqlen=8, max_query_len=6)
