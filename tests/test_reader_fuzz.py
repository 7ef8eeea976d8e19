"""Property tests on the readers: random text (unicode, emoji, control characters, empty strings, 5,000-char
words, hundreds of tokens) either loads and collates into consistent batches or fails with mtl.DataError —
never anything else. Clean random data must always load, example for example."""
import json
import os
import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import mtl
from conftest import INTENTS, SLOT_TAGS, WORDS
from mtl.components.readers.files import load_label_map
from mtl.text import words_from_token_predictions
from test_bad_input import check_batches

# 50 fixed examples per test by default (fast, reproducible); MTL_FUZZ_EXAMPLES=2000 for a longer random search
FUZZ = settings(max_examples=int(os.environ.get("MTL_FUZZ_EXAMPLES", 50)), deadline=None, database=None,
                derandomize="MTL_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large, HealthCheck.large_base_example])

# ---- strategies -----------------------------------------------------------------------------------------
any_char = st.characters(codec="utf-8")  # every code point but surrogates: control, format, emoji, CJK...
odd_char = st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "So"], codec="utf-8")
emoji = st.sampled_from(["😀", "👍🏽", "🇫🇷", "👨‍👩‍👧", "🤖🤖", "\u200d", "\ufe0f"])
huge = st.builds(lambda c, n: c * n, st.one_of(st.sampled_from("ab€😀"), any_char), st.integers(1000, 5000))
word = st.one_of(st.sampled_from(WORDS), st.sampled_from(WORDS), st.text(any_char, max_size=8),
                 st.text(odd_char, min_size=1, max_size=3), emoji, huge, st.just(""))
sentence = st.one_of(st.lists(word, max_size=12),
                     st.builds(lambda w, n: [w] * n, st.sampled_from(WORDS), st.integers(30, 300)))
text = sentence.map(" ".join) | st.text(any_char, max_size=40)
max_seqlen = st.integers(3, 40)


def is_clean(piece: str, forbidden: str) -> bool:
    return bool(piece.strip()) and not any(c in piece for c in forbidden)


def load_or_data_error(load):
    """The reader `load()` returns, or None when it raised mtl.DataError (anything else fails the test)."""
    try:
        reader = load()
    except mtl.DataError as error:
        assert error.path and str(error).startswith(str(error.path))
        event("DataError: " + re.sub(r"[\d'].*", "", str(error).split(": ", 1)[1])[:30])
        return None
    event("loaded")
    return reader


def check_word_features(reader, sentences: list[list[str]] | None = None, tags: list[list[str]] | None = None,
                        field: str = "label_ids") -> None:
    """Per word: one start (or -1 when dropped), one decoded tag; labels sit exactly on the starts."""
    for index, feature in enumerate(reader.features):
        meta, fields = feature.meta, feature.fields
        length = len(fields["input_ids"])
        assert length <= reader.max_seqlen and len(fields["word_start_mask"]) == length
        if sentences is not None:
            assert meta["words"] == sentences[index]
        starts = meta["word_starts"]
        kept = [s for s in starts if s >= 0]
        assert kept == sorted(set(kept)) and all(0 < s < length - 1 for s in kept)
        assert [i for i, m in enumerate(fields["word_start_mask"]) if m] == kept
        decoded = words_from_token_predictions(starts, ["X"] * len(kept), "O")
        assert len(decoded) == len(meta["words"])
        if tags is not None and reader.phase == "train":
            assert meta["gold"][field] == tags[index]
            names = reader.label_names[field]
            labelled = {i: names[v] for i, v in enumerate(fields[field]) if v != -100}
            assert labelled == {s: t for s, t in zip(starts, tags[index]) if s >= 0}


# ---- ClassifyReader -------------------------------------------------------------------------------------
@FUZZ
@given(rows=st.lists(st.tuples(st.integers(0, 3), text), min_size=1, max_size=8), length=max_seqlen,
       header=st.booleans(), crlf=st.booleans(), bom=st.booleans(), batch_size=st.integers(1, 5))
