"""Label maps built from the data and the data shapes around them (issue 18): the tag-scheme guard for
`label_map="auto"` (swapped columns stop the run), intent-only seq.in/label folders, `label_map="auto"` for
classification and matching, saved label maps taken back (`use_label_names`), and unseen-label warnings that
name their lines."""
import json
import logging

import pytest

import mtl
from conftest import INTENTS, UTTERANCES, tiny_bert, write_intent_slot
from mtl.components.readers.tag_scheme import MAX_TAGS, check_tag_scheme
from mtl.errors import DataError, MtlError

CONLL = "EU NNP B-ORG\nrejects VBZ O\nGerman JJ B-MISC\ncall NN O\n\nPeter NNP B-PER\nBlackburn NNP I-PER\n"


def swapped(text: str) -> str:
    """The same CoNLL file with its first and last columns swapped (`TAG ... word`)."""
    return "".join(" ".join([cols[-1], *cols[1:-1], cols[0]]) + "\n" if (cols := line.split()) else "\n"
                   for line in text.splitlines())


def write(folder, text: str, name: str = "train.txt"):
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def drop_seq_out(folder):
    (folder / "seq.out").unlink()
    return folder


# ---- the tag-scheme guard ---------------------------------------------------------------------------------
def test_swapped_conll_columns_stop_the_run_naming_file_line_column_and_values(tmp_path, vocab_file):
    path = write(tmp_path, swapped(CONLL))
    reader = mtl.reader.SequenceLabelReader(vocab_file, 32, label_map="auto")
    with pytest.raises(DataError) as caught:
        reader.load_data(path, file_format="conll")
    message = str(caught.value)
    for fragment in (f"{path}, line 1:", "tag_column=-1 (the last column)", "fit no tagging scheme",
                     "'EU' (line 1)", "'rejects' (line 2)", "the columns look swapped: the words look like tags",
                     "put the word in the first column", "explicit label_map"):
        assert fragment in message, (fragment, message)


def test_a_wrong_tag_column_is_caught_too(tmp_path, vocab_file):
    reader = mtl.reader.SequenceLabelReader(vocab_file, 32, label_map="auto", tag_column=1)  # the POS column
    with pytest.raises(DataError, match=r"tag_column=1: 4 of 4 distinct tags fit no tagging scheme.*'NNP' \(line 1\)"
                                        r".*look swapped \(or the tag column is the wrong one\)"):
        reader.load_data(write(tmp_path, CONLL), file_format="conll")


def test_swapped_palm_tsv_columns_are_caught(tmp_path, vocab_file):
    rows = ["text_a\tlabel", "O\x02O\x02B-LOC\tfly\x02to\x02boston", "O\x02B-PER\tcall\x02peter"]
    path = write(tmp_path, "\n".join(rows) + "\n", "train.tsv")
    reader = mtl.reader.SequenceLabelReader(vocab_file, 32, label_map="auto")
    with pytest.raises(DataError, match=r"train.tsv, line 2: the label column \(text_a<TAB>label\).*'fly' \(line 2\)"
                                        r".*look swapped: the words look like tags"):
        reader.load_data(path)


def test_swapped_seq_in_and_seq_out_are_caught(tmp_path, vocab_file):
    folder = write_intent_slot(tmp_path / "train", [(tags, text, intent) for text, tags, intent in UTTERANCES])
    with pytest.raises(DataError, match=r"train/seq.out, line 1: seq.out: .* e.g. 'book' \(line 1\).*are seq.in and "
                                        r"seq.out swapped"):
        mtl.reader.IntentSlotReader(vocab_file, 32).load_data(folder)


@pytest.mark.parametrize("tags", [["B-PER", "I-PER", "O"], ["S-LOC", "B-ORG", "E-ORG", "O"],
                                  ["I-PER", "O", "I-LOC"], ["U-LOC", "B-PER", "L-PER"],
                                  ["B-fromloc.city_name", "I-fromloc.city_name", "O"]])
def test_the_usual_schemes_pass(tags):
    check_tag_scheme([{"words": ["w"] * len(tags), "tags": tags, "line": 1}], "f", "column", "fix")


