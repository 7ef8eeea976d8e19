"""The CLI as a new user meets it (issue 18): each mistake is one line on stderr naming the file, the line where
there is one, and the fix, with status 2 and no traceback; and what training, eval and predict print and keep.

Where the user typed a command, the test runs the installed console script in a new process; elsewhere it
calls `mtl.cli.main` in process (a new process costs seconds of imports)."""
import io
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import UTTERANCES, write_intent_slot
from mtl.cli import _parser, main
from tiny_runs import exported_tiny_joint, tiny_config, write_yaml

LATIN1 = "café".encode("latin-1")  # b'caf\xe9': not UTF-8


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The `mtl` console script beside this Python (`python -m mtl` where it is not installed)."""
    script = Path(sys.executable).with_name("mtl")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "mtl"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(command + list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def one_error(stderr: str, command: str) -> str:
    """The error line: exactly one `mtl COMMAND:` line, and no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith(f"mtl {command}: ")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture(scope="module")
def model(vocab_file, tmp_path_factory) -> Path:
    """An exported tiny joint intent + slot model (untrained: only the CLI's paths are under test)."""
    return exported_tiny_joint(vocab_file, tmp_path_factory)


@pytest.fixture
def run(vocab_file, intent_slot_dir) -> Path:
    """A run folder: vocab, train/dev/test data and run.yaml, paths relative to the YAML."""
    folder = intent_slot_dir / "run"
    folder.mkdir()
    shutil.copyfile(vocab_file, folder / "vocab.txt")
    write_intent_slot(intent_slot_dir / "test", UTTERANCES[:6])
    config = tiny_config(Path("vocab.txt"), Path(".."), save_path="out")
    config["tasks"][0].update(train_data="../train", dev_data="../dev", test_data="../test")
    return write_yaml(folder / "run.yaml", config)


# ---- 1. one line, not a traceback --------------------------------------------------------------------------
def test_predict_input_that_is_not_utf8(model, tmp_path):
    texts = tmp_path / "utterances.txt"
    texts.write_bytes(b"play some jazz\nplay " + LATIN1 + b" music\n")
    done = cli("predict", "--model", str(model), "--input", str(texts), cwd=tmp_path)
    assert done.returncode == 2
    error = one_error(done.stderr, "predict")
    assert error.startswith(f"mtl predict: {texts}, line 2: invalid UTF-8 at byte 8 of the line (0xe9: Latin-1")
    assert "save the file as UTF-8, e.g. iconv -f latin1 -t utf-8" in error


def test_predict_stdin_that_is_not_utf8(model, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(LATIN1 + b"\n")))
    assert main(["predict", "--model", str(model), "--input", "-"]) == 2
    assert one_error(capsys.readouterr().err, "predict").startswith("mtl predict: <stdin>, line 1: invalid UTF-8")


def test_config_with_a_latin1_comment(run):
    run.write_bytes(b"# " + LATIN1 + b" settings\n" + run.read_bytes())
    done = cli("train", str(run), cwd=run.parent)
    assert done.returncode == 2
    error = one_error(done.stderr, "train")
    assert error.startswith(f"mtl train: {run}, line 1: invalid UTF-8 at byte 5") and "save the file as UTF-8" in error
    assert not (run.parent / "out").exists()


@pytest.mark.parametrize("old, new, problem", [
    ("  lr: 0.003", "  lr 0.003", "`lr 0.003` has no colon, so the next line's key reads as part of it (write "
                                  "`key: value`"),
    ("  seed: 2", "  seed 2", "`seed 2` has no colon after its key (write `key: value`"),
    ("  lr: 0.003", "\tlr: 0.003", "a tab where YAML expects spaces (indent with spaces, never tabs)"),
    ("  seed: 2", "  seed: a: b", "`seed: a: b`: the value holds a `: ` (quote the value"),
    ("  num_epochs: 2", "   num_epochs: 2", "`num_epochs: 2` is indented further than the keys above it"),
])
def test_yaml_syntax_errors_name_the_file_and_the_right_line(run, capsys, old, new, problem):
    text = run.read_text(encoding="utf-8")
    line = text.splitlines().index(old) + 1
    run.write_text(text.replace(old, new, 1), encoding="utf-8")
    assert main(["train", str(run)]) == 2
    error = one_error(capsys.readouterr().err, "train")
    assert error.startswith(f"mtl train: {run}, line {line}: {problem}"), error
    assert "<unicode string>" not in error


