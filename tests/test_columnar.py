"""Columnar features (mtl.components.readers.table): what a reader stores as flat arrays gives back exactly the
features the list-based path made, batches and resume positions are unchanged, and the memory-mapped cache
gives back the same table."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import mtl
from conftest import (UTTERANCES, WORDS, joint_trainer, write_classify_tsv, write_intent_slot,
                      write_sequence_tsv)
from mtl.components.readers.table import FeatureTable

CONLL = "-DOCSTART- -X- O\n\nplay O\njazz B-genre\n\nbook O\na O\nflight B-thing\n\nfly O\n"


def _mrc_file(path: Path) -> Path:
    context = " ".join(WORDS[:30])
    qas = [{"id": f"q{i}", "question": " ".join(WORDS[i:i + 2]),
            "answers": [{"text": WORDS[i + 3], "answer_start": len(" ".join(WORDS[:i + 3])) + 1}]} for i in range(6)]
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": context,
                                                                                          "qas": qas}]}]}))
    return path


def _write_files(tmp: Path) -> None:
    tmp.mkdir(parents=True, exist_ok=True)
    intents = sorted({row[2] for row in UTTERANCES})
    write_classify_tsv(tmp / "cls.tsv", [(intents.index(intent), text) for text, _, intent in UTTERANCES] * 3)
    write_sequence_tsv(tmp / "seq.tsv", [(text, tags) for text, tags, _ in UTTERANCES] * 2)
    write_intent_slot(tmp / "snips", UTTERANCES * 2)
    _mrc_file(tmp / "squad.json")
    texts = [text for text, _, _ in UTTERANCES]
    (tmp / "mlm.txt").write_text("\n".join(texts * 3) + "\n", encoding="utf-8")
    (tmp / "ner.txt").write_text(CONLL, encoding="utf-8")
    pairs = "".join(f"{i % 2}\t{a}\t{b}\n" for i, (a, b) in enumerate(zip(texts, texts[1:] + texts[:1])))
    (tmp / "match.tsv").write_text("label\ttext_a\ttext_b\n" + pairs, encoding="utf-8")
    triples = "".join(f"{a}\t{b}\t{c}\n" for a, b, c in zip(texts, texts[1:], texts[2:]))
    (tmp / "pairwise.tsv").write_text("text_a\ttext_b\ttext_b_neg\n" + triples, encoding="utf-8")


def every_reader(tmp: Path, vocab: Path, **options) -> dict[str, "mtl.reader.Reader"]:
    """One loaded training reader of each kind, over small files written in `tmp`."""
    if not (tmp / "mlm.txt").exists():  # written once: a second call reads the same files (cache hits)
        _write_files(tmp)
    load = {"batch_size": 4, **options}
    reader = mtl.reader
    return {
        "classify": reader.ClassifyReader(vocab, 16, seed=3).load_data(
            tmp / "cls.tsv", **load),
        "match": reader.MatchReader(vocab, 16, seed=3).load_data(tmp / "match.tsv", **load),
        "pairwise": reader.MatchReader(vocab, 16, seed=3, learning_strategy="pairwise").load_data(
            tmp / "pairwise.tsv", **load),
        "sequence_label": reader.SequenceLabelReader(vocab, 16, "auto", seed=3).load_data(
            tmp / "seq.tsv", **load),
        "intent_slot": reader.IntentSlotReader(vocab, 16, seed=3).load_data(
            tmp / "snips", **load),
        "conll": reader.SequenceLabelReader(vocab, 16, "auto", seed=3).load_data(tmp / "ner.txt", "conll", **load),
        "mrc": reader.MRCReader(vocab, 24, doc_stride=6, max_query_len=4, seed=3).load_data(
            tmp / "squad.json", **load),
        "mask_lm": reader.MaskLMReader(vocab, 8, seed=3).load_data(tmp / "mlm.txt", num_epochs=2, **load),
    }


def batch_digest(batch: dict) -> str:
    """Every tensor (name, dtype, shape, values) and the meta of one batch."""
    digest = hashlib.sha256()
    for name in sorted(batch):
        value = batch[name]
        if isinstance(value, torch.Tensor):
            digest.update(f"{name}{value.dtype}{tuple(value.shape)}".encode() + value.numpy().tobytes())
        else:
            digest.update(name.encode() + json.dumps(value, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def epoch_digests(reader, epochs: int = 2) -> list[str]:
    """The digests of the training batches of `epochs` epochs, then of one sharded step and an eval pass."""
    reader.num_epochs, reader.epoch, reader.position = epochs, 0, 0
    out = [batch_digest(batch) for batch in reader.batches()]
    reader.num_epochs, reader.epoch, reader.position = epochs, 0, 1
    for parts in reader.sharded_batches(1, 2, 2):
        out += [batch_digest(part.batch) + str(part.real) for part in parts]
        break
    out += [batch_digest(batch) for batch in reader.iter_once()]
    out += [batch_digest(batch) for batch in reader.shard(1, 3).iter_once()]
    reader.epoch, reader.position = 0, 0
    return out


class FeatureList(list):
    """The list-based path as it was before tables: Feature objects as the reader made them, with the two
    questions batching asks of a table answered from the objects."""

    def lengths(self) -> np.ndarray:
        return np.array([len(f.fields["input_ids"]) for f in self])

    def scalar(self, name: str) -> None:
        return None


def as_list_path(reader, file_format: str | None = None) -> list:
    """Put back the reader's features as the Feature objects its `_featurize` makes (the old storage)."""
    examples = reader._read_examples(reader.input_file, file_format or reader.default_format)
    features = FeatureList(reader._featurize(examples))
    reader._features = features
    return features


