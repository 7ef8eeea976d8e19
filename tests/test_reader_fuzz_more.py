"""Property tests on the pair, masked-LM and CoNLL readers (the strategies and checks of
test_reader_fuzz.py): random input loads into consistent batches or fails with mtl.DataError, nothing else."""
import json
import tempfile
from pathlib import Path

import torch
from hypothesis import given
from hypothesis import strategies as st

import mtl
from conftest import WORDS
from test_bad_input import check_batches
from test_reader_fuzz import (FUZZ, any_char, check_word_features, is_clean, load_or_data_error, max_seqlen,
                              random_file, tagged, text, word)


# ---- MatchReader ------------------------------------------------------------------------------------------
@FUZZ
@given(rows=st.lists(st.tuples(st.integers(0, 1), text, text, text), min_size=1, max_size=6), length=max_seqlen,
       pairwise=st.booleans(), crlf=st.booleans(), bom=st.booleans(), batch_size=st.integers(1, 4))
def test_match_tsv(vocab_file, rows, length, pairwise, crlf, bom, batch_size):
    newline = "\r\n" if crlf else "\n"
    lines = [f"{a}\t{b}\t{c}" if pairwise else f"{y}\t{a}\t{b}" for y, a, b, c in rows]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.tsv"
        path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + "".join(x + newline for x in lines).encode("utf-8"))
        reader = load_or_data_error(lambda: mtl.reader.MatchReader(
            vocab_file, length, learning_strategy="pairwise" if pairwise else "pointwise").load_data(
            path, num_epochs=1, batch_size=batch_size))
    texts = [t for _, a, b, c in rows for t in ((a, b, c) if pairwise else (a, b))]
    if all(is_clean(t, "\t\n\r") for t in texts) and not (pairwise and texts[:3] == ["text_a", "text_b", "text_b_neg"]):
        assert reader is not None, "clean data must load"
        assert [f.meta["text"] for f in reader.features] == [f"{a}\t{b}" for _, a, b, _ in rows]
        if not pairwise:
            assert [f.fields["label_ids"] for f in reader.features] == [y for y, _, _, _ in rows]
    if reader is not None:
        assert all(len(f.fields["input_ids"]) <= length for f in reader.features)
        check_batches(reader)


@FUZZ
@given(data=random_file, pairwise=st.booleans())
def test_match_random_bytes(vocab_file, data, pairwise):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.tsv"
        path.write_bytes(data)
        reader = load_or_data_error(lambda: mtl.reader.MatchReader(
            vocab_file, 16, learning_strategy="pairwise" if pairwise else "pointwise").load_data(path, num_epochs=1))
    if reader is not None:
        check_batches(reader)


@FUZZ
@given(pairs=st.lists(st.tuples(text, text), min_size=1, max_size=5), length=max_seqlen)
def test_match_from_texts(vocab_file, pairs, length):
    load = lambda: mtl.reader.MatchReader(vocab_file, length, phase="predict").from_texts(pairs, batch_size=2)
    reader = load_or_data_error(load)
    if all(a.strip() and b.strip() for a, b in pairs):
        assert reader is not None and reader.num_examples == len(pairs)
    if reader is not None:
        check_batches(reader)


# ---- MaskLMReader -----------------------------------------------------------------------------------------
def check_mlm(reader) -> None:
    """Labels sit on real (non-special) tokens only; a sequence with any such token has at least one label
    (one of only [UNK]s has none: the head's loss allows that)."""
    special = torch.as_tensor(reader.special_ids)
    for batch in check_batches(reader):
        labels, mask = batch.get("mlm_labels"), batch["attention_mask"].bool()
        if reader.phase == "predict":
            assert labels is None or bool((labels == -100).all())
            continue
        labelled = labels != -100
        assert not bool((labelled & ~mask).any()) and not bool(torch.isin(labels[labelled], special).any())
        real = mask & ~torch.isin(batch["input_ids"], special)
        assert bool((labelled.any(1) | ~real.any(1)).all()), "a sequence with real tokens has no label"


@FUZZ
@given(lines=st.lists(text, min_size=1, max_size=6), length=max_seqlen, crlf=st.booleans(), bom=st.booleans(),
       batch_size=st.integers(1, 4))
