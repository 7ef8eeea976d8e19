"""Start-up is paid only for what is used, checked in fresh interpreters through `sys.modules`: `mtl --help`
and `mtl VERB --help` import neither torch nor transformers; importing mtl.metrics imports neither seqeval
nor scikit-learn (they load when entity F1 is computed); an ONNX folder predicts and serves without
transformers' modelling code. The entity spans that replaced seqeval's at prediction time are seqeval's."""
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from seqeval.metrics.sequence_labeling import get_entities as seqeval_entities

from conftest import UTTERANCES, joint_trainer, write_intent_slot
from mtl.metrics import get_entities
from mtl.serving.onnx_export import export_onnx

ROOT = Path(__file__).resolve().parent.parent
VERBS = ["train", "distill", "eval", "predict", "serve", "export", "vocab", "get-encoder", "trim-vocab", "affinity"]
MODELLING = ("transformers.modeling_utils", "transformers.models.bert.modeling_bert")
METRICS_LIBRARIES = ("seqeval", "sklearn")


def loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code` (which may print to stdout: the last line
    is ours)."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def heavy(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


@pytest.mark.parametrize("argv", [[]] + [[verb] for verb in VERBS], ids=lambda argv: " ".join(argv) or "mtl")
def test_help_imports_neither_torch_nor_transformers(argv):
    code = (f"from mtl.cli import main\ntry:\n    main({argv + ['--help']!r})\nexcept SystemExit as done:\n"
            "    assert done.code == 0, done.code")
    assert heavy(loaded_after(code), ("torch", "transformers") + METRICS_LIBRARIES) == []


def test_metrics_libraries_load_when_metrics_are_computed():
    assert heavy(loaded_after("import mtl.metrics, mtl.components.heads.sequence_label"), METRICS_LIBRARIES) == []
    computed = loaded_after("from mtl.metrics import seqeval_scores\nseqeval_scores([['B-X']], [['B-X']])")
    assert "seqeval.metrics" in computed


@pytest.mark.filterwarnings("ignore:.*seems not to be NE tag")
def test_entity_spans_are_seqevals_on_any_tags():
    rng = random.Random(0)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "E-PER", "S-LOC", "I-MISC", "B", "I", ".", "B-a-b"]
    for _ in range(2000):
        sequence = [rng.choice(tags) for _ in range(rng.randint(0, 9))]
        assert get_entities(sequence) == seqeval_entities(sequence), sequence


@pytest.fixture(scope="module")
def onnx_folder(tmp_path_factory, vocab_file) -> Path:
    root = tmp_path_factory.mktemp("startup")
    write_intent_slot(root / "data" / "train", UTTERANCES)
    write_intent_slot(root / "data" / "dev", UTTERANCES)
    trainer = joint_trainer(vocab_file, root / "data", use_crf=True)
    trainer.train(print_steps=0)
    export_onnx(trainer.export(root / "model"), root / "onnx")
    return root / "onnx"


def test_an_onnx_folder_predicts_and_serves_without_transformers_modelling_code(onnx_folder, tmp_path):
    """Its weights are in the graph: the Encoder is never built. torch stays (readers build tensors, heads
    decode with it: softmax, argmax, Viterbi) and so does transformers' tokenization code."""
    texts = tmp_path / "texts.txt"
    texts.write_text("book a flight to denver\nplay some jazz\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    code = (f"from mtl.cli import main\nassert main(['predict', '--model', {str(onnx_folder)!r}, '--input', "
            f"{str(texts)!r}, '--output', {str(out)!r}]) == 0\n"
            f"from mtl.serving.engine import load_engine\nfrom mtl.serving.server import create_app\n"
            f"engine = load_engine({str(onnx_folder)!r})\ncreate_app(engine)\n"
            "assert engine.runtime == 'onnxruntime', engine.runtime\n"
            "assert engine.predict(['play some jazz'])[0]['slots']")
    loaded = loaded_after(code)
    assert heavy(loaded, MODELLING + METRICS_LIBRARIES) == []
    assert "onnxruntime" in loaded and "transformers.tokenization_utils_base" in loaded
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in records] == ["book a flight to denver", "play some jazz"]
    assert all({"intent", "slots"} <= set(r) for r in records)
