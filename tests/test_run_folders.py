"""A run folder as a user meets it: the closing line names folders that exist, a second run never silently
replaces a first one, checkpoints of the same moment share their files (hard links) and each still loads,
and every run says which precision `auto` resolved to."""
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import yaml

import mtl
from mtl.cli import main
from mtl.model.device import resolve_device, resolve_precision
from tiny_runs import TEXTS, tiny_config, two_task_trainer, write_yaml

WEIGHT_FILES = ("backbone/model.safetensors", "heads.safetensors")


@pytest.fixture
def config_file(vocab_file, intent_slot_dir, tmp_path) -> Path:
    """6 steps (2 epochs of 3 batches), a dev evaluation every 3 steps, step-N every 4 (and at step 6 when
    save_steps is 3)."""
    (tmp_path / "run").mkdir()
    config = tiny_config(vocab_file, intent_slot_dir, save_path="out")
    return write_yaml(tmp_path / "run" / "run.yaml", config)


def edit(config_file: Path, section: str, **values) -> None:
    config = yaml.safe_load(config_file.read_text())
    config.setdefault(section, {}).update(values)
    write_yaml(config_file, config)


def closing_line(caplog) -> str:
    return [r.getMessage() for r in caplog.records if r.name == "mtl"][-1]


def inode(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_dev, stat.st_ino


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def disk_bytes(folder: Path) -> int:
    """Bytes on disk as `du` counts them: a file with several hard links once."""
    seen, total = set(), 0
    for path in folder.rglob("*"):
        if path.is_file() and inode(path) not in seen:
            seen.add(inode(path))
            total += path.stat().st_size
    return total


# ---- 1. the closing line tells the truth ------------------------------------------------------------------
def test_max_steps_names_the_step_folder_to_resume_and_a_finished_run_names_final(config_file, caplog):
    out = config_file.parent / "out"
    edit(config_file, "train", max_steps=3)
    caplog.set_level(logging.INFO, logger="mtl")
    assert main(["train", str(config_file)]) == 0
    line = closing_line(caplog)
    assert f"resume from {out / 'step-3'}" in line and "no final model yet" in line and "final model:" not in line
    assert (out / "step-3").is_dir() and not (out / "final").exists()
    edit(config_file, "train", max_steps=None)
    assert main(["train", str(config_file), "--resume"]) == 0
    line = closing_line(caplog)
    assert line.startswith("trained 6 steps in fp32; final model: ") and line.endswith(f"{out / 'best'}")
    assert f"final model: {out / 'final'};" in line and (out / "final" / "heads.safetensors").is_file()


def test_a_run_that_ended_at_its_last_step_checkpoint_gets_its_final_folder_on_resume(config_file, caplog):
    out = config_file.parent / "out"
    edit(config_file, "saver", save_steps=3)
    assert main(["train", str(config_file)]) == 0
    shutil.rmtree(out / "final")  # the folder as a crash between writing step-6/ and final/ leaves it
    caplog.set_level(logging.INFO, logger="mtl")
    assert main(["train", str(config_file), "--resume"]) == 0  # nothing left to train, but final/ is written
    assert json.loads((out / "final" / "trainer_state.json").read_text())["global_step"] == 6
    assert f"final model: {out / 'final'}" in closing_line(caplog)
    assert mtl.load(out / "final").predict(TEXTS[:1])[0]["text"] == TEXTS[0]


# ---- 2. a second run never silently replaces the first ---------------------------------------------------
def test_training_again_into_a_run_folder_refuses_in_one_line_and_touches_nothing(config_file, capsys):
    out = config_file.parent / "out"
    assert main(["train", str(config_file)]) == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["train", str(config_file)]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (f"mtl train: {out}: already holds a training run (best/, final/, metrics.jsonl, step-4/ "
                     "and 1 more); --resume continues it, --overwrite deletes it and starts over")
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_overwrite_deletes_the_old_run_first_and_keeps_other_files(config_file, capsys):
    out = config_file.parent / "out"
    assert main(["train", str(config_file)]) == 0
    stale = out / "step-99"  # a checkpoint this run would not write again
    stale.mkdir()
    (stale / "heads.safetensors").write_bytes((out / "best" / "heads.safetensors").read_bytes())
    (out / "notes.txt").write_text("mine")
    assert main(["train", str(config_file), "--overwrite"]) == 0
    assert not stale.exists() and (out / "notes.txt").read_text() == "mine"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records].count("start") == 1 and records[-1]["kind"] == "end"
    assert len(list((out / "tensorboard").glob("events.out.tfevents*"))) == 1  # not two runs' curves in one
    with pytest.raises(SystemExit) as exit_info:  # one or the other
        main(["train", str(config_file), "--resume", "--overwrite"])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_a_run_killed_before_its_first_checkpoint_is_refused_and_resume_starts_it_over(config_file, capsys):
    out = config_file.parent / "out"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"kind": "start", "step": 0}\n')
    assert main(["train", str(config_file)]) == 2
    assert "metrics.jsonl" in capsys.readouterr().err
    assert main(["train", str(config_file), "--resume"]) == 0  # nothing to resume: it starts over
    assert json.loads((out / "final" / "trainer_state.json").read_text())["global_step"] == 6