def test_classify_tsv(vocab_file, rows, length, header, crlf, bom, batch_size):
    newline = "\r\n" if crlf else "\n"
    content = ("label\ttext_a" + newline if header else "") + "".join(f"{y}\t{x}{newline}" for y, x in rows)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.tsv"
        path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + content.encode("utf-8"))
        reader = load_or_data_error(lambda: mtl.reader.ClassifyReader(vocab_file, length).load_data(
            path, num_epochs=1, batch_size=batch_size))
    clean = all(is_clean(x.rstrip("\r"), "\t\n") for _, x in rows)
    if clean:
        assert reader is not None, "clean data must load"
        assert [f.fields["label_ids"] for f in reader.features] == [y for y, _ in rows]
        assert [f.meta["text"] for f in reader.features] == [x.rstrip("\r") for _, x in rows]
    if reader is not None:
        assert all(len(f.fields["input_ids"]) <= length for f in reader.features)
        check_batches(reader)


@FUZZ
@given(texts=st.lists(text, min_size=1, max_size=6), length=max_seqlen)
def test_classify_from_texts_never_fails(vocab_file, texts, length):
    reader = mtl.reader.ClassifyReader(vocab_file, length).from_texts(texts, batch_size=4)
    assert [f.meta["text"] for f in reader.features] == texts
    check_batches(reader)


tsv_like = st.lists(st.tuples(st.one_of(st.integers(-1, 4).map(str), st.text(any_char, max_size=3)), text),
                    max_size=5).map(lambda rows: "".join(f"{y}\t{x}\n" for y, x in rows))
random_file = st.one_of(st.binary(max_size=200), st.text(any_char, max_size=200).map(str.encode),
                        tsv_like.map(str.encode))


@FUZZ
@given(data=random_file)
def test_classify_random_bytes(vocab_file, data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.tsv"
        path.write_bytes(data)
        reader = load_or_data_error(lambda: mtl.reader.ClassifyReader(vocab_file, 16).load_data(path, num_epochs=1))
    if reader is not None:
        check_batches(reader)


# ---- SequenceLabelReader ----------------------------------------------------------------------------------
@st.composite
def tagged(draw, words=sentence):
    tokens = draw(words)
    return tokens, draw(st.lists(st.sampled_from(SLOT_TAGS), min_size=len(tokens), max_size=len(tokens)))


@FUZZ
@given(rows=st.lists(tagged(), min_size=1, max_size=6), length=max_seqlen, crlf=st.booleans(),
       batch_size=st.integers(1, 4))
def test_sequence_label_tsv(vocab_file, rows, length, crlf, batch_size):
    newline = "\r\n" if crlf else "\n"
    content = "text_a\tlabel" + newline + "".join("\x02".join(w) + "\t" + "\x02".join(t) + newline for w, t in rows)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.tsv"
        path.write_text(content, encoding="utf-8")
        reader = load_or_data_error(lambda: mtl.reader.SequenceLabelReader(vocab_file, length, SLOT_TAGS).load_data(
            path, num_epochs=1, batch_size=batch_size))
    clean = all(words and all(is_clean(w, "\t\n\x02") for w in words) for words, _ in rows)
    if clean:
        assert reader is not None, "clean data must load"
        check_word_features(reader, [w for w, _ in rows], [t for _, t in rows])
    if reader is not None:
        check_word_features(reader)
        check_batches(reader)


@FUZZ
@given(texts=st.lists(text, min_size=1, max_size=6), length=max_seqlen)
def test_word_readers_from_texts_never_fail(vocab_file, texts, length):
    for reader in (mtl.reader.SequenceLabelReader(vocab_file, length, SLOT_TAGS),
                   mtl.reader.IntentSlotReader(vocab_file, length, intent_labels=INTENTS, slot_labels=SLOT_TAGS)):
        predict = reader.from_texts(texts, batch_size=3)
        check_word_features(predict, [t.split() for t in texts])
        check_batches(predict)


# ---- IntentSlotReader --------------------------------------------------------------------------------------
@st.composite
def utterance(draw):
    words = " ".join(draw(sentence)).split()  # seq.in is split on whitespace: these are its words
    tags = draw(st.lists(st.sampled_from(SLOT_TAGS), min_size=len(words), max_size=len(words)))
    intent = draw(st.one_of(st.sampled_from(INTENTS), st.text(any_char, max_size=6)))
    return words, tags, intent


@FUZZ
@given(rows=st.lists(utterance(), min_size=1, max_size=5), length=max_seqlen, crlf=st.booleans(),
       batch_size=st.integers(1, 4))
def test_intent_slot_folder(vocab_file, rows, length, crlf, batch_size):
    newline = "\r\n" if crlf else "\n"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder)
        for index, name in enumerate(("seq.in", "seq.out", "label")):
            lines = [" ".join(row[index]) if index < 2 else row[index] for row in rows]
            (path / name).write_text("".join(line + newline for line in lines), encoding="utf-8")
        reader = load_or_data_error(lambda: mtl.reader.IntentSlotReader(vocab_file, length).load_data(
            path, num_epochs=1, batch_size=batch_size))
        dev = reader and load_or_data_error(lambda: reader.eval_reader(path))
    clean = all(words and "\n" not in " ".join(words) and is_clean(intent, "\n") for words, _, intent in rows)
    if clean:
        assert reader is not None and dev is not None, "clean data must load, for training and evaluation"
        check_word_features(reader, [w for w, _, _ in rows], [t for _, t, _ in rows], "slot_ids")
        names = reader.label_names["intent_ids"]
        assert [names[f.fields["intent_ids"]] for f in reader.features] == [i.strip() for _, _, i in rows]
        assert all(-100 not in (f.fields["intent_ids"],) for f in dev.features)  # its own labels: all known
    for loaded in (reader, dev):
        if loaded is not None:
            check_word_features(loaded)
            check_batches(loaded)


