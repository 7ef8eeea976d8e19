"""Best-model selection during training, with a scripted metric sequence: which step's weights end up in
best/ and best-<task>/, and early stopping after `patience` evaluations without gain."""
import json
import math

import pytest
import torch
from safetensors.torch import load_file

import mtl
from tiny_runs import two_task_trainer

# evaluation i (at step 2 * (i + 1)): the slot task's chosen metric, the intent task's score
SLOT_F1 = [10.0, 30.0, 20.0, 28.0, 5.0, 5.0, 5.0, 5.0]
INTENT = [50.0, 40.0, 60.0, 58.0, 0.0, 0.0, 0.0, 0.0]
# equal weights: 30, 35, 40, 43, 2.5, ... -> best at step 8; slot alone best at step 4, intent at step 6


def scripted(mh: "mtl.MultiHeadTrainer", snapshots: dict):
    """An `evaluate` that returns the scripted metrics and keeps the heads' weights at each evaluation."""
    def evaluate(readers=None):
        index = len(snapshots)
        snapshots[mh.global_step] = {k: v.detach().clone() for k, v in mh.model.heads.state_dict().items()}
        return {"slot": {"slot.f1": SLOT_F1[index], "score": 99.0 - index},  # `score` would pick step 2
                "intent": {"intent.accuracy": INTENT[index], "score": INTENT[index]}}
    return evaluate


def saved_step(folder) -> int:
    return json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))["global_step"]


def assert_heads_equal(folder, snapshot: dict) -> None:
    saved = load_file(str(folder / "heads.safetensors"))
    assert saved.keys() == snapshot.keys()
    assert all(torch.equal(saved[k], snapshot[k]) for k in saved)


def test_best_overall_and_per_task_follow_the_chosen_metrics(vocab_file, intent_slot_dir, tmp_path, monkeypatch):
    mh = two_task_trainer(vocab_file, intent_slot_dir, num_epochs=1)  # 6 + 3 budget steps
    snapshots: dict = {}
    monkeypatch.setattr(mh, "evaluate", scripted(mh, snapshots))
    mh.set_saver(tmp_path / "out", keep_last=1)
    selector = mtl.Selector(metrics={"slot": "slot.f1"})
    result = mh.train(print_steps=0, eval_steps=2, selector=selector)
    assert mh.total_steps >= 8 and [entry["step"] for entry in result["history"]][:4] == [2, 4, 6, 8]
    out = tmp_path / "out"
    assert saved_step(out / "best") == 8 and result["best_score"] == pytest.approx(43.0)
    assert saved_step(out / "best-slot") == 4
    assert saved_step(out / "best-intent") == 6
    for name, step in (("best", 8), ("best-slot", 4), ("best-intent", 6)):
        assert_heads_equal(out / name, snapshots[step])
    assert not list(out.glob(".tmp-*")) and not list(out.glob(".old-*"))
    mh.load_best()
    assert all(torch.equal(v, snapshots[8][k]) for k, v in mh.model.heads.state_dict().items())


def test_weights_change_what_best_means(vocab_file, intent_slot_dir, tmp_path, monkeypatch):
    mh = two_task_trainer(vocab_file, intent_slot_dir, num_epochs=1)
    snapshots: dict = {}
    monkeypatch.setattr(mh, "evaluate", scripted(mh, snapshots))
    mh.set_saver(tmp_path / "out")
    mh.train(print_steps=0, eval_steps=2, selector=mtl.Selector({"slot": "slot.f1"}, {"slot": 1.0, "intent": 0.0}))
    assert saved_step(tmp_path / "out" / "best") == 4  # intent's weight 0: slot alone decides


def test_early_stopping_after_patience_evaluations_without_gain(vocab_file, intent_slot_dir, tmp_path, monkeypatch):
    mh = two_task_trainer(vocab_file, intent_slot_dir, num_epochs=2)
    snapshots: dict = {}
    monkeypatch.setattr(mh, "evaluate", scripted(mh, snapshots))
    mh.set_saver(tmp_path / "out")
    result = mh.train(print_steps=0, eval_steps=2, selector=mtl.Selector({"slot": "slot.f1"},
                                                                         early_stopping_patience=2))
    assert mh.total_steps > 12
    assert result["stopped_early"] and mh.global_step == 12  # best at 8, no gain at 10 and 12
    assert saved_step(tmp_path / "out" / "final") == 12 and saved_step(tmp_path / "out" / "best") == 8
    records = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [2, 4, 6, 8, 10, 12]
    assert [r["best"] for r in evals] == [True, True, True, True, False, False] and evals[-1]["early_stop"]
    assert records[-1] == {"kind": "end", "step": 12, "best_score": 43.0, "stopped_early": True, "finished": True}


def test_selector_rules():
    selector = mtl.Selector(metrics={"a": "a.f1"}, weights={"a": 3.0}, early_stopping_patience=1)
    verdict = selector.update(1, {"a": {"a.f1": 10.0, "score": 0.0}, "b": {"score": 50.0}})
    assert verdict.score == pytest.approx((3 * 10 + 50) / 4) and verdict.improved
    assert verdict.improved_tasks == ["a", "b"] and not verdict.stop
    verdict = selector.update(2, {"a": {"a.f1": 11.0, "score": 0.0}, "b": {"score": 40.0}})
    assert verdict.improved_tasks == ["a"] and not verdict.improved and verdict.stop and selector.stopped
    restored = mtl.Selector()
    restored.load_state_dict(selector.state_dict())
    assert restored.state_dict() == selector.state_dict() and restored.best_step == 1
    with pytest.raises(mtl.MtlError, match="'a.f1' is not among its dev metrics"):
        mtl.Selector(metrics={"a": "a.f1"}).update(1, {"a": {"score": 1.0}})
    with pytest.raises(ValueError, match="unknown tasks"):
        mtl.Selector(weights={"c": 1.0}).check_tasks(["a", "b"])
    assert math.isinf(mtl.Selector().best)
