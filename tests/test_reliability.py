"""Reliability: non-finite losses are skipped and counted (and stop a run that keeps producing them), no
checkpoint with NaN weights is written, and untrusted folders load no pickled code."""
import json
import logging
import math

import pytest
import torch

import mtl
from mtl.errors import MtlError
from mtl.components.savers import checkpoint
from conftest import tiny_bert
from tiny_runs import two_task_trainer


class FlakyClassify(mtl.head.Classify):
    """A Classify head whose training loss turns NaN (`nan_calls`) or whose gradient turns NaN with a finite
    loss (`nan_grad_calls`) on chosen training calls (1-based)."""

    def __init__(self, *args, nan_calls=(), nan_grad_calls=(), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.nan_calls, self.nan_grad_calls, self.calls = set(nan_calls), set(nan_grad_calls), 0

    def forward(self, batch, enc):
        out = super().forward(batch, enc)
        if "loss" in out and self.training:
            self.calls += 1
            if self.calls in self.nan_calls or "all" in self.nan_calls:
                out["loss"] = out["loss"] * float("nan")
            if self.calls in self.nan_grad_calls:  # sqrt'(0) is inf, times 0 is NaN; the value stays finite
                pooled = enc["pooled_output"]
                out["loss"] = out["loss"] + 0.0 * torch.sqrt(pooled - pooled).sum()
        return out


def flaky_trainer(vocab, data, **head_options) -> "mtl.MultiHeadTrainer":
    reader = mtl.reader.IntentSlotReader(vocab, 32).load_data(data / "train", batch_size=8)
    head = FlakyClassify(len(reader.label_names["intent_ids"]), 32, 0.0, label_field="intent_ids", **head_options)
    task = mtl.Trainer("intent", reader=reader, head=head)
    return mtl.MultiHeadTrainer([task], backbone=tiny_bert(), lr=3e-3, num_epochs=4, precision="fp32",
                                warmup_proportion=0.0, max_nonfinite_steps=3)


def all_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())


def test_nonfinite_steps_are_skipped_counted_and_logged(vocab_file, intent_slot_dir, tmp_path, caplog):
    mh = flaky_trainer(vocab_file, intent_slot_dir, nan_calls=[2, 5], nan_grad_calls=[6])
    mh.set_saver(tmp_path / "out", save_steps=4)
    seen = {}
    real_step = mh._train_step

    def step(task, batch):  # the weights before and after each step
        before = {k: v.clone() for k, v in mh.model.state_dict().items()}
        result = real_step(task, batch)
        seen[mh.global_step + 1] = not any(not torch.equal(before[k], v) for k, v in mh.model.state_dict().items())
        return result
    mh._train_step = step
    with caplog.at_level(logging.WARNING, logger="mtl.trainers.multi_head"):
        result = mh.train(print_steps=4)
    assert result["finished"] and result["steps"] == mh.total_steps == 12
    assert result["skipped_steps"] == {"intent": 3}
    assert [s for s, unchanged in seen.items() if unchanged] == [2, 5, 6]  # only those steps left weights as they were
    assert all_finite(mh.model)
    warnings = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(warnings) == 3 and "task 'intent', step 2: loss is nan" in warnings[0]
    assert "step 6: gradient norm is nan" in warnings[2]
    records = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert train[-1]["skipped_steps"] == {"intent": 3}
    assert all(math.isfinite(r["loss"]["intent"]) for r in train)  # skipped steps are left out of the means
    assert mh.scheduler.last_epoch == mh.global_step  # the schedule counts skipped steps too
    assert checkpoint.latest_checkpoint(tmp_path / "out").name == "final"


def test_nonfinite_loss_every_step_stops_after_max_in_a_row(vocab_file, intent_slot_dir, tmp_path):
    mh = flaky_trainer(vocab_file, intent_slot_dir, nan_calls=["all"])
    mh.set_saver(tmp_path / "out", save_steps=2)
    with pytest.raises(MtlError, match=r"task 'intent', step 3: loss is nan; 3 steps in a row .*max_nonfinite_steps"):
        mh.train(print_steps=0)
    assert mh.skipped_steps == {"intent": 3}
    assert all_finite(mh.model)
    assert checkpoint.latest_checkpoint(tmp_path / "out").name == "step-2"  # its weights are finite


def test_nan_weights_are_never_saved(vocab_file, intent_slot_dir, tmp_path):
    mh = two_task_trainer(vocab_file, intent_slot_dir)
    mh.set_saver(tmp_path / "out", save_steps=2)
    mh.train(print_steps=0, max_steps=2)
    folder = tmp_path / "out" / "step-2"
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    with torch.no_grad():
        mh.model.backbone.model.encoder.layer[0].output.dense.weight[0, 0] = float("nan")
    with pytest.raises(MtlError, match=r"not saved: 1 weight tensor.*encoder\.layer\.0\.output\.dense\.weight"):
        mh.save(folder)
    with pytest.raises(MtlError, match="NaN or infinite"):
        mh.saver.write(2, mh.model, mh._snapshot())  # the step-N path: step-2 stays as it was
    after = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")) == []


# ---- untrusted folders -----------------------------------------------------------------------------------
class Payload:
    """Unpickling this creates the marker file: what a malicious pickle could do, harmlessly."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def plant_pickle(path, marker) -> None:
    torch.save({"embeddings.word_embeddings.weight": Payload(marker)}, path)


def test_pickled_backbone_weights_are_refused(tmp_path):
    folder, marker = tmp_path / "model", tmp_path / "pwned"
    tiny_bert().model.config.save_pretrained(folder)
    plant_pickle(folder / "pytorch_model.bin", marker)
    with pytest.raises(MtlError, match=r"pytorch_model\.bin: refused.*safetensors"):
        mtl.backbone.BERT.from_pretrained(folder)
    with pytest.raises(MtlError, match=r"pytorch_model\.bin: refused"):
        tiny_bert().load_weights(folder)
    assert not marker.exists()


def test_untrusted_checkpoint_runs_no_code(vocab_file, intent_slot_dir, tmp_path):
    marker = tmp_path / "pwned"
    mh = two_task_trainer(vocab_file, intent_slot_dir)
    mh.set_saver(tmp_path / "out", save_steps=2)
    mh.train(print_steps=0, max_steps=2)
    folder = tmp_path / "out" / "step-2"
    (folder / "backbone" / "model.safetensors").unlink()
    plant_pickle(folder / "backbone" / "pytorch_model.bin", marker)
    with pytest.raises(MtlError, match=r"backbone/pytorch_model\.bin: refused"):
        mtl.load(folder)

    state = checkpoint.load_training_state(folder)
    state["optimizer"]["payload"] = Payload(marker)
    torch.save(state, folder / checkpoint.TRAINING)
    resumed = two_task_trainer(vocab_file, intent_slot_dir)
    with pytest.raises(MtlError, match=r"training_state\.pt: refused.*weights_only=True"):
        resumed.train(print_steps=0, resume_from=folder)
    assert not marker.exists()
