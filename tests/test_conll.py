"""CoNLL column files: parsing, -DOCSTART-, tag_column, errors naming the line, label_map='auto', training."""
from pathlib import Path

import pytest

import mtl
from mtl.errors import DataError

CONLL = """-DOCSTART- -X- -X- O

book VB B-VP O
a DT B-NP O
flight NN I-NP O
to TO B-PP O
new NNP B-NP B-LOC
york NNP I-NP I-LOC

play VB B-VP O
the DT B-NP B-PER
beatles NNP I-NP I-PER
-DOCSTART- -X- -X- O
show VB B-VP O
me PRP B-NP O
boston NNP B-NP B-LOC
"""


def write(tmp_path: Path, text: str, name: str = "train.txt") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_sentences_tags_and_lines(tmp_path):
    sentences = mtl.reader.read_conll(write(tmp_path, CONLL))
    assert [s["words"] for s in sentences] == [["book", "a", "flight", "to", "new", "york"],
                                               ["play", "the", "beatles"], ["show", "me", "boston"]]
    assert sentences[0]["tags"] == ["O", "O", "O", "O", "B-LOC", "I-LOC"]
    assert [s["line"] for s in sentences] == [3, 10, 14]  # a -DOCSTART- line ends a sentence too
    assert sentences[2]["tag_lines"] == [14, 15, 16]


def test_tag_column_picks_another_column(tmp_path):
    sentences = mtl.reader.read_conll(write(tmp_path, CONLL), tag_column=2)
    assert sentences[0]["tags"][:3] == ["B-VP", "B-NP", "I-NP"]
    with pytest.raises(DataError, match=r"line 3: tag_column=0 .*column 0 is the word"):
        mtl.reader.read_conll(write(tmp_path, CONLL), tag_column=0)
    with pytest.raises(DataError, match="tag_column=4 but the lines have 4 columns"):
        mtl.reader.read_conll(write(tmp_path, CONLL), tag_column=4)


@pytest.mark.parametrize("text, line, message", [
    ("a DT O\nb DT O\nc\n", 3, "a word but no tag"),
    ("a DT O\nb DT B-NP O\n", 2, "expected 3 columns like the first line, found 4"),
    ("a DT O\n\nb O\n", 3, "expected 3 columns like the first line, found 2"),
    ("lonely\n", 1, "a word but no tag"),
])
def test_bad_lines_name_the_line(tmp_path, text, line, message):
    path = write(tmp_path, text)
    with pytest.raises(DataError, match=rf"train.txt, line {line}: {message}"):
        mtl.reader.read_conll(path)


@pytest.mark.parametrize("text", ["", "\n\n", "-DOCSTART- -X- -X- O\n\n"])
def test_no_sentences_is_an_error(tmp_path, text):
    with pytest.raises(DataError, match="no sentences"):
        mtl.reader.read_conll(write(tmp_path, text))


def test_crlf_tabs_and_no_final_blank_line(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"a\tDT\tO\r\nboston\tNNP\tB-LOC")
    assert mtl.reader.read_conll(path) == [{"words": ["a", "boston"], "tags": ["O", "B-LOC"], "line": 1,
                                            "tag_lines": [1, 2]}]


def test_label_map_helper_puts_o_first(tmp_path):
    assert mtl.reader.conll_label_map(write(tmp_path, CONLL)) == {"O": 0, "B-LOC": 1, "B-PER": 2, "I-LOC": 3,
                                                                  "I-PER": 4}


def test_reader_auto_label_map_shared_by_eval_readers(tmp_path, vocab_file):
    reader = mtl.reader.SequenceLabelReader(vocab_file, 32, label_map="auto")
    reader.load_data(write(tmp_path, CONLL), file_format="conll", batch_size=2)
    assert reader.label_names["label_ids"] == ["O", "B-LOC", "B-PER", "I-LOC", "I-PER"]
    dev = reader.eval_reader(write(tmp_path, "boston NNP B-NP B-ORG\n", "dev.txt"), "conll")
    assert dev.label_names == reader.label_names  # an unseen dev tag does not grow the map
    assert dev.features[0].meta["gold"]["label_ids"] == ["B-ORG"]
    batch = next(reader.batches())
    assert set(batch) >= {"input_ids", "word_start_mask", "label_ids"}