def test_an_explicit_label_map_skips_the_guard(tmp_path, vocab_file):
    """POS tags fit no entity scheme; a user who means them gives the map."""
    reader = mtl.reader.SequenceLabelReader(vocab_file, 32, label_map=["NN", "NNP", "JJ", "VBZ"], tag_column=1)
    assert reader.load_data(write(tmp_path, CONLL), file_format="conll").num_examples == 2


def test_thousands_of_tags_are_refused_even_in_scheme():
    examples = [{"words": ["w"], "tags": [f"B-T{i}"], "line": i + 1} for i in range(MAX_TAGS + 1)]
    with pytest.raises(DataError, match=rf"{MAX_TAGS + 1} distinct tags, more than any tag set has"):
        check_tag_scheme(examples, "f", "column", "fix")


# ---- intent-only folders ------------------------------------------------------------------------------------
def test_a_folder_without_seq_out_is_read_as_intents_only(tmp_path, vocab_file, caplog):
    train = drop_seq_out(write_intent_slot(tmp_path / "train", UTTERANCES * 2))
    dev = write_intent_slot(tmp_path / "dev", UTTERANCES)  # has seq.out: ignored by an intent-only reader
    caplog.set_level(logging.INFO)
    reader = mtl.reader.IntentSlotReader(vocab_file, 32).load_data(train, batch_size=8)
    assert f"{train}: no seq.out: reading intents only" in caplog.text
    assert reader.with_slots is False and reader.label_fields == ("intent_ids",)
    assert reader.label_names == {"intent_ids": INTENTS}
    batch = next(reader.batches())
    assert "intent_ids" in batch and "slot_ids" not in batch
    assert "slot_ids" not in next(reader.eval_reader(dev).iter_once())

    task = mtl.Trainer("intent", reader=reader, dev_reader=reader.eval_reader(dev),
                       head=mtl.head.Classify(len(INTENTS), 32, 0.0, label_field="intent_ids"))
    trainer = mtl.MultiHeadTrainer([task], backbone=tiny_bert(), lr=5e-3, num_epochs=3, precision="fp32")
    trainer.train(print_steps=0)
    assert set(trainer.evaluate()["intent"]) >= {"intent.accuracy", "score"}
    folder = trainer.export(tmp_path / "model")
    spec = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    assert spec["tasks"][0]["reader"]["with_slots"] is False
    record = mtl.load(folder, precision="fp32").predict(["play some jazz"])[0]
    assert set(record) == {"text", "intent"} and record["intent"]["label"] in INTENTS


def test_a_slot_head_on_intent_only_data_is_a_contract_error(tmp_path, vocab_file):
    reader = mtl.reader.IntentSlotReader(vocab_file, 32).load_data(drop_seq_out(write_intent_slot(
        tmp_path / "train", UTTERANCES)))
    task = mtl.Trainer("joint", reader=reader, head={"slots": mtl.head.SequenceLabel(5, 32, 0.0, "slot_ids")})
    with pytest.raises(mtl.ContractError, match="slot_ids"):
        mtl.MultiHeadTrainer([task], backbone=tiny_bert()).build_forward()


# ---- label_map="auto" for classification and matching ------------------------------------------------------
def test_classify_auto_label_map_from_names_and_ids(tmp_path, vocab_file, caplog):
    path = write(tmp_path, "label\ttext_a\nplay\tplay some jazz\nbook\tbook a flight\nplay\tplay music\n", "t.tsv")
    reader = mtl.reader.ClassifyReader(vocab_file, 32, label_map="auto").load_data(path)
    assert reader.label_names == {"label_ids": ["book", "play"]}
    assert [f.fields["label_ids"] for f in reader.features] == [1, 0, 1]
    ids = write(tmp_path, "10\tplay some jazz\n2\tbook a flight\n0\tplay music\n", "ids.tsv")
    assert mtl.reader.ClassifyReader(vocab_file, 32, label_map="auto").load_data(ids).label_names == {
        "label_ids": ["0", "2", "10"]}  # integer labels in numeric order

    caplog.set_level(logging.WARNING)
    dev = reader.eval_reader(write(tmp_path, "play\tplay jazz\nweather\train\nbook\tfly\nweather\tsun\n", "d.tsv"))
    assert dev.label_names == reader.label_names  # shared, not rebuilt from dev
    assert f"2 gold labels not in the training label map (weather), first at {dev.input_file}:2, " \
           f"{dev.input_file}:4;" in caplog.text
    with pytest.raises(ValueError, match="load the training data first"):
        mtl.reader.ClassifyReader(vocab_file, 32, label_map="auto", phase="eval").load_data(path)


