"""docs/custom_heads.md's custom reader runs as written (JSON lines, `label_map="auto"`), and `label_map="auto"`
is built from whatever examples an overridden `_read_examples` returns."""
import json
import re
import shutil
from pathlib import Path

import pytest

import mtl
from conftest import UTTERANCES, tiny_bert
from mtl.errors import DataError

DOC = Path(__file__).resolve().parents[1] / "docs" / "custom_heads.md"


def doc_blocks(after: str) -> list[str]:
    """The ```python blocks of the doc's section that starts at the heading holding `after`."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index(after):]
    section = section[:section.find("\n## ", 1)] if "\n## " in section[1:] else section
    return re.findall(r"```python\n(.*?)```", section, re.S)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def jsonl_data(tmp_path: Path, vocab_file: Path) -> Path:
    """A model folder (tiny BERT + vocab), train/dev JSONL with intent names, and the doc's module."""
    model_dir = tmp_path / "model"
    tiny_bert().save(model_dir)
    shutil.copy(vocab_file, model_dir / "vocab.txt")
    rows = [{"text": text, "intent": intent} for text, _, intent in UTTERANCES]
    write_jsonl(tmp_path / "train.jsonl", rows * 2)
    (tmp_path / "dev.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n\n", encoding="utf-8")
    return tmp_path


def test_the_jsonl_reader_of_the_doc_trains_evaluates_exports_and_loads(jsonl_data, monkeypatch):
    module, script = doc_blocks("### A complete custom reader")
    (jsonl_data / "jsonl_reader.py").write_text(module, encoding="utf-8")
    monkeypatch.syspath_prepend(str(jsonl_data))
    monkeypatch.chdir(jsonl_data)
    namespace = {"model_dir": str(jsonl_data / "model")}
    exec(script, namespace)
    reader, trainer, predictor = namespace["reader"], namespace["trainer"], namespace["predictor"]
    names = sorted({intent for _, _, intent in UTTERANCES})
    assert namespace["intents"] == names and type(reader).__name__ == "JsonlIntentReader"
    assert reader.num_examples == 2 * len(UTTERANCES)
    assert set(trainer.evaluate()["intent"]) == {"intent.accuracy", "intent.macro_f1", "score"}
    record = predictor.predict(["wake me up at seven"])[0]
    assert record["intent"]["label"] in names
    labels = json.loads((jsonl_data / "outputs" / "intents" / "labels.json").read_text(encoding="utf-8"))
    assert labels["intent"]["label_ids"] == names


def test_the_doc_reader_names_the_line_of_a_bad_row(jsonl_data, monkeypatch, vocab_file):
    module, _ = doc_blocks("### A complete custom reader")
    (jsonl_data / "jsonl_reader.py").write_text(module, encoding="utf-8")
    monkeypatch.syspath_prepend(str(jsonl_data))
    from jsonl_reader import JsonlIntentReader
    bad = jsonl_data / "bad.jsonl"
    bad.write_text('{"text": "play some jazz", "intent": "play_music"}\n{"text": "play\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl, line 2: not JSON"):
        JsonlIntentReader(vocab_file, label_map="auto").load_data(bad)


class OverrideReader(mtl.reader.ClassifyReader):
    """An override that builds no label map: label_map='auto' must still work (it did not: 'label
    'alarm_query' is not an integer id')."""

    rows: list[dict] = []

    def _read_examples(self, path: str, file_format: str) -> list[dict]:
        return [dict(row) for row in self.rows]


def test_auto_label_map_is_built_from_an_override_s_examples(vocab_file, tmp_path):
    OverrideReader.rows = [{"label": "alarm_query", "text": "what alarms are set", "line": 1},
                           {"label": "alarm_set", "text": "set an alarm for seven", "line": 2}]
    reader = OverrideReader(vocab_file, label_map="auto").load_data(tmp_path / "any")
    assert reader.label_names == {"label_ids": ["alarm_query", "alarm_set"]}
    assert [reader.features[i].fields["label_ids"] for i in range(2)] == [0, 1]
    dev = reader.eval_reader(tmp_path / "any")
    assert dev.label_names == reader.label_names


def test_an_override_without_the_label_key_is_told_which_keys_to_give(vocab_file, tmp_path):
    OverrideReader.rows = [{"label": "alarm_set", "text": "set an alarm", "line": 1},
                           {"intent": "alarm_query", "text": "what alarms", "line": 7}]
    with pytest.raises(DataError, match=r"line 7: example 2 from _read_examples has no 'label' key .*"
                                        r'ClassifyReader examples are dicts \{"label", "text", "line"\}'):
        OverrideReader(vocab_file, label_map="auto").load_data(tmp_path / "any")


class TagOverride(mtl.reader.SequenceLabelReader):
    def _read_examples(self, path: str, file_format: str) -> list[dict]:
        return [{"words": ["fly", "to", "boston"], "tags": ["O", "O", "B-city"], "line": 1},
                {"words": ["play", "jazz"], "tags": ["O", "B-genre"], "line": 2}]


def test_auto_tag_map_is_built_from_an_override_s_examples(vocab_file, tmp_path):
    reader = TagOverride(vocab_file, label_map="auto").load_data(tmp_path / "any")
    assert reader.label_names == {"label_ids": ["O", "B-city", "B-genre"]}