def test_the_python_api_refuses_a_folder_holding_a_run_unless_told_to_overwrite(vocab_file, intent_slot_dir,
                                                                                 tmp_path):
    first = two_task_trainer(vocab_file, intent_slot_dir, num_epochs=1)
    first.set_saver(tmp_path / "run")
    first.train(print_steps=0, max_steps=2)
    assert first.train(print_steps=0)["finished"]  # the same run going on in-process is not a second run
    again = two_task_trainer(vocab_file, intent_slot_dir, num_epochs=1)
    again.set_saver(tmp_path / "run")
    with pytest.raises(mtl.MtlError, match=r"already holds a training run \(final/, metrics.jsonl, step-2/.*"
                                           r"resume_from=.*overwrite=True"):
        again.train(print_steps=0)
    assert again.global_step == 0 and again.optimizer is None  # refused before anything ran
    again.set_saver(tmp_path / "run", overwrite=True)
    assert again.train(print_steps=0)["checkpoint"] == tmp_path / "run" / "final"
    assert not (tmp_path / "run" / "step-2").exists() and (tmp_path / "run" / "final").is_dir()


# ---- 5. no duplicate folders on disk ----------------------------------------------------------------------
def test_checkpoints_of_one_moment_share_their_files_and_each_loads_alone(vocab_file, intent_slot_dir, tmp_path):
    steps = run_steps(vocab_file, intent_slot_dir)
    mh = two_task_trainer(vocab_file, intent_slot_dir, num_epochs=1)
    mh.set_saver(tmp_path / "run", save_steps=steps)  # step-N on the last step, beside final/
    mh.train(print_steps=0, eval_steps=steps)  # one evaluation, at the end: every best improves
    run = tmp_path / "run"
    last = run / f"step-{mh.global_step}"
    for name in (*WEIGHT_FILES, "training_state.pt", "tokenizer/tokenizer.json"):
        assert inode(run / "final" / name) == inode(last / name), name  # one copy of the final state
    for folder in ("best", "best-slot", "best-intent"):  # all improved at the one evaluation, at the end
        for name in WEIGHT_FILES:
            assert inode(run / folder / name) == inode(run / "final" / name)
        assert not (run / folder / "training_state.pt").exists()
    assert inode(run / "best" / "trainer_state.json") != inode(run / "final" / "trainer_state.json")
    records = None
    for folder in ("final", "best", "best-slot", last.name):  # every folder complete on its own
        predicted = mtl.load(run / folder).predict(TEXTS)
        records = records or predicted
        assert predicted == records
    shutil.rmtree(last)  # pruning one name leaves the other whole
    assert mtl.load(run / "final").predict(TEXTS) == records


def run_steps(vocab_file, intent_slot_dir) -> int:
    """The number of steps of the 1-epoch two-task run (so step-N falls on its last step)."""
    probe = two_task_trainer(vocab_file, intent_slot_dir, num_epochs=1)
    probe._plan()
    return probe.total_steps