def test_classify_auto_refuses_a_text_column_as_labels(tmp_path, vocab_file):
    lines = "".join(f"sentence number {i}\t{i % 3}\n" for i in range(150))  # text<TAB>label: swapped
    with pytest.raises(DataError, match=r"150 distinct labels in 150 examples .* the columns look swapped "
                                        r"\(each line is label<TAB>text_a\)"):
        mtl.reader.ClassifyReader(vocab_file, 32, label_map="auto").load_data(write(tmp_path, lines, "s.tsv"))


def test_classify_auto_labels_are_saved_and_decoded(tmp_path, vocab_file):
    rows = "".join(f"{intent}\t{text}\n" for text, _, intent in UTTERANCES * 2)
    reader = mtl.reader.ClassifyReader(vocab_file, 32, label_map="auto").load_data(write(tmp_path, rows, "t.tsv"))
    task = mtl.Trainer("intent", reader=reader, head=mtl.head.Classify(len(INTENTS), 32, 0.0))
    trainer = mtl.MultiHeadTrainer([task], backbone=tiny_bert(), lr=5e-3, num_epochs=2, precision="fp32")
    trainer.train(print_steps=0)
    folder = trainer.export(tmp_path / "model")
    assert json.loads((folder / "labels.json").read_text(encoding="utf-8")) == {"intent": {"label_ids": INTENTS}}
    assert mtl.load(folder, precision="fp32").predict(["play some jazz"])[0]["intent"]["label"] in INTENTS


def test_match_auto_label_map(tmp_path, vocab_file):
    path = write(tmp_path, "yes\tplay jazz\tplay some jazz\nno\tplay jazz\tbook a flight\n", "m.tsv")
    reader = mtl.reader.MatchReader(vocab_file, 32, label_map="auto").load_data(path)
    assert reader.label_names == {"label_ids": ["no", "yes"]}
    with pytest.raises(ValueError, match="pairwise training data has none"):
        mtl.reader.MatchReader(vocab_file, 32, label_map="auto", learning_strategy="pairwise")


# ---- saved label maps taken back -------------------------------------------------------------------------
def test_use_label_names_takes_a_checkpoints_labels(vocab_file):
    reader = mtl.reader.IntentSlotReader(vocab_file, 32).use_label_names({"intent_ids": ["a", "b"]})
    assert reader.label_names == {"intent_ids": ["a", "b"]} and reader.with_slots is False
    reader = mtl.reader.SequenceLabelReader(vocab_file, 32, label_map="auto").use_label_names(
        {"label_ids": ["O", "B-X"]})
    assert reader.label_names == {"label_ids": ["O", "B-X"]}
    with pytest.raises(MtlError, match="ClassifyReader has no label field 'slot_ids'"):
        mtl.reader.ClassifyReader(vocab_file, 32).use_label_names({"slot_ids": ["O"]})


def test_unseen_eval_labels_name_their_first_lines(tmp_path, vocab_file, caplog):
    train = write_intent_slot(tmp_path / "train", UTTERANCES)
    rows = [UTTERANCES[0], ("play some jazz", "O O B-style", "play_jazz")] * 4
    dev = write_intent_slot(tmp_path / "dev", rows)
    caplog.set_level(logging.WARNING)
    mtl.reader.IntentSlotReader(vocab_file, 32).load_data(train).eval_reader(dev)
    assert f"4 gold intents not in the training label map (play_jazz), first at {dev / 'label'}:2, " \
           f"{dev / 'label'}:4, {dev / 'label'}:6, {dev / 'label'}:8;" in caplog.text
    assert f"4 gold tags not in the training label map (B-style), first at {dev / 'seq.out'}:2," in caplog.text
