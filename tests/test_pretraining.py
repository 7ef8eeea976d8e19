"""Pretraining with mtl: a WordPiece vocabulary trained from text (CJK characters one token each), whole-word
masking, an MLM run from a config with an encoder built from scratch, and the result exported as a
BERT checkpoint folder that plain transformers and mtl load; the Chinese example's CMRC 2018 splits."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from transformers import AutoModelForMaskedLM, AutoTokenizer

import mtl
from mtl.cli import main
from mtl.components.readers.squad import read_squad
from mtl.components.readers.mask_lm import mask_tokens, word_starts
from mtl.vocabulary import SPECIAL_TOKENS, train_wordpiece

CORPUS = ["我 爱 北京 天安门", "今天 天气 很 好", "booking a flight to boston", "北京 的 天气 很 好",
          "play some music from denver", "我们 今天 去 天安门"]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(CORPUS * 20) + "\n\n", encoding="utf-8")
    return path


def test_a_trained_vocabulary_splits_chinese_into_characters_and_loads_in_readers(corpus, tmp_path):
    tokenizer = train_wordpiece([corpus], tmp_path / "vocab", vocab_size=80, min_frequency=1)
    assert tokenizer.convert_ids_to_tokens(list(range(5))) == SPECIAL_TOKENS
    tokens = tokenizer.tokenize("北京天安门 Booking")
    assert tokens[:5] == ["北", "京", "天", "安", "门"] and tokenizer.convert_tokens_to_string(tokens[5:]) == "booking"
    vocab = (tmp_path / "vocab" / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert len(vocab) == len(tokenizer) == 80 and vocab[:5] == SPECIAL_TOKENS
    assert vocab[-1] == "[unused0]" or len(set(vocab)) == 80  # a small corpus is filled up to the size asked
    reader = mtl.reader.MaskLMReader(tmp_path / "vocab", max_seqlen=16)  # the folder, like a model's
    assert reader.tokenizer("天气")["input_ids"] == [2, *tokenizer.convert_tokens_to_ids(["天", "气"]), 3]
    assert AutoTokenizer.from_pretrained(str(tmp_path / "vocab")).tokenize("很好") == ["很", "好"]
    assert main(["vocab", str(corpus), "--out", str(tmp_path / "cli"), "--vocab-size", "60",
                 "--min-frequency", "1"]) == 0
    assert len((tmp_path / "cli" / "vocab.txt").read_text(encoding="utf-8").splitlines()) == 60


def test_whole_word_masking_chooses_every_token_of_a_word_or_none(corpus, tmp_path):
    train_wordpiece([corpus], tmp_path / "vocab", vocab_size=80, min_frequency=1)
    text = "北京 天安门 今天 天气 很 好 booking flights"
    reader = mtl.reader.MaskLMReader(tmp_path / "vocab", max_seqlen=32, whole_word_mask=True, seed=1)
    reader.load_texts([text] * 200, batch_size=200)
    feature = reader.features[0]
    sizes = [len(reader.tokenizer.tokenize(word)) for word in text.split()]  # 北京: 2 tokens, booking: its pieces
    bounds = np.cumsum([1] + sizes)
    words = [list(range(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]
    assert feature.meta["word_starts"] == [w[0] for w in words]
    batch = next(reader.batches())
    rates = []
    for labels in batch["mlm_labels"]:
        chosen = set(torch.nonzero(labels != -100).flatten().tolist())
        assert chosen and all(set(w) <= chosen or not set(w) & chosen for w in words)
        rates.append(len(chosen) / sum(sizes))
    assert 0.1 < np.mean(rates) < 0.25  # 15% of the tokens, in whole words (at least one word each)


def test_without_word_starts_masking_is_unchanged():
    """The default path draws exactly as before whole-word masking existed (same results for a seed)."""
    ids = np.array([2, 10, 11, 12, 13, 14, 15, 16, 17, 3])
    masked, labels, chosen = mask_tokens(ids, np.random.default_rng([1, 0, 0, 5]), 0.15, 4, np.array([0, 1, 2, 3, 4]),
                                         np.arange(5, 20))
    rng = np.random.default_rng([1, 0, 0, 5])
    count = int(np.floor(0.15 * 8 + rng.random()))
    assert chosen.tolist() == sorted(rng.choice(np.arange(1, 9), size=max(count, 1), replace=False).tolist())
    assert word_starts([(0, 2), (2, 4), (5, 7)]) == [1, 3]


def test_pretraining_from_a_config_exports_a_folder_transformers_loads(corpus, tmp_path):
    vocab = train_wordpiece([corpus], tmp_path / "vocab", vocab_size=80, min_frequency=1)
    size = {"vocab_size": len(vocab), "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 64, "max_position_embeddings": 64}
    config = {
        "backbone": {"_component_": "mtl.backbone.BERT.from_config", "config": size},
        "tasks": [{"name": "mlm", "train_data": str(corpus), "batch_size": 8,
                   "reader": {"_component_": "mtl.reader.MaskLMReader", "vocab_path": str(tmp_path / "vocab"),
                              "max_seqlen": 16, "whole_word_mask": True},
                   "head": {"_component_": "mtl.head.MaskLM", "vocab_size": len(vocab), "hidden_size": 32}}],
        "trainer": {"lr": 5e-3, "num_epochs": 3, "precision": "fp32", "seed": 1},
        "saver": {"save_path": str(tmp_path / "run")},
    }
    (tmp_path / "pretrain.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["train", str(tmp_path / "pretrain.yaml")]) == 0
    assert main(["export", str(tmp_path / "run" / "final"), "--pretrained", str(tmp_path / "zh-bert")]) == 0

    ours = mtl.load(tmp_path / "run" / "final", precision="fp32")
    theirs = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "zh-bert")).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "zh-bert"))
    [record] = ours.predict(["北京 的 [MASK] 气 很 好"])
    encoded = tokenizer("北京 的 [MASK] 气 很 好", return_tensors="pt")
    with torch.no_grad():
        logits = theirs(**encoded).logits[0, record["mlm"]["positions"][0]]
    assert tokenizer.convert_ids_to_tokens(int(logits.argmax())) == record["mlm"]["tokens"][0]
    assert abs(float(logits.softmax(-1).max()) - record["mlm"]["probs"][0]) < 1e-4
    encoder = mtl.backbone.BERT.from_pretrained(tmp_path / "zh-bert")
    head = mtl.head.MaskLM(len(vocab), 32, pretrained=str(tmp_path / "zh-bert"))
    assert torch.equal(encoder.model.embeddings.word_embeddings.weight, theirs.bert.embeddings.word_embeddings.weight)
    assert torch.equal(head.bias, theirs.cls.predictions.bias)
    trained = ours.model.backbone.model
    assert torch.equal(encoder.model.pooler.dense.weight, trained.pooler.dense.weight)  # the pooler is kept


def test_a_pretrained_export_needs_a_masked_lm_head(tmp_path, vocab_file, intent_slot_dir):
    from tiny_runs import tiny_config
    from mtl.config import build_run, validate_config
    run = build_run(validate_config(tiny_config(vocab_file, intent_slot_dir), tmp_path))
    run.trainer.export(tmp_path / "joint")
    assert main(["export", str(tmp_path / "joint"), "--pretrained", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def chinese_example_module(name: str):
    path = Path(__file__).resolve().parents[1] / "examples" / "chinese" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"chinese_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cmrc_training_answers_are_moved_to_the_nearest_place_their_text_is():
    place_answers = chinese_example_module("make_corpus").place_answers
    context = "北京是首都，北京很大。"
    paragraph = {"context": context, "qas": [
        {"id": "a", "answers": [{"text": "北京", "answer_start": 5}]},   # off by one from the second 北京 (6)
        {"id": "b", "answers": [{"text": "首都", "answer_start": 3}]}]}  # right: untouched
    assert place_answers(paragraph) == 1
    assert [qa["answers"][0]["answer_start"] for qa in paragraph["qas"]] == [6, 3]
    with pytest.raises(ValueError, match="question c: the answer '上海' is not in its context"):
        place_answers({"context": context, "qas": [{"id": "c", "answers": [{"text": "上海", "answer_start": 0}]}]})


CMRC2018 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cmrc2018"


@pytest.mark.skipif(not CMRC2018.is_dir(), reason="../shared/data/cmrc2018 is absent (the real CMRC 2018 files)")
def test_the_cmrc_splits_read_as_training_and_evaluation_data(tmp_path):
    counts = chinese_example_module("make_corpus").cmrc_split(CMRC2018.parent, tmp_path)
    assert {name: part["questions"] for name, part in counts.items()} == {"train": 10142, "dev": 1000, "test": 3219}
    assert counts["dev"]["empty_questions_dropped"] == 2  # the trial set's two questions without text
    train = read_squad(str(tmp_path / "cmrc" / "train.json"), "train")  # every label points at its text
    assert len(train) == 10142 and counts["train"]["answer_starts_moved"] > 0
    contexts = {name: {q["context"] for q in read_squad(str(tmp_path / "cmrc" / f"{name}.json"), "eval")}
                for name in ("dev", "test")}
    assert not ({q["context"] for q in train} & contexts["dev"]) and not (contexts["dev"] & contexts["test"])
