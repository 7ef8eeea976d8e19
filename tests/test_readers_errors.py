"""Malformed data fails with errors naming the file and the line; BOM and CRLF are read transparently."""
import logging

import pytest
import torch

import mtl
from conftest import INTENTS, SLOT_TAGS, UTTERANCES, joint_trainer, write_classify_tsv, write_intent_slot, \
    write_sequence_tsv


def load_joint(vocab_file, folder, **kwargs):
    return mtl.reader.IntentSlotReader(vocab_file, 32, **kwargs).load_data(folder)


# ---- intent/slot folders ------------------------------------------------------------------------------------
def test_token_count_mismatch_names_file_and_line(vocab_file, tmp_path):
    rows = [UTTERANCES[0], ("play some jazz", "O O", "play_music"), UTTERANCES[2]]
    folder = write_intent_slot(tmp_path / "train", rows)
    with pytest.raises(mtl.DataError) as error:
        load_joint(vocab_file, folder)
    message = str(error.value)
    assert str(folder / "seq.out") in message and "line 2" in message
    assert "3 tokens" in message and "2 labels" in message
    assert error.value.line == 2


def test_missing_seq_out_when_slots_are_expected(vocab_file, tmp_path):
    """Without seq.out a training folder is intent-only (test_intent_only.py); a reader told to read slots
    (with_slots=True, or given slot_labels) names the folder and the missing file."""
    folder = write_intent_slot(tmp_path / "train", UTTERANCES)
    (folder / "seq.out").unlink()
    for options in ({"with_slots": True}, {"slot_labels": SLOT_TAGS}):
        with pytest.raises(mtl.DataError) as error:
            load_joint(vocab_file, folder, **options)
        assert str(folder) in str(error.value) and "missing seq.out" in str(error.value)


def test_line_counts_differ(vocab_file, tmp_path):
    folder = write_intent_slot(tmp_path / "train", UTTERANCES[:3])
    (folder / "label").write_text("book_flight\nbook_flight\n", encoding="utf-8")
    with pytest.raises(mtl.DataError) as error:
        load_joint(vocab_file, folder)
    message = str(error.value)
    assert str(folder) in message and "3" in message and "2" in message and "label" in message


def test_empty_utterance_names_its_line(vocab_file, tmp_path):
    folder = write_intent_slot(tmp_path / "train", [UTTERANCES[0], ("", "", "play_music")])
    with pytest.raises(mtl.DataError) as error:
        load_joint(vocab_file, folder)
    assert str(folder / "seq.in") in str(error.value) and "line 2" in str(error.value)


def test_unknown_training_intent_with_a_given_label_map(vocab_file, tmp_path):
    folder = write_intent_slot(tmp_path / "train", [UTTERANCES[0], ("play some jazz", "O O B-genre", "dance")])
    with pytest.raises(mtl.DataError) as error:
        load_joint(vocab_file, folder, intent_labels=INTENTS, slot_labels=SLOT_TAGS)
    assert "'dance'" in str(error.value) and "line 2" in str(error.value)


def test_unknown_eval_slot_tag_is_kept_as_gold_logged_and_skipped_in_loss(vocab_file, intent_slot_dir, tmp_path,
                                                                          caplog):
    reader = load_joint(vocab_file, intent_slot_dir / "train")
    dev = write_intent_slot(tmp_path / "odd_dev", [("play some jazz", "O O B-style", "play_music")])
    with caplog.at_level(logging.WARNING):
        feature = reader.eval_reader(dev).features[0]
    assert "B-style" in caplog.text and str(dev) in caplog.text
    assert feature.meta["gold"]["slot_ids"] == ["O", "O", "B-style"]
    assert feature.fields["slot_ids"][3] == -100  # [CLS] play some jazz: not a loss target


def force_intent(mh, label: str) -> None:
    """Make the intent head predict `label` whatever the input."""
    names = mh.tasks[0].reader.label_names["intent_ids"]
    head = mh.tasks[0].heads["intent"]
    with torch.no_grad():
        head.classifier.weight.zero_()
        head.classifier.bias.fill_(-10.0)
        head.classifier.bias[names.index(label)] = 10.0


def test_unknown_eval_intent_is_kept_as_gold_and_counts_as_an_error(vocab_file, intent_slot_dir, tmp_path):
    mh = joint_trainer(vocab_file, intent_slot_dir)
    force_intent(mh, "play_music")
    dev = write_intent_slot(tmp_path / "odd_dev", [("play some jazz", "O O B-genre", "play_music"),
                                                   ("play some jazz", "O O B-genre", "play_jazz")])
    reader = mh.tasks[0].reader.eval_reader(dev)
    assert reader.features[1].meta["gold"]["intent_ids"] == "play_jazz"
    assert reader.features[1].fields["intent_ids"] == -100
    metrics = mh.evaluate({"joint": reader})["joint"]
    assert metrics["intent.accuracy"] == pytest.approx(50.0)


def test_unknown_eval_intent_is_logged(vocab_file, intent_slot_dir, tmp_path, caplog):
    reader = load_joint(vocab_file, intent_slot_dir / "train")
    dev = write_intent_slot(tmp_path / "odd_dev", [("play some jazz", "O O B-genre", "play_jazz")])
    with caplog.at_level(logging.WARNING):
        reader.eval_reader(dev)
    assert "play_jazz" in caplog.text