@pytest.mark.parametrize("options", [{}, {"max_tokens": 40, "pad_to_multiple_of": 4}, {"group_by_length": False}])
def test_every_reader_gives_the_batches_of_the_list_based_path(tmp_path, vocab_file, options):
    tables = every_reader(tmp_path / "a", vocab_file, **options)
    lists = every_reader(tmp_path / "b", vocab_file, **options)
    for name, reader in tables.items():
        other = lists[name]
        as_list_path(other, "conll" if name == "conll" else None)
        assert isinstance(reader.features, FeatureTable) and isinstance(other.features, FeatureList), name
        assert [(f.fields, f.meta) for f in reader.features] == [(f.fields, f.meta) for f in other.features], name
        assert np.array_equal(reader.features.lengths(), other.features.lengths()), name
        assert epoch_digests(reader) == epoch_digests(other), name  # batches, sharded steps, eval passes
        reader.position = other.position = 3  # a resumed run draws the same next batch
        assert batch_digest(next(reader.batches())) == batch_digest(next(other.batches())), name


def test_training_on_a_table_gives_the_weights_of_the_list_based_path(vocab_file, intent_slot_dir):
    def trained(list_path: bool) -> dict:
        torch.manual_seed(0)
        trainer = joint_trainer(vocab_file, intent_slot_dir, num_epochs=2)
        reader = trainer.tasks[0].reader
        reader.max_tokens = 60  # budgets and length grouping both at work
        if list_path:
            as_list_path(reader)
        trainer.train(print_steps=0)
        return trainer.backbone.state_dict()

    table, listed = trained(False), trained(True)
    assert all(torch.equal(table[name], listed[name]) for name in table)


def test_columns_are_small_integer_arrays_and_derivable_fields_are_not_stored(tmp_path, vocab_file):
    readers = every_reader(tmp_path, vocab_file)
    table = readers["classify"].features
    values, offsets = table.tokens["input_ids"]
    assert values.dtype == np.uint8 and offsets.dtype == np.int64  # a 99-token vocabulary fits in a byte
    assert table.tokens["token_type_ids"][0] == "zeros"  # single texts: all zeros, made on demand
    assert table.scalars["label_ids"].dtype == np.uint8
    assert readers["intent_slot"].features.tokens["slot_ids"][0].dtype == np.int16  # -100 on sub-words
    assert isinstance(readers["mrc"].features.meta, list)  # offset tuples: meta kept as it is, per row
    assert readers["match"].features.tokens["token_type_ids"][0].dtype == np.uint8  # pairs: stored
    assert table.meta[0].dtype == np.uint8  # meta as JSON lines in one byte array


def test_a_shard_and_a_slice_share_the_arrays(tmp_path, vocab_file):
    reader = every_reader(tmp_path, vocab_file)["classify"]
    shard = reader.shard(1, 3)
    assert shard.features.tokens is reader.features.tokens
    assert [f.meta["line"] for f in shard.features] == [f.meta["line"] for f in list(reader.features)[12:24]]
    assert reader.features[-1].meta == list(reader.features)[-1].meta
    with pytest.raises(IndexError):
        reader.features[len(reader.features)]