def test_a_folder_replaced_later_never_changes_the_folders_it_shared_files_with(vocab_file, intent_slot_dir,
                                                                                tmp_path, monkeypatch):
    """best/ is rewritten at each better evaluation while step-N folders keep links to the bytes of older ones:
    each folder must still hold what was written into it (no file is ever written in place)."""
    written: dict[str, dict[str, str]] = {}
    real_write = mtl.saver.Saver.write

    def recording(self, name, model, snapshot, moment=None):
        folder = real_write(self, name, model, snapshot, moment)
        written[folder.name] = {n: digest(folder / n) for n in WEIGHT_FILES}
        return folder
    monkeypatch.setattr(mtl.saver.Saver, "write", recording)
    mh = two_task_trainer(vocab_file, intent_slot_dir, num_epochs=2)
    mh.set_saver(tmp_path / "run", save_steps=2, keep_last=0)
    mh.train(print_steps=0, eval_steps=2)
    folders = [p for p in (tmp_path / "run").iterdir() if (p / "heads.safetensors").is_file()]
    assert len(folders) > 8 and any(inode(p / WEIGHT_FILES[1]) == inode(tmp_path / "run" / "best" / WEIGHT_FILES[1])
                                    for p in folders if p.name.startswith("step-"))
    for folder in folders:
        assert {n: digest(folder / n) for n in WEIGHT_FILES} == written[folder.name], folder.name
    steps = sorted(int(p.name[5:]) for p in folders if p.name.startswith("step-"))
    assert len({digest(tmp_path / "run" / f"step-{s}" / WEIGHT_FILES[1]) for s in steps}) == len(steps)


def test_without_hard_links_the_files_are_copied(vocab_file, intent_slot_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(os, "link", refuse_links)
    mh = two_task_trainer(vocab_file, intent_slot_dir, num_epochs=1)
    mh.set_saver(tmp_path / "run", save_steps=run_steps(vocab_file, intent_slot_dir))
    mh.train(print_steps=0)
    final, last = tmp_path / "run" / "final", tmp_path / "run" / f"step-{mh.global_step}"
    assert inode(final / "heads.safetensors") != inode(last / "heads.safetensors")
    assert digest(final / "training_state.pt") == digest(last / "training_state.pt")
    assert mtl.load(final).predict(TEXTS[:2]) == mtl.load(last).predict(TEXTS[:2])


def test_a_two_task_run_folder_holds_one_copy_of_each_model(vocab_file, intent_slot_dir, tmp_path, monkeypatch):
    """The same run with links refused (copies) and allowed: links save the last step-N's model and run state
    (final/ holds them) and best-<task>/'s models (best/ holds them, improved at the same evaluation)."""
    steps, sizes = run_steps(vocab_file, intent_slot_dir), {}
    for mode in ("copies", "links"):
        with monkeypatch.context() as patch:
            if mode == "copies":
                patch.setattr(os, "link", refuse_links)
            mh = two_task_trainer(vocab_file, intent_slot_dir, num_epochs=1)
            mh.set_saver(tmp_path / mode, save_steps=steps)
            mh.train(print_steps=0, eval_steps=steps)
        sizes[mode] = disk_bytes(tmp_path / mode)
    final = tmp_path / "links" / "final"
    model = sum((final / name).stat().st_size for name in WEIGHT_FILES)
    assert sizes["copies"] - sizes["links"] >= 4 * model + (final / "training_state.pt").stat().st_size


def refuse_links(source, target):
    raise PermissionError(1, "Operation not permitted")


# ---- 11. the precision each run trained in --------------------------------------------------------------
def test_every_checkpoint_and_log_records_the_resolved_precision(config_file):
    out = config_file.parent / "out"
    edit(config_file, "trainer", precision="auto")
    assert main(["train", str(config_file)]) == 0
    resolved = resolve_precision("auto", resolve_device("cpu"))
    assert resolved in ("bf16", "fp32")
    for folder in ("final", "best", "step-4"):
        assert json.loads((out / folder / "trainer_state.json").read_text())["precision"] == resolved
    start = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert start["kind"] == "start" and start["precision"] == resolved and start["device"] == "cpu"
