"""The bad-input corpus (tests/data/bad/MANIFEST.json): every malformed file gives one clear mtl.DataError
naming the file, the line and the fix, or a documented, logged handling. Never a traceback from inside
torch, transformers or json; never a silent wrong result."""
import json
import logging
import re
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch

import mtl

BAD = Path(__file__).parent / "data" / "bad"
MANIFEST = json.loads((BAD / "MANIFEST.json").read_text(encoding="utf-8"))
CASES = MANIFEST["cases"]
READERS = {"classify": mtl.reader.ClassifyReader, "sequence_label": mtl.reader.SequenceLabelReader,
           "intent_slot": mtl.reader.IntentSlotReader, "mrc": mtl.reader.MRCReader, "match": mtl.reader.MatchReader,
           "mask_lm": mtl.reader.MaskLMReader, "conll": mtl.reader.SequenceLabelReader}
FORMATS = {"mrc": "json", "mask_lm": "text", "conll": "conll"}  # the file_format each reader is given


def _path(relative: str | None) -> str | None:
    return None if relative is None else str(BAD / relative)


def build_reader(case: dict, vocab: Path, data: str | None = None):
    """The case's reader, loaded: a training reader, or for phase 'eval' the eval_reader of one trained on
    `train`. Label maps given by path are read by the reader itself (their errors are cases too)."""
    options = case.get("options", {})
    kind, max_seqlen, batch_size = case["reader"], options.get("max_seqlen", 32), options.get("batch_size", 4)
    file_format = options.get("file_format", FORMATS.get(kind, "tsv"))
    reader = _make_reader(kind, vocab, max_seqlen, options)
    data = data or case["data"]
    if case["phase"] == "eval":
        reader.load_data(_path(case["train"]), file_format, num_epochs=1, batch_size=batch_size)
        return reader.eval_reader(_path(data), file_format, batch_size=batch_size)
    reader.load_data(_path(data), file_format, num_epochs=1, batch_size=batch_size)
    if "num_classes" in options:  # the reader/head check a trainer runs when it joins them
        reader.check_num_classes(reader.label_fields[0], options["num_classes"])
    return reader


def _make_reader(kind: str, vocab: Path, max_seqlen: int, options: dict):
    """A fresh reader of `kind` with the case's options."""
    if kind == "classify":
        return READERS[kind](vocab, max_seqlen, label_map=_path(options.get("label_map")))
    if kind == "mrc":  # SQuAD JSON; small windows so a short context already needs several
        return READERS[kind](vocab, max_seqlen, options.get("doc_stride", 8), options.get("max_query_len", 8))
    if kind == "sequence_label":
        return READERS[kind](vocab, max_seqlen, _path(options.get("label_map", "good/slots.json")))
    if kind == "conll":  # label_map 'auto' unless the case gives one
        label_map = options.get("label_map", "auto")
        return READERS[kind](vocab, max_seqlen, label_map if label_map == "auto" else _path(label_map),
                             tag_column=options.get("tag_column", -1))
    if kind == "match":
        return READERS[kind](vocab, max_seqlen, label_map=_path(options.get("label_map")),
                             learning_strategy=options.get("learning_strategy", "pointwise"))
    if kind == "mask_lm":
        return READERS[kind](vocab, max_seqlen)
    return READERS[kind](vocab, max_seqlen, intent_labels=_path(options.get("intent_labels")),
                         slot_labels=_path(options.get("slot_labels")))


def check_batches(reader) -> list[dict]:
    """Collate every batch once and check what any head relies on; returns the batches."""
    batches = list(reader.batches() if reader.phase == "train" else reader.iter_once())
    rows = 2 if getattr(reader, "reads_triples", False) else 1  # pairwise match: a positive and a negative row
    assert sum(len(b["meta"]) for b in batches) == rows * reader.num_examples
    for batch in batches:
        size, width = batch["input_ids"].shape
        assert width <= reader.max_seqlen and len(batch["meta"]) == size
        for name, value in batch.items():
            if isinstance(value, torch.Tensor):
                assert value.dtype == torch.long and value.shape[0] == size, name
                if value.dim() == 2:
                    assert value.shape[1] == width, name
        lengths = batch["attention_mask"].sum(1)
        assert bool((lengths >= 2).all())  # [CLS] ... [SEP]
        if "word_start_mask" in batch:
            starts = batch["word_start_mask"].bool()
            assert not bool((starts & (batch["attention_mask"] == 0)).any())
            for row, meta in enumerate(batch["meta"]):
                kept = [s for s in meta["word_starts"] if s >= 0]
                assert len(meta["word_starts"]) == len(meta["words"])
                assert torch.nonzero(starts[row]).flatten().tolist() == sorted(kept)
            for field in reader.token_label_fields:
                if field in batch:  # label positions: a subset of word starts, the rest ignored
                    labelled = batch[field] != -100
                    assert not bool((labelled & ~starts).any()), field
    return batches


def features_of(reader) -> list:
    return [(f.fields, f.meta.get("gold"), f.meta.get("words"), f.meta.get("text")) for f in reader.features]