def test_the_cache_is_memory_mapped_and_gives_the_same_batches(tmp_path, vocab_file, monkeypatch):
    cache = tmp_path / "cache"
    first = every_reader(tmp_path / "a", vocab_file, cache_dir=cache)
    (entry,) = [p.parent for p in cache.glob("ClassifyReader-*/entry.json")]
    assert not list(cache.glob("*.tmp")) and all(p.suffix in (".npy", ".json") for p in entry.iterdir())
    assert not list(cache.glob("MRCReader-*"))  # offset tuples: not cached (as with the JSON cache)
    for name in ("classify", "match", "sequence_label", "intent_slot"):
        monkeypatch.setattr(type(first[name]), "_featurize", lambda self, examples: pytest.fail("tokenized again"))
    again = every_reader(tmp_path / "a", vocab_file, cache_dir=cache)
    monkeypatch.undo()
    assert isinstance(again["classify"].features.tokens["input_ids"][0], np.memmap)
    for name, reader in again.items():
        assert [(f.fields, f.meta) for f in reader.features] == [(f.fields, f.meta) for f in first[name].features]
        assert epoch_digests(reader) == epoch_digests(first[name]), name


def test_a_table_of_many_rows_costs_its_token_data_not_python_objects(vocab_file, tmp_path):
    rows = [(i % 7, " ".join(WORDS[i % 20:i % 20 + 8])) for i in range(3000)]
    reader = mtl.reader.ClassifyReader(vocab_file, 16).load_data(write_classify_tsv(tmp_path / "big.tsv", rows))
    table = reader.features
    stored = sum(a.nbytes for column in table.tokens.values() for a in column if isinstance(a, np.ndarray))
    stored += sum(a.nbytes for a in table.scalars.values()) + sum(a.nbytes for a in table.meta)
    assert stored < 3000 * 160  # ~10 one-byte tokens, 8-byte offsets, a label, ~100 bytes of meta JSON a row


def test_a_field_that_stops_being_integers_is_kept_row_by_row_exactly():
    rows = [mtl.reader.Feature({"input_ids": [1, 2], "weights": [3, 4]}, {"line": 1}),
            mtl.reader.Feature({"input_ids": [5], "weights": [6, 0.5]}, {"line": 2}),  # a float after an int
            mtl.reader.Feature({"input_ids": [7, 8, 9], "weights": [2 ** 70]}, {"line": 3})]  # beyond int64
    table = FeatureTable.build(rows)
    assert [f.fields for f in table] == [f.fields for f in rows]
    assert [type(v) for v in table[1].fields["weights"]] == [int, float]
    assert table.tokens["input_ids"][0].dtype == np.uint8  # the integer field stays packed


def test_a_token_value_beyond_int32_widens_its_column():
    rows = [mtl.reader.Feature({"input_ids": [1, 2]}, {}), mtl.reader.Feature({"input_ids": [2 ** 40, -3]}, {})]
    table = FeatureTable.build(rows)
    assert table.tokens["input_ids"][0].dtype == np.int64
    assert [f.fields for f in table] == [f.fields for f in rows]


@pytest.mark.parametrize("lossy", [{"offsets": (0, 3)}, {"spans": [[0, 1], (2, 3)]}, {"by_id": {1: "a"}},
                                   {"score": float("nan")}, {"score": [float("inf")]}, {"count": np.int64(3)},
                                   {"gold": {"label": True, "nested": [{"deep": (1,)}]}}])
def test_meta_that_json_would_change_is_kept_as_it_is(lossy):
    """Meta JSON gives back exactly is stored as JSON lines; any row it would change (a tuple, a non-str key,
    NaN, a numpy int), at any depth, keeps every row's meta as the object the reader made."""
    exact = {"text": "play jazz", "line": 1, "words": ["play", "jazz"], "gold": {"label": None, "p": 0.5}}
    table = FeatureTable.build([mtl.reader.Feature({"input_ids": [1]}, exact)])
    assert not isinstance(table.meta, list) and table[0].meta == exact
    rows = [mtl.reader.Feature({"input_ids": [1]}, exact), mtl.reader.Feature({"input_ids": [2]}, lossy)]
    table = FeatureTable.build(rows)
    assert isinstance(table.meta, list) and table[1].meta is lossy and table[0].meta == exact
