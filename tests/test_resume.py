"""Exact resume (a run killed after its step-K checkpoint and resumed ends with the same weights as one that
never stopped), atomic saves, and the training logs (TensorBoard + metrics.jsonl)."""
import json
import shutil

import pytest
import torch

import mtl
from mtl.components.savers import checkpoint
from mtl.components.savers.checkpoint import latest_checkpoint
from tiny_runs import TEXTS, same_records, two_task_trainer


class Killed(Exception):
    """Stands for the process dying mid-run."""


def kill_after(mh: "mtl.MultiHeadTrainer", steps: int) -> None:
    real_step = mh._train_step

    def step(task, batch):
        if mh.global_step >= steps:
            raise Killed
        return real_step(task, batch)
    mh._train_step = step


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different


@pytest.fixture
def uninterrupted(vocab_file, intent_slot_dir, tmp_path):
    mh = two_task_trainer(vocab_file, intent_slot_dir)
    mh.set_saver(tmp_path / "a", save_steps=5)
    result = mh.train(print_steps=3, eval_steps=4)
    return mh, result


def test_killed_and_resumed_run_ends_with_identical_weights(uninterrupted, vocab_file, intent_slot_dir, tmp_path):
    full, full_result = uninterrupted
    assert full.total_steps > 12 and full.tasks[0].reader.epoch >= 1  # the resume crosses epochs and tasks
    killed = two_task_trainer(vocab_file, intent_slot_dir)  # the same run as `uninterrupted` ...
    killed.set_saver(tmp_path / "b", save_steps=5)
    kill_after(killed, 12)  # ... but it dies 2 steps after its step-10 checkpoint
    with pytest.raises(Killed):
        killed.train(print_steps=3, eval_steps=4)
    folder = latest_checkpoint(tmp_path / "b")
    assert folder.name == "step-10"

    resumed = two_task_trainer(vocab_file, intent_slot_dir, init_seed=2)  # another random init
    resumed.set_saver(tmp_path / "b", save_steps=5)
    torch.manual_seed(1234)  # the caller's RNG: the run must take dropout's RNG from the checkpoint instead
    result = resumed.train(print_steps=3, eval_steps=4, resume_from=folder)

    assert resumed.global_step == full.global_step == full.total_steps
    assert_same_state(full.model.state_dict(), resumed.model.state_dict())
    assert [t.cur_train_step for t in resumed.tasks] == [t.cur_train_step for t in full.tasks]
    assert result["best_score"] == full_result["best_score"]
    assert full.optimizer.state_dict()["state"].keys() == resumed.optimizer.state_dict()["state"].keys()
    for a, b in zip(full.optimizer.state_dict()["state"].values(), resumed.optimizer.state_dict()["state"].values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    # the logs read as one run: what the killed run logged after step 10 was dropped
    logged = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    reference = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    strip = [r for r in logged if not (r["kind"] == "train" and r["step"] == 12)]  # lost loss sums at step 12
    assert [r["step"] for r in strip if r["kind"] == "eval"] == [r["step"] for r in reference if r["kind"] == "eval"]
    assert [r["metrics"] for r in strip if r["kind"] == "eval"] == \
        [r["metrics"] for r in reference if r["kind"] == "eval"]


def test_resume_refuses_a_checkpoint_of_another_run_plan(uninterrupted, vocab_file, intent_slot_dir, tmp_path):
    other = two_task_trainer(vocab_file, intent_slot_dir, num_epochs=3)
    with pytest.raises(mtl.MtlError, match="resume with the same config"):
        other.train(print_steps=0, resume_from=tmp_path / "a" / "step-5")
    exported = uninterrupted[0].export(tmp_path / "exported")
    with pytest.raises(mtl.MtlError, match="an exported model cannot"):
        two_task_trainer(vocab_file, intent_slot_dir).train(print_steps=0, resume_from=exported)


def test_resuming_a_finished_run_trains_nothing(uninterrupted, vocab_file, intent_slot_dir, tmp_path):
    full, _ = uninterrupted
    assert latest_checkpoint(tmp_path / "a").name == "final"
    again = two_task_trainer(vocab_file, intent_slot_dir, init_seed=3)
    result = again.train(print_steps=0, resume_from=tmp_path / "a" / "final")
    assert result["finished"] and again.global_step == full.global_step
    assert_same_state(full.model.state_dict(), again.model.state_dict())


def test_max_steps_leaves_a_checkpoint_to_resume(vocab_file, intent_slot_dir, tmp_path, uninterrupted):
    first = two_task_trainer(vocab_file, intent_slot_dir)
    first.set_saver(tmp_path / "c")  # no save_steps: the stop itself writes step-N
    result = first.train(print_steps=0, max_steps=7)
    assert not result["finished"] and sorted(p.name for p in (tmp_path / "c").glob("step-*")) == ["step-7"]
    assert not (tmp_path / "c" / "final").exists()
    second = two_task_trainer(vocab_file, intent_slot_dir, init_seed=5)
    second.set_saver(tmp_path / "c")
    second.train(print_steps=0, resume_from=tmp_path / "c" / "step-7")
    # eval_steps differ from the uninterrupted run, but evaluation draws no randomness: same weights
    assert_same_state(uninterrupted[0].model.state_dict(), second.model.state_dict())


def test_a_save_that_crashes_midway_leaves_the_previous_checkpoint(uninterrupted, tmp_path, monkeypatch):
    mh, _ = uninterrupted
    folder = mh.save(tmp_path / "keep" / "model")
    expected = mh.predict("slot", TEXTS)
    with torch.no_grad():  # the model moves on; the next save of the same name crashes halfway
        mh.model.heads["slot"]["slot"].classifier.bias.add_(1.0)
    real_write = checkpoint.write_checkpoint

    def crash(target, model, *args, **kwargs):
        model.backbone.save(target / checkpoint.BACKBONE)  # half written ...
        raise Killed  # ... when the process dies
    monkeypatch.setattr(checkpoint, "write_checkpoint", crash)
    with pytest.raises(Killed):
        mh.save(tmp_path / "keep" / "model")
    monkeypatch.setattr(checkpoint, "write_checkpoint", real_write)
    assert sorted(p.name for p in (tmp_path / "keep").iterdir()) == ["model"]  # no half folder anywhere
    loaded = mtl.load(folder, precision="fp32")
    assert same_records([{"text": r["text"], "slot": r["slot"]} for r in loaded.predict(TEXTS)], expected)


def test_a_crash_between_the_two_renames_is_repaired(tmp_path):
    (tmp_path / ".old-final").mkdir()
    (tmp_path / ".old-final" / "heads.safetensors").write_text("x")
    mtl.saver.Saver(tmp_path)
    assert (tmp_path / "final" / "heads.safetensors").is_file() and not (tmp_path / ".old-final").exists()


def test_logs_show_batches_per_task_against_target_share(uninterrupted, tmp_path):
    mh, _ = uninterrupted
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train][:3] == [3, 6, 9]
    last = train[-1]
    assert last["step"] == mh.global_step and sum(last["batches"].values()) == mh.global_step
    assert last["batches"] == {t.name: t.cur_train_step for t in mh.tasks}
    assert last["target_share"] == pytest.approx({"slot": 1 / 1.5, "intent": 0.5 / 1.5})
    assert set(train[0]["loss"]) == {"slot", "intent"} and last["lr"] >= 0
    assert {r["kind"] for r in records} == {"start", "train", "eval", "end"}
    assert records[0] == {"kind": "start", "step": 0, "total_steps": mh.total_steps, "precision": mh.precision,
                          "device": "cpu", "processes": 1}  # what precision="auto" resolved to
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path / "a" / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/slot", "loss/intent", "lr", "batches/slot", "share/slot/actual", "share/slot/target",
            "share/intent/target", "dev/slot/score", "dev/selection_score"} <= tags
    assert events.Scalars("share/intent/target")[-1].value == pytest.approx(1 / 3)
    shutil.rmtree(tmp_path / "a" / "tensorboard")


def test_train_again_after_max_steps_goes_on_in_process(uninterrupted, vocab_file, intent_slot_dir):
    mh = two_task_trainer(vocab_file, intent_slot_dir)
    assert not mh.train(print_steps=0, max_steps=6)["finished"] and mh.global_step == 6
    torch.manual_seed(99)  # the caller's RNG in between: not the run's
    assert mh.train(print_steps=0)["finished"]
    assert_same_state(uninterrupted[0].model.state_dict(), mh.model.state_dict())


def test_two_tasks_sharing_one_reader_object_are_refused(vocab_file, intent_slot_dir):
    mh = two_task_trainer(vocab_file, intent_slot_dir)
    mh.tasks[1].reader = mh.tasks[0].reader  # one position in the data for two tasks: no exact resume
    with pytest.raises(ValueError, match="'slot' and 'intent' share one reader object"):
        mh.train(print_steps=0)