def test_auto_label_map_needs_training_data_first(tmp_path, vocab_file):
    reader = mtl.reader.SequenceLabelReader(vocab_file, 32, label_map="auto", phase="eval")
    with pytest.raises(ValueError, match="load the training data first"):
        reader.load_data(write(tmp_path, CONLL), file_format="conll")


def test_label_map_still_required_and_unknown_tag_names_its_line(tmp_path, vocab_file):
    with pytest.raises(ValueError, match="needs label_map"):
        mtl.reader.SequenceLabelReader(vocab_file, 32)
    reader = mtl.reader.SequenceLabelReader(vocab_file, 32, label_map=["O", "B-LOC", "I-LOC"])
    with pytest.raises(DataError, match=r"train.txt, line 11: tag 'B-PER' is not in the label map"):
        reader.load_data(write(tmp_path, CONLL), file_format="conll")


def test_unknown_file_format(tmp_path, vocab_file):
    reader = mtl.reader.SequenceLabelReader(vocab_file, 32, label_map="auto")
    with pytest.raises(ValueError, match="'tsv' or 'conll'"):
        reader.load_data(write(tmp_path, CONLL), file_format="json")


def test_ner_trains_and_predicts_spans(tmp_path, vocab_file):
    from conftest import tiny_bert
    reader = mtl.reader.SequenceLabelReader(vocab_file, 32, label_map="auto", tag_column=-1)
    reader.load_data(write(tmp_path, CONLL * 4), file_format="conll", batch_size=4)
    encoder = tiny_bert()
    task = mtl.Trainer("ner", reader=reader, head=mtl.head.SequenceLabel(5, encoder.hidden_size, 0.0),
                       dev_reader=reader.eval_reader(write(tmp_path, CONLL, "dev.txt"), "conll"))
    trainer = mtl.MultiHeadTrainer([task], backbone=encoder, lr=5e-3, num_epochs=20, precision="fp32")
    trainer.train(print_steps=0)
    metrics = trainer.evaluate()["ner"]
    assert metrics["ner.f1"] > 60.0
    record = trainer.predict("ner", ["book a flight to new york"])[0]
    assert record["ner"]["tags"] == ["O", "O", "O", "O", "B-LOC", "I-LOC"]
    assert record["ner"]["spans"] == [{"text": "new york", "type": "LOC", "start": 4, "end": 6,
                                       "char_start": 17, "char_end": 25}]


def test_config_reads_conll_with_auto_labels_for_every_split(tmp_path, vocab_file):
    from mtl.config import build_run, validate_config
    from tiny_runs import tiny_config
    config = tiny_config(vocab_file, tmp_path, save_path=str(tmp_path / "out"))
    config["tasks"] = [{"name": "ner", "file_format": "conll", "batch_size": 4,
                        "reader": {"_component_": "mtl.reader.SequenceLabelReader", "vocab_path": str(vocab_file),
                                   "max_seqlen": 32, "label_map": "auto", "tag_column": 3},
                        "train_data": str(write(tmp_path, CONLL)), "dev_data": str(write(tmp_path, CONLL, "d.txt")),
                        "test_data": str(write(tmp_path, CONLL, "t.txt")),
                        "head": {"_component_": "mtl.head.SequenceLabel", "num_classes": "auto", "input_dim": "auto"}}]
    run = build_run(validate_config(config, tmp_path))
    task = run.trainer.tasks[0]
    assert task.heads["ner"].num_classes == 5 and task.dev_reader.num_examples == 3
    assert run.eval_readers("test")["ner"].features[0].meta["gold"]["label_ids"][4:] == ["B-LOC", "I-LOC"]


CONLL2003 = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "conll2003_en"


@pytest.mark.slow
@pytest.mark.skipif(not CONLL2003.is_dir(), reason="../shared/data/conll2003_en is absent (the real CoNLL-2003 files)")
def test_real_conll2003_counts_and_tag_set():
    counts = {split: len(mtl.reader.read_conll(CONLL2003 / f"{split}.txt")) for split in ("train", "valid", "test")}
    assert counts == {"train": 14041, "valid": 3250, "test": 3453}  # as PROVENANCE.md counts them
    assert list(mtl.reader.conll_label_map(CONLL2003 / "train.txt")) == [
        "O", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-LOC", "I-MISC", "I-ORG", "I-PER"]
