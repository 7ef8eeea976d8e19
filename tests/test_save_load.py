"""Checkpoints: save, load in a new process, identical predictions; HF-loadable backbone; keep_last."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

import mtl
from conftest import joint_heads, joint_trainer, tiny_bert

TEXTS = ["book a flight from boston to new york", "play some jazz", "will it rain in denver today",
         "booking flights to san francisco", "set an alarm for six am"]

CHILD = """
import json, sys
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
torch.manual_seed(12345)  # a different random init than the parent's: weights must come from the checkpoint
from pathlib import Path
from conftest import joint_heads, joint_trainer, tiny_bert
mh = joint_trainer(Path({vocab!r}), Path({data!r}))
texts = {texts!r}
before = mh.predict("joint", texts)
mh.load_checkpoint({folder!r})
print(json.dumps({{"before": before, "after": mh.predict("joint", texts)}}))
"""


def run_child(tmp_path: Path, **values) -> dict:
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=str(Path(__file__).parent), texts=TEXTS, **values), encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_same_records(ours: list[dict], theirs: list[dict]) -> None:
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a["text"] == b["text"]
        assert a["intent"]["label"] == b["intent"]["label"]
        assert a["intent"]["prob"] == pytest.approx(b["intent"]["prob"], abs=2e-6)
        assert a["slots"] == b["slots"]


@pytest.fixture
def trained(vocab_file, intent_slot_dir):
    mh = joint_trainer(vocab_file, intent_slot_dir, num_epochs=8, seed=1)
    mh.train(print_steps=0)
    return mh


def test_save_then_load_in_new_process_gives_identical_predictions(trained, vocab_file, intent_slot_dir, tmp_path):
    folder = trained.save(tmp_path / "ckpt")
    ours = trained.predict("joint", TEXTS)
    child = run_child(tmp_path, vocab=str(vocab_file), data=str(intent_slot_dir), folder=str(folder))
    assert_same_records(ours, child["after"])
    # the child's own random init predicted differently: the match comes from the checkpoint
    assert [r["intent"]["prob"] for r in child["before"]] != [r["intent"]["prob"] for r in ours]


def test_load_checkpoint_in_process_into_fresh_components(trained, vocab_file, intent_slot_dir, tmp_path):
    folder = trained.save(tmp_path / "ckpt")
    torch.manual_seed(99)
    fresh = joint_trainer(vocab_file, intent_slot_dir)
    fresh.load_checkpoint(folder)
    ours, theirs = trained.model.state_dict(), fresh.model.state_dict()
    assert ours.keys() == theirs.keys()
    for name, value in ours.items():
        assert torch.equal(value, theirs[name]), name


def test_checkpoint_folder_layout_and_plain_transformers_load(trained, tmp_path):
    folder = trained.save(tmp_path / "ckpt")
    assert (folder / "heads.safetensors").is_file()
    labels = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
    assert labels["joint"] == trained.tasks[0].reader.label_names
    plain = AutoModel.from_pretrained(str(folder / "backbone")).eval()
    batch = next(trained.tasks[0].dev_reader.iter_once())
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    trained.model.eval()
    with torch.no_grad():
        expected = trained.backbone(batch)["sequence_output"]
        got = plain(**inputs).last_hidden_state
    assert torch.allclose(got, expected, atol=1e-5)
    assert not list(tmp_path.glob(".tmp-*"))


def test_load_checkpoint_with_mismatched_heads_fails_clearly(trained, vocab_file, intent_slot_dir, tmp_path):
    folder = trained.save(tmp_path / "ckpt")
    with_crf = joint_trainer(vocab_file, intent_slot_dir, use_crf=True)
    with pytest.raises(ValueError, match="crf"):
        with_crf.load_checkpoint(folder)
    with pytest.raises(FileNotFoundError):
        with_crf.load_checkpoint(tmp_path / "nowhere")


def test_keep_last_keeps_k_step_folders_plus_final(vocab_file, intent_slot_dir, tmp_path):
    mh = joint_trainer(vocab_file, intent_slot_dir, num_epochs=3)  # 24 // 8 * 3 = 9 steps
    mh.set_saver(tmp_path / "out", save_steps=2, keep_last=2)
    mh.train(print_steps=0)
    assert mh.global_step == 9
    saved = sorted(p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(("step-", "final", ".")))
    assert saved == ["final", "step-6", "step-8"]
    state = json.loads((tmp_path / "out" / "step-8" / "trainer_state.json").read_text(encoding="utf-8"))
    assert state["global_step"] == 8
    final = json.loads((tmp_path / "out" / "final" / "trainer_state.json").read_text(encoding="utf-8"))
    assert final["global_step"] == 9


def test_palm_set_saver_then_final_checkpoint_loads(vocab_file, intent_slot_dir, tmp_path):
    mh = joint_trainer(vocab_file, intent_slot_dir, num_epochs=2)
    mh.set_saver(str(tmp_path / "outputs"), save_steps=100)
    mh.train(print_steps=0)
    ours = mh.predict("joint", TEXTS)
    torch.manual_seed(5)
    other = joint_trainer(vocab_file, intent_slot_dir)
    other.load_checkpoint(tmp_path / "outputs" / "final")
    assert_same_records(ours, other.predict("joint", TEXTS))


def test_save_before_training_writes_a_loadable_checkpoint(vocab_file, intent_slot_dir, tmp_path):
    mh = joint_trainer(vocab_file, intent_slot_dir)
    folder = mh.save(tmp_path / "untrained")
    other = joint_trainer(vocab_file, intent_slot_dir)
    other.load_checkpoint(folder)
    assert_same_records(mh.predict("joint", TEXTS), other.predict("joint", TEXTS))


def test_label_map_that_disagrees_with_the_checkpoint_is_refused(trained, vocab_file, intent_slot_dir, tmp_path):
    folder = trained.save(tmp_path / "ckpt")
    names = trained.tasks[0].reader.label_names
    reader = mtl.reader.IntentSlotReader(vocab_file, 32, intent_labels=names["intent_ids"][::-1],
                                         slot_labels=names["slot_ids"]).load_data(intent_slot_dir / "train")
    other = mtl.MultiHeadTrainer([mtl.Trainer("joint", reader=reader, head=joint_heads(reader))],
                                 backbone=tiny_bert(), precision="fp32")
    with pytest.raises(mtl.MtlError, match=r"labels\.json: task 'joint' intent_ids: the checkpoint's label map "
                                           r"differs from the reader's at id 0"):
        other.load_checkpoint(folder)


def test_the_saver_writes_and_reads_from_plain_inputs(vocab_file, intent_slot_dir, tmp_path):
    """The Saver never sees a trainer: a model and a Snapshot are what it writes; in memory (a trainer's until
    set_saver) it keeps the best model as a copy of its weights."""
    mh = joint_trainer(vocab_file, intent_slot_dir)  # 3 steps
    mh.train(print_steps=0)
    model, snapshot = mh.model, mh._snapshot()
    assert isinstance(snapshot, mtl.saver.Snapshot) and snapshot.run_state["global_step"] == 3
    saver = mtl.saver.Saver(tmp_path / "run", save_steps=2, keep_last=2)
    for step in (2, 4, 6):
        saver.write(step, model, snapshot)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["step-4", "step-6"]
    state = saver.load_run_state(tmp_path / "run" / "step-6", ["joint"], mh.total_steps)
    assert state["global_step"] == 3 and saver.best is None  # no best/ in this run
    with pytest.raises(mtl.MtlError, match="resume with the same config"):
        saver.load_run_state(tmp_path / "run" / "step-6", ["joint"], mh.total_steps + 1)

    memory = mtl.saver.Saver.in_memory()
    assert not memory.on_disk and not memory.should_save(2)
    with pytest.raises(RuntimeError, match="no best model"):
        memory.load_best(model)
    memory.keep_best(model, snapshot)
    kept = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with torch.no_grad():
        model.heads["joint"]["intent"].classifier.bias.add_(1.0)
    memory.load_best(model)
    assert all(torch.equal(tensor, model.state_dict()[name]) for name, tensor in kept.items())
