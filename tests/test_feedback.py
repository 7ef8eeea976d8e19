"""What a user reads while using mtl: a mistyped model folder is named as missing by every verb; blank input
lines of `mtl predict` are skipped and named; `mtl.load` prints no progress bar of transformers'; training
says its plan before the first step, names its two losses, and warns when the cores are already busy."""
import json
import logging
import re
from pathlib import Path

import pytest
import torch
from transformers.utils import logging as hf_logging

import mtl
from mtl.cli import main
from mtl.trainers import busy_cores
from tiny_runs import exported_tiny_joint, tiny_config, two_task_trainer, write_yaml

CONSOLE = re.compile(r"global step: (\d+), (\w+): step \d+/\d+ \(epoch \d+\), batch loss: [\d.]+, "
                     r"mean loss of steps (\d+)-(\d+): ([\d.]+), speed: [\d.]+ steps/s")


@pytest.fixture(scope="module")
def model(vocab_file, tmp_path_factory) -> Path:
    """An exported tiny joint intent + slot model (untrained)."""
    return exported_tiny_joint(vocab_file, tmp_path_factory)


def error_line(stderr: str, verb: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith(f"mtl {verb}: ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


# ---- a mistyped model folder ---------------------------------------------------------------------------------
def test_every_verb_says_a_mistyped_model_folder_does_not_exist(model, vocab_file, intent_slot_dir, tmp_path,
                                                                  capsys):
    """`mtl eval --checkpoint runs/movie/bset` said `not an mtl checkpoint (no labels.json)`."""
    typo = model.parent / "bset"
    config = write_yaml(tmp_path / "run.yaml", tiny_config(vocab_file, intent_slot_dir, str(tmp_path / "out")))
    commands = {"eval": ["eval", str(config), "--checkpoint", str(typo)],
                "predict": ["predict", "--model", str(typo), "--input", str(config)],
                "serve": ["serve", "--model", str(typo), "--runtime", "onnx"],
                "export": ["export", str(typo), "--onnx", str(tmp_path / "onnx")]}
    for verb, argv in commands.items():
        assert main(argv) == 2, verb
        error = error_line(capsys.readouterr().err, verb)
        assert error.startswith(f"mtl {verb}: {typo}: does not exist; give a model folder"), error
        assert "labels.json" not in error and "onnx.json" not in error
    assert main(["export", str(typo), "--pretrained", str(tmp_path / "bert")]) == 2
    assert "does not exist" in error_line(capsys.readouterr().err, "export")
    assert main(["eval", str(config), "--checkpoint", str(config)]) == 2  # a file, not a folder
    assert f"{config}: is a file, not a model folder" in error_line(capsys.readouterr().err, "eval")
    with pytest.raises(FileNotFoundError, match=f"{re.escape(str(typo))}: does not exist"):
        mtl.load(typo)


# ---- blank lines given to `mtl predict` ------------------------------------------------------------------
def test_predict_skips_blank_lines_and_names_them(model, tmp_path, capsys, caplog):
    texts = tmp_path / "in.txt"
    texts.write_text("play some jazz\n\n   \nset an alarm for seven am\n", encoding="utf-8")
    caplog.set_level(logging.WARNING)
    assert main(["predict", "--model", str(model), "--input", str(texts)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in records] == ["play some jazz", "set an alarm for seven am"]
    assert f"{texts}: 2 blank lines skipped (line 2, 3): one prediction per non-blank line" in caplog.text


def test_predict_refuses_input_with_no_utterance(model, tmp_path, capsys):
    texts = tmp_path / "blank.txt"
    texts.write_text("\n  \n", encoding="utf-8")
    assert main(["predict", "--model", str(model), "--input", str(texts)]) == 2
    assert error_line(capsys.readouterr().err, "predict") == \
        f"mtl predict: {texts}: no utterance: every line is blank (write one utterance per line)"


# ---- mtl.load is quiet -------------------------------------------------------------------------------------
@pytest.fixture
def progress_bars_on():
    """transformers' progress bars on, as in a fresh process (`mtl.cli.main` turns them off for its own)."""
    before = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    yield
    if not before:
        hf_logging.disable_progress_bar()


def test_load_prints_no_progress_bar_and_leaves_the_setting_as_it_was(model, progress_bars_on, capfd):
    predictor = mtl.load(model, precision="fp32")
    assert predictor.predict(["play some jazz"])[0]["text"] == "play some jazz"
    captured = capfd.readouterr()
    assert "Loading weights" not in captured.err and "%|" not in captured.err, captured.err
    assert hf_logging.is_progress_bar_enabled()  # the user's own transformers calls keep their bars


# ---- training's first line and its two losses -------------------------------------------------------------
def test_training_says_its_plan_first_and_names_its_losses(vocab_file, intent_slot_dir, tmp_path, capsys):
    trainer = two_task_trainer(vocab_file, intent_slot_dir, num_epochs=1)
    trainer.set_saver(tmp_path / "out")
    trainer.train(print_steps=2)
    lines = capsys.readouterr().out.splitlines()
    first = lines[0]
    assert first.startswith(f"training {trainer.total_steps} steps (1 epoch); tasks: slot (budget "), first
    assert "intent (budget" in first and "mix 0.5" in first and f"cpu, fp32, {torch.get_num_threads()} thread" in first
    assert first.endswith("a line every 2 steps")
    console = [m for m in map(CONSOLE.fullmatch, lines) if m]
    assert len(console) == trainer.total_steps // 2
    records = {r["step"]: r for r in map(json.loads, (tmp_path / "out" / "metrics.jsonl").open()) if r["kind"] == "train"}
    for match in console:
        step, task, since, until, mean = int(match[1]), match[2], int(match[3]), int(match[4]), float(match[5])
        assert until == step and since == step - 1  # a line every 2 steps: the mean of steps step-1..step
        assert records[step]["loss_steps"] == [since, step]
        assert records[step]["loss"][task] == pytest.approx(mean, abs=5e-4)  # the same number, as printed


def test_no_plan_line_without_print_steps(vocab_file, intent_slot_dir, capsys):
    two_task_trainer(vocab_file, intent_slot_dir, num_epochs=1).train(print_steps=0)
    assert capsys.readouterr().out == ""


def test_a_resumed_or_cut_run_says_which_steps_it_runs(vocab_file, intent_slot_dir, tmp_path, capsys):
    trainer = two_task_trainer(vocab_file, intent_slot_dir, num_epochs=1)
    trainer.set_saver(tmp_path / "out")
    trainer.train(print_steps=50, max_steps=3)
    assert capsys.readouterr().out.splitlines()[0].startswith(f"training steps 1-3 of {trainer.total_steps} "
                                                              "(max_steps); tasks: ")
    trainer.train(print_steps=50)
    assert capsys.readouterr().out.splitlines()[0].startswith(
        f"training steps 4-{trainer.total_steps} of {trainer.total_steps} (resuming after step 3); tasks: ")


# ---- busy cores ----------------------------------------------------------------------------------------------
@pytest.fixture
def machine(monkeypatch):
    """A 2-core machine whose 1-minute load average the test sets; this process counts for nothing."""
    load = {"value": 0.0}
    monkeypatch.setattr(busy_cores.os, "getloadavg", lambda: (load["value"], 0.0, 0.0))
    monkeypatch.setattr(busy_cores.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(busy_cores, "own_load", lambda: 0.0)
    return load


@pytest.mark.parametrize("load, threads, warned", [(1.0, 2, True), (3.7, 2, True), (0.9, 2, False),
                                                   (3.7, 1, False)])
def test_busy_cores_warning(machine, load, threads, warned):
    machine["value"] = load
    message = busy_cores.busy_warning(threads)
    assert (message is not None) == warned
    if warned:
        assert f"1-minute load average {load:.1f} on 2 cores" in message and "--threads 1" in message


def test_busy_cores_counts_what_this_process_did_itself(machine, monkeypatch):
    monkeypatch.setattr(busy_cores, "own_load", lambda: 0.8)  # our own tokenization raised the load average
    machine["value"] = 1.5
    assert busy_cores.busy_warning(2) is None
    monkeypatch.undo()
    assert busy_cores.own_load() >= 0.0


def test_no_load_average_no_warning(monkeypatch):
    def missing() -> tuple:
        raise OSError("no load average")
    monkeypatch.setattr(busy_cores.os, "getloadavg", missing)
    assert busy_cores.busy_warning(8) is None


@pytest.fixture
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def test_training_warns_once_when_the_cores_are_busy(machine, two_threads, vocab_file, intent_slot_dir, caplog):
    machine["value"] = 2.0
    caplog.set_level(logging.WARNING)
    two_task_trainer(vocab_file, intent_slot_dir, num_epochs=1).train(print_steps=0)
    warnings = [r.getMessage() for r in caplog.records if "the cores are busy" in r.getMessage()]
    assert len(warnings) == 1 and "try --threads 1" in warnings[0]


def test_mtl_train_warns_when_the_cores_are_busy(machine, vocab_file, intent_slot_dir, tmp_path, caplog):
    machine["value"] = 2.0
    config = tiny_config(vocab_file, intent_slot_dir, str(tmp_path / "out"))
    config["train"] = {"print_steps": 0}
    caplog.set_level(logging.WARNING)
    threads = torch.get_num_threads()
    try:
        assert main(["train", str(write_yaml(tmp_path / "run.yaml", config)), "--threads", "2"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert any("the cores are busy" in r.getMessage() and "--threads 1" in r.getMessage() for r in caplog.records)
    caplog.clear()
    config["saver"]["save_path"] = str(tmp_path / "again")
    assert main(["train", str(write_yaml(tmp_path / "again.yaml", config)), "--threads", "1"]) == 0
    torch.set_num_threads(threads)
    assert not any("the cores are busy" in r.getMessage() for r in caplog.records)