def test_predict_on_a_mistyped_model_folder(model, tmp_path, capsys):
    typo = model.parent / "modle"
    assert main(["predict", "--model", str(typo), "--input", "-"]) == 2
    error = one_error(capsys.readouterr().err, "predict")
    assert error.startswith(f"mtl predict: {typo}: does not exist; give a model folder") and "model.json" not in error


def test_predict_with_a_custom_head_module_that_is_not_importable(model, tmp_path, monkeypatch, capsys):
    folder = shutil.copytree(model, tmp_path / "model")
    spec = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    spec["tasks"][0]["heads"]["intent"]["_component_"] = "cli_user_heads.Intent"
    (folder / "model.json").write_text(json.dumps(spec), encoding="utf-8")
    texts = tmp_path / "in.txt"
    texts.write_text("play some jazz\n", encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    command = ["predict", "--model", str(folder), "--input", str(texts)]
    key = f"{folder / 'model.json'}: tasks[0].heads.intent._component_"

    assert main(command) == 2  # not allowed: refused before any import, with the flag that allows it
    error = one_error(capsys.readouterr().err, "predict")
    assert error.startswith(f"mtl predict: {key}: refused 'cli_user_heads.Intent'") and \
        "--allow-module cli_user_heads" in error
    assert main(command + ["--allow-module", "cli_user_heads"]) == 2  # allowed, but not on the import path
    error = one_error(capsys.readouterr().err, "predict")
    assert error.startswith(f"mtl predict: {key}: cannot import 'cli_user_heads.Intent': no module named "
                            f"'cli_user_heads' (searched ")
    assert str(elsewhere) in error and "put cli_user_heads.py or the cli_user_heads/ package in one of" in error

    (elsewhere / "cli_user_heads.py").write_text("import mtl\n\n\nclass Intent(mtl.head.Classify):\n    pass\n",
                                                 encoding="utf-8")
    monkeypatch.delitem(sys.modules, "cli_user_heads", raising=False)
    assert main(command + ["--allow-module", "cli_user_heads"]) == 0  # the current folder is on the path
    assert "intent" in json.loads(capsys.readouterr().out.splitlines()[0])
    monkeypatch.delitem(sys.modules, "cli_user_heads")


# ---- 2. swapped columns, 3. intent-only folders and label_map: auto, through the CLI ----------------------
def test_train_on_swapped_conll_columns_says_so(run, capsys):
    data = run.parent / "ner.txt"
    data.write_text("B-LOC boston\nO to\n\nO play\nB-PER peter\n", encoding="utf-8")
    config = tiny_config(Path("vocab.txt"), Path(".."), save_path="out")
    config["tasks"] = [{"name": "ner", "file_format": "conll", "train_data": "ner.txt",
                        "reader": {"_component_": "mtl.reader.SequenceLabelReader", "vocab_path": "vocab.txt",
                                   "label_map": "auto"},
                        "head": {"_component_": "mtl.head.SequenceLabel", "num_classes": "auto", "input_dim": "auto"}}]
    config["train"] = {"print_steps": 0}
    assert main(["train", str(write_yaml(run, config))]) == 2
    error = one_error(capsys.readouterr().err, "train")
    for fragment in (f"{data}, line 1: tag_column=-1 (the last column)", "'boston' (line 1)", "'to' (line 2)",
                     "the columns look swapped: the words look like tags", "put the word in the first column"):
        assert fragment in error, (fragment, error)


def test_intent_only_folders_train_eval_and_predict(run, caplog, capsys):
    data = run.parent.parent
    for split in ("train", "dev", "test"):
        (data / split / "seq.out").unlink()
    config = tiny_config(Path("vocab.txt"), Path(".."), save_path="out")
    config["tasks"][0].update(train_data="../train", dev_data="../dev", test_data="../test",
                              heads={"intent": config["tasks"][0]["heads"]["intent"]})
    write_yaml(run, config)
    caplog.set_level(logging.INFO)
    assert main(["train", str(run)]) == 0
    assert f"{data / 'train'}: no seq.out: reading intents only" in caplog.text
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    assert set(json.loads(capsys.readouterr().out)["metrics"]["joint"]) == {"intent.accuracy", "intent.macro_f1",
                                                                            "score"}
    (run.parent / "in.txt").write_text("play some jazz\n", encoding="utf-8")
    assert main(["predict", "--model", str(run.parent / "out" / "best"), "--input", str(run.parent / "in.txt")]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"text", "intent"}


def test_classify_with_label_map_auto_trains_and_evaluates(run, capsys):
    for split, rows in (("train", UTTERANCES * 2), ("test", UTTERANCES[:4])):
        (run.parent / f"{split}.tsv").write_text("".join(f"{i}\t{t}\n" for t, _, i in rows), encoding="utf-8")
    config = tiny_config(Path("vocab.txt"), Path(".."), save_path="out")
    config["tasks"] = [{"name": "intent", "train_data": "train.tsv", "test_data": "test.tsv",
                        "reader": {"_component_": "mtl.reader.ClassifyReader", "vocab_path": "vocab.txt",
                                   "label_map": "auto"},
                        "head": {"_component_": "mtl.head.Classify", "num_classes": "auto", "input_dim": "auto",
                                 "dropout_prob": 0.0}}]
    config["train"] = {"print_steps": 0}
    assert main(["train", str(write_yaml(run, config))]) == 0
    labels = json.loads((run.parent / "out" / "final" / "labels.json").read_text(encoding="utf-8"))
    assert labels == {"intent": {"label_ids": sorted({i for _, _, i in UTTERANCES})}}
    capsys.readouterr()
    assert main(["eval", str(run), "--checkpoint", str(run.parent / "out" / "final")]) == 0
    assert "intent.accuracy" in json.loads(capsys.readouterr().out)["metrics"]["intent"]


# ---- 4. the console, 5. checkpoints, 7. eval reads only what it scores, --threads, --help --------------------
def test_train_prints_each_evaluation_and_keeps_best_light(run, caplog, capsys):
    caplog.set_level(logging.INFO)
    assert main(["train", str(run)]) == 0
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dev at step")]
    assert len(lines) == 2 and lines[0].startswith("dev at step 3: joint score ") and lines[0].endswith("(new best)")
    out = run.parent / "out"
    assert not (out / "best" / "training_state.pt").exists()  # a model to use, not a point to resume from
    assert (out / "final" / "training_state.pt").is_file() and (out / "step-4" / "training_state.pt").is_file()

    for split in ("train", "dev"):  # eval must not read them: make them unreadable
        (run.parent.parent / split / "seq.in").write_bytes(LATIN1 + b"\n")
    threads = torch.get_num_threads()
    try:
        capsys.readouterr()
        assert main(["eval", str(run), "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    report = json.loads(capsys.readouterr().out)
    assert report["checkpoint"] == str(out / "best") and "frame_accuracy" in report["metrics"]["joint"]


def test_keep_best_optimizer_state_is_an_option(run):
    config = tiny_config(Path("vocab.txt"), Path(".."), save_path="out")
    config["tasks"][0].update(train_data="../train", dev_data="../dev", test_data="../test")
    config["saver"]["keep_best_optimizer_state"] = True
    assert main(["train", str(write_yaml(run, config))]) == 0
    assert (run.parent / "out" / "best" / "training_state.pt").is_file()


@pytest.mark.parametrize("verb", ["train", "eval", "predict", "serve", "export"])
def test_every_verb_takes_threads_and_help_shows_defaults(verb):
    text = _parser()._subparsers._group_actions[0].choices[verb].format_help()
    assert "--threads N" in text
    if verb == "predict":
        assert "texts per model batch (default: 32)" in text and "(default: auto)" in text
    with pytest.raises(SystemExit):
        _parser().parse_args([verb, "--threads", "0"])


# ---- 6. modules beside the config ------------------------------------------------------------------------
def test_train_imports_a_head_beside_the_config_and_says_where_it_looked(run, tmp_path, monkeypatch, capsys):
    config = tiny_config(Path("vocab.txt"), Path(".."), save_path="out")
    config["tasks"][0].update(train_data="../train", dev_data="../dev", test_data="../test")
    config["tasks"][0]["heads"]["intent"]["_component_"] = "cli_config_heads.Intent"
    write_yaml(run, config)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["train", str(run)]) == 2
    error = one_error(capsys.readouterr().err, "train")
    assert f"tasks[0].heads.intent._component_: cannot import 'cli_config_heads.Intent': no module named " \
           f"'cli_config_heads' (searched " in error
    assert str(run.parent) in error and str(elsewhere) in error and "pip install it" in error

    (run.parent / "cli_config_heads.py").write_text("import mtl\n\n\nclass Intent(mtl.head.Classify):\n    pass\n",
                                                    encoding="utf-8")
    monkeypatch.delitem(sys.modules, "cli_config_heads", raising=False)
    assert main(["train", str(run)]) == 0
    monkeypatch.delitem(sys.modules, "cli_config_heads")