def test_the_corpus_is_big_and_every_file_is_a_case():
    assert len(CASES) >= 30
    assert len({c["id"] for c in CASES}) == len(CASES)
    assert {c["reader"] for c in CASES} == set(READERS)
    used = set()
    for case in CASES:
        for key in ("data", "names", "train"):
            if case.get(key):
                used.add(case[key])
        used.update(v for k, v in case.get("options", {}).items() if isinstance(v, str))
        used.update(v for v in case.get("check", {}).values() if isinstance(v, str))
    files = {p.relative_to(BAD).as_posix() for p in BAD.rglob("*") if p.is_file()}
    files -= {"MANIFEST.json", ".gitattributes"}
    files = {f for f in files if not f.startswith("model_folders/")}  # model folders: test_load_safety.py
    orphans = {f for f in files if f not in used and str(Path(f).parent.as_posix()) not in used}
    assert not orphans, f"files no case uses: {sorted(orphans)}"
    assert all((BAD / f).stat().st_size <= 4096 for f in files)  # small, readable files


@pytest.mark.parametrize("case", [c for c in CASES if c["expect"] == "error"], ids=lambda c: c["id"])
def test_bad_input_fails_with_one_clear_error(case, vocab_file):
    with pytest.raises(mtl.MtlError) as caught:
        build_reader(case, vocab_file)
    error, message = caught.value, str(caught.value)
    assert type(error).__name__ == case["error"]
    assert _path(case["names"]) in message, message
    if case["line"] is None:
        assert error.line is None and message.startswith(_path(case["names"]) + ": "), message
    else:
        assert error.line == case["line"] and f"{_path(case['names'])}, line {case['line']}: " in message, message
    for fragment in case["fragments"]:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert re.search(r": .+ \(.+\)$", message, re.S), f"no fix hint in {message!r}"
    # raised by mtl itself, not re-raised out of a library's traceback
    assert traceback.extract_tb(error.__traceback__)[-1].filename.startswith(str(Path(mtl.__file__).parent))
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


@pytest.mark.parametrize("case", [c for c in CASES if c["expect"] == "handled"], ids=lambda c: c["id"])
def test_bad_input_is_handled_as_documented(case, vocab_file, caplog):
    with caplog.at_level(logging.INFO, logger="mtl"):
        reader = build_reader(case, vocab_file)
    for fragment in case["log"]:
        assert fragment in caplog.text, f"{fragment!r} not logged; log: {caplog.text!r}"
    check = case["check"]
    batches = check_batches(reader)
    if "num_examples" in check:
        assert reader.num_examples == check["num_examples"]
    if "batches" in check:
        assert [len(b["meta"]) for b in batches] == check["batches"]
    if "max_len" in check:
        assert max(len(f.fields["input_ids"]) for f in reader.features) == check["max_len"]
    for gold in check.get("gold", []):
        feature = reader.features[gold["index"]]
        assert feature.meta["gold"][gold["field"]] == gold["text"]
        if "id" in gold:
            assert feature.fields[gold["field"]] == gold["id"]
    if "label_names" in check:
        for field, names in check["label_names"].items():
            assert reader.label_names[field] == names
    if "same_as" in check:
        assert features_of(reader) == features_of(build_reader(case, vocab_file, data=check["same_as"]))
    text = json.dumps([f.meta for f in reader.features] + [reader.label_names], ensure_ascii=False)
    assert "\\r" not in text and "\\ufeff" not in text  # CRLF and BOM never leak into texts or labels


def test_unknown_eval_label_counts_as_an_error_in_the_metrics(vocab_file):
    """The handled eval case end to end: the unknown gold label is scored as a miss, not dropped."""
    case = next(c for c in CASES if c["id"] == "classify_unknown_label_eval")
    reader = build_reader(case, vocab_file)
    head = mtl.head.Classify(4, 32, 0.0)
    decoded = [head.decode((2, 0.9), reader.label_names["label_ids"], f.meta) for f in reader.features]  # play_music
    golds = [head.gold(f.meta) for f in reader.features]
    assert golds == ["play_music", "play_jazz"]
    assert head.metrics(decoded, golds)["accuracy"] == pytest.approx(50.0)


def test_bad_arguments_are_named(vocab_file):
    with pytest.raises(ValueError, match="max_seqlen must be an integer >= 3"):
        mtl.reader.ClassifyReader(vocab_file, 1)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        mtl.reader.ClassifyReader(vocab_file, 8).load_data(BAD / "good/classify.tsv", batch_size=0)
    reader = mtl.reader.ClassifyReader(vocab_file, np.int64(8)).load_data(BAD / "good/classify.tsv",
                                                                          batch_size=np.int64(2))
    assert reader.max_seqlen == 8 and reader.steps_per_epoch == 2


def test_label_maps_given_in_python_are_checked_too(vocab_file):
    with pytest.raises(mtl.DataError, match=r"^label_map: id 0 is given to both 'a' and 'b'"):
        mtl.reader.ClassifyReader(vocab_file, 8, label_map={"a": 0, "b": 0})
    with pytest.raises(mtl.DataError, match=r"^label_map: label 'a' appears twice \(items 0 and 2\)"):
        mtl.reader.ClassifyReader(vocab_file, 8, label_map=["a", "b", "a"])
    with pytest.raises(mtl.DataError, match="the id of 'a' is True, not an integer"):
        mtl.reader.ClassifyReader(vocab_file, 8, label_map={"a": True})