# ---- PALM TSV files -----------------------------------------------------------------------------------------
def test_sequence_label_tsv_token_count_mismatch(vocab_file, tmp_path):
    path = tmp_path / "slot.tsv"
    path.write_text("text_a\tlabel\nplay\x02some\x02jazz\tO\x02O\x02B-genre\nplay\x02jazz\tO\n", encoding="utf-8")
    reader = mtl.reader.SequenceLabelReader(vocab_file, 32, SLOT_TAGS)
    with pytest.raises(mtl.DataError) as error:
        reader.load_data(path)
    assert str(path) in str(error.value) and "line 3" in str(error.value)


def test_sequence_label_training_label_missing_from_label_map(vocab_file, tmp_path):
    path = write_sequence_tsv(tmp_path / "slot.tsv", [("play some jazz", "O O B-genre"),
                                                      ("play the beatles", "O B-band I-band")])
    reader = mtl.reader.SequenceLabelReader(vocab_file, 32, SLOT_TAGS)
    with pytest.raises(mtl.DataError) as error:
        reader.load_data(path)
    message = str(error.value)
    assert "'B-band'" in message and str(path) in message and "line 3" in message


def test_sequence_label_reader_requires_a_label_map(vocab_file):
    with pytest.raises(ValueError, match="label_map"):
        mtl.reader.SequenceLabelReader(vocab_file, 32)


def test_unknown_label_in_sequence_label_eval_reader(vocab_file, tmp_path, caplog):
    train = write_sequence_tsv(tmp_path / "train.tsv", [("play some jazz", "O O B-genre")])
    dev = write_sequence_tsv(tmp_path / "dev.tsv", [("play the beatles", "O B-band I-band")])
    reader = mtl.reader.SequenceLabelReader(vocab_file, 32, SLOT_TAGS).load_data(train)
    with caplog.at_level(logging.WARNING):
        feature = reader.eval_reader(dev).features[0]
    assert "B-band" in caplog.text
    assert feature.meta["gold"]["label_ids"] == ["O", "B-band", "I-band"]
    assert feature.fields["label_ids"][1:4] == [0, -100, -100]


def test_invalid_utf8_names_file_and_line(vocab_file, tmp_path):
    path = tmp_path / "cls.tsv"
    path.write_bytes(b"label\ttext_a\n0\tplay some jazz\n1\tbook a fl\xffight\n")
    with pytest.raises(mtl.DataError) as error:
        mtl.reader.ClassifyReader(vocab_file, 32).load_data(path)
    assert str(path) in str(error.value) and "line 3" in str(error.value) and "UTF-8" in str(error.value)


def test_wrong_column_count(vocab_file, tmp_path):
    path = tmp_path / "cls.tsv"
    path.write_text("label\ttext_a\n0\tplay some jazz\n1\tbook\ta flight\n", encoding="utf-8")
    with pytest.raises(mtl.DataError) as error:
        mtl.reader.ClassifyReader(vocab_file, 32).load_data(path)
    message = str(error.value)
    assert str(path) in message and "line 3" in message and "2" in message and "3" in message


def test_non_integer_label_without_label_map(vocab_file, tmp_path):
    path = tmp_path / "cls.tsv"
    path.write_text("label\ttext_a\n0\tplay some jazz\nmusic\tplay the beatles\n", encoding="utf-8")
    with pytest.raises(mtl.DataError) as error:
        mtl.reader.ClassifyReader(vocab_file, 32).load_data(path)
    assert "'music'" in str(error.value) and "line 3" in str(error.value)


def test_empty_file(vocab_file, tmp_path):
    path = tmp_path / "cls.tsv"
    path.write_text("label\ttext_a\n", encoding="utf-8")
    with pytest.raises(mtl.DataError) as error:
        mtl.reader.ClassifyReader(vocab_file, 32).load_data(path)
    assert str(path) in str(error.value)


# ---- BOM and CRLF -------------------------------------------------------------------------------------------
def features_of(reader):
    return [(f.fields, f.meta["gold"], f.meta.get("words"), f.meta.get("text")) for f in reader.features]


def test_bom_and_crlf_in_tsv_are_transparent(vocab_file, tmp_path, classify_rows):
    clean = write_classify_tsv(tmp_path / "clean.tsv", classify_rows)
    dirty = tmp_path / "dirty.tsv"
    dirty.write_bytes(b"\xef\xbb\xbf" + clean.read_bytes().replace(b"\n", b"\r\n"))
    a = mtl.reader.ClassifyReader(vocab_file, 32).load_data(clean)
    b = mtl.reader.ClassifyReader(vocab_file, 32).load_data(dirty)
    assert a.num_examples == b.num_examples == len(classify_rows)  # the BOM'd header is still a header
    assert features_of(a) == features_of(b)


def test_bom_and_crlf_in_intent_slot_folder_are_transparent(vocab_file, tmp_path):
    clean = write_intent_slot(tmp_path / "clean", UTTERANCES)
    dirty = write_intent_slot(tmp_path / "dirty", UTTERANCES)
    for name in ("seq.in", "seq.out", "label"):
        (dirty / name).write_bytes(b"\xef\xbb\xbf" + (clean / name).read_bytes().replace(b"\n", b"\r\n"))
    a, b = load_joint(vocab_file, clean), load_joint(vocab_file, dirty)
    assert a.label_names == b.label_names
    assert "\r" not in "".join(b.label_names["intent_ids"] + b.label_names["slot_ids"])
    assert features_of(a) == features_of(b)