def test_mask_lm_text(vocab_file, lines, length, crlf, bom, batch_size):
    newline = "\r\n" if crlf else "\n"
    content = (b"\xef\xbb\xbf" if bom else b"") + "".join(x + newline for x in lines).encode("utf-8")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.txt"
        path.write_bytes(content)
        reader = load_or_data_error(lambda: mtl.reader.MaskLMReader(vocab_file, length).load_data(
            path, num_epochs=1, batch_size=batch_size))
        dev = reader and load_or_data_error(lambda: reader.eval_reader(path))
    pieces = [p for x in lines for p in x.replace("\r", "\n").split("\n")]
    if any(w in WORDS for p in pieces for w in p.split()):  # a known word: at least one sequence
        assert reader is not None and dev is not None, "data with words must load"
    for loaded in (reader, dev):
        if loaded is not None:
            assert all(len(f.fields["input_ids"]) <= length for f in loaded.features)
            check_mlm(loaded)


squad_like = st.recursive(st.none() | st.integers(-2, 3) | text,
                          lambda inner: st.lists(inner, max_size=3) | st.fixed_dictionaries(
                              {}, optional={"data": inner, "paragraphs": inner, "context": inner, "qas": inner}),
                          max_leaves=10)


@FUZZ
@given(root=squad_like, contexts=st.lists(text, max_size=4), garbage=st.sampled_from([b"", b"\r\n", b"}", b"\xff"]))
def test_mask_lm_squad(vocab_file, root, contexts, garbage):
    valid = {"data": [{"title": "t", "paragraphs": [{"context": c, "qas": []} for c in contexts]}]}
    for value in (root, valid):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "squad.json"
            path.write_bytes(json.dumps(value, ensure_ascii=False).encode("utf-8") + garbage)
            reader = load_or_data_error(lambda: mtl.reader.MaskLMReader(vocab_file, 12).load_data(
                path, "squad", num_epochs=1, batch_size=3))
        if value is valid and not garbage.strip() and any(w in WORDS for c in contexts for w in c.split()):
            assert reader is not None, "contexts with words must load"
        if reader is not None:
            check_mlm(reader)


@FUZZ
@given(texts=st.lists(text, min_size=1, max_size=5), length=max_seqlen)
def test_mask_lm_from_texts_never_fails(vocab_file, texts, length):
    reader = mtl.reader.MaskLMReader(vocab_file, length, phase="predict").from_texts(texts, batch_size=2)
    assert reader.num_examples == len(texts)
    check_mlm(reader)


# ---- SequenceLabelReader, CoNLL files (label_map='auto') ---------------------------------------------------
conll_word = st.one_of(word, st.just("-DOCSTART-"), st.text(any_char, min_size=1, max_size=6))


@FUZZ
@given(sentences=st.lists(tagged(st.lists(conll_word, min_size=1, max_size=10)), min_size=1, max_size=4),
       length=max_seqlen, crlf=st.booleans(), docstart=st.booleans(), batch_size=st.integers(1, 3))
def test_conll_file(vocab_file, sentences, length, crlf, docstart, batch_size):
    newline = "\r\n" if crlf else "\n"
    blocks = [newline.join(f"{w} NN {t}" for w, t in zip(words, tags)) for words, tags in sentences]
    content = ("-DOCSTART- -X- O" + newline * 2 if docstart else "") + (newline * 2).join(blocks) + newline
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "train.txt"
        path.write_text(content, encoding="utf-8")
        reader = load_or_data_error(lambda: mtl.reader.SequenceLabelReader(vocab_file, length, "auto").load_data(
            path, "conll", num_epochs=1, batch_size=batch_size))
        dev = reader and load_or_data_error(lambda: reader.eval_reader(path, "conll"))
    if all(w.split() == [w] and w != "-DOCSTART-" for words, _ in sentences for w in words):
        assert reader is not None and dev is not None, "clean data must load, for training and evaluation"
        check_word_features(reader, [w for w, _ in sentences], [t for _, t in sentences])
    for loaded in (reader, dev):
        if loaded is not None:
            check_word_features(loaded)
            check_batches(loaded)


@FUZZ
@given(data=st.one_of(st.binary(max_size=200), st.text(any_char, max_size=200).map(str.encode)))
def test_conll_random_bytes(vocab_file, data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "train.txt"
        path.write_bytes(data)
        reader = load_or_data_error(lambda: mtl.reader.SequenceLabelReader(vocab_file, 16, "auto").load_data(
            path, "conll", num_epochs=1, batch_size=2))
    if reader is not None:
        check_word_features(reader)
        check_batches(reader)
