"""examples/custom_head: a user's multi-label head (no change to mtl) trains beside slot filling through
MultiHeadTrainer, exports, and `mtl.load` rebuilds it once the head's module is allowed (a model folder names
only mtl's classes otherwise). Run in its --quick mode on a tiny random encoder."""
import importlib.util
import sys
from pathlib import Path

import pytest

import mtl
from conftest import UTTERANCES, write_intent_slot

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "custom_head"
MULTI = {"show me flights from denver to san francisco": "book_flight#get_weather",
         "play the song by the beatles please": "play_music#set_alarm"}


def load_example():
    sys.path.insert(0, str(EXAMPLE))
    try:
        spec = importlib.util.spec_from_file_location("custom_head_train", EXAMPLE / "train.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(EXAMPLE))


def test_the_custom_head_is_short():
    source = (EXAMPLE / "multilabel.py").read_text().splitlines()
    start = next(i for i, line in enumerate(source) if line.startswith("class MultiLabel"))
    end = next(i for i, line in enumerate(source) if line.startswith("class MultiIntentReader"))
    assert end - start < 60


@pytest.fixture
def data(tmp_path: Path) -> Path:
    rows = [(text, tags, MULTI.get(text, intent)) for text, tags, intent in UTTERANCES]
    for split in ("train", "dev", "test"):
        write_intent_slot(tmp_path / split, rows * (2 if split == "train" else 1))
    return tmp_path


def test_example_trains_jointly_and_exports(data, vocab_file, tmp_path, capsys):
    example = load_example()
    args = example.parse(["--quick", "--model", str(vocab_file), "--data", str(data), "--epochs", "25",
                          "--lr", "5e-3", "--batch-size", "4", "--max-seqlen", "32", "--print-steps", "0",
                          "--output", str(tmp_path / "out")])
    result = example.run(args)
    before, after = result["before"], result["after"]
    assert after["slots"]["slots.f1"] > before["slots"]["slots.f1"] + 30
    assert after["intents"]["intents.f1"] > before["intents"]["intents.f1"] + 20
    assert after["intents"]["intents.f1"] >= 60.0  # the two-intent utterances count twice in the F1
    printed = capsys.readouterr().out
    assert "mtl.load:" in printed and "'intents': {'labels':" in printed  # rebuilt from its dotted path
    with pytest.raises(mtl.MtlError, match=r"'multilabel\.Multi\w+'.*allowed_modules=\['multilabel'\]"):
        mtl.load(result["export"])  # without the opt-in: refused before multilabel is even looked up