@FUZZ
@given(contents=st.tuples(*(st.text(any_char, max_size=60) for _ in range(3))), length=max_seqlen)
def test_intent_slot_random_text(vocab_file, contents, length):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder)
        for name, content in zip(("seq.in", "seq.out", "label"), contents):
            (path / name).write_text(content, encoding="utf-8")
        reader = load_or_data_error(lambda: mtl.reader.IntentSlotReader(vocab_file, length).load_data(
            path, num_epochs=1, batch_size=2))
    if reader is not None:
        check_word_features(reader)
        check_batches(reader)


# ---- label maps -------------------------------------------------------------------------------------------
json_values = st.recursive(st.none() | st.booleans() | st.integers(-3, 6) | st.floats(allow_nan=False) |
                           st.text(any_char, max_size=6),
                           lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner,
                                                                                        max_size=5), max_leaves=12)
label_lists = st.lists(st.sampled_from(SLOT_TAGS + ["", " O", "x"]), max_size=6)
label_dicts = st.dictionaries(st.sampled_from(SLOT_TAGS), st.integers(-1, 6), max_size=6)


@FUZZ
@given(value=st.one_of(json_values, label_lists, label_dicts), as_file=st.booleans(),
       garbage=st.one_of(st.just(b""), st.just(b"\r\n"), st.binary(max_size=8)))
def test_label_maps(value, as_file, garbage):
    if value is None and not as_file:
        assert load_label_map(None) is None
        return
    with tempfile.TemporaryDirectory() as folder:
        source = value  # a str given directly is a path: mostly 'no such file'
        if as_file:
            source = Path(folder) / "labels.json"
            source.write_bytes(json.dumps(value, ensure_ascii=False).encode("utf-8") + garbage)
        try:
            label_map = load_label_map(source)
        except mtl.DataError as error:
            event("DataError: " + re.sub(r"[\d'].*", "", str(error).split(": ", 1)[1])[:30])
            return
    event("loaded")
    assert label_map and all(isinstance(k, str) and k == k.strip() and k for k in label_map)
    assert sorted(label_map.values()) == list(range(len(label_map)))

