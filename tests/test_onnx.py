"""`mtl export DIR --onnx OUT`: one graph with the encoder and every head, dynamic batch and length axes, the
model folder beside it; parity with PyTorch (outputs within 1e-3 in fp32, identical decoded labels), int8
quantization, and the refusals (a head that cannot be a graph, a graph that points at outside files)."""
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

import mtl
from conftest import UTTERANCES, joint_trainer, tiny_bert, write_intent_slot
from tiny_runs import TEXTS, two_task_trainer
from mtl.cli import main
from mtl.errors import MtlError
from mtl.serving.onnx_export import export_onnx
from mtl.serving.onnx_runtime import OnnxGraph, load_onnx

FIXED = TEXTS + [row[0] for row in UTTERANCES] + ["", "unknownword booking flights", "jazz " * 20]


@pytest.fixture(scope="module")
def joint_model(tmp_path_factory, vocab_file) -> Path:
    """A joint intent + slot model with a CRF slot head (decoded by Viterbi from the graph's emissions)."""
    root = tmp_path_factory.mktemp("onnx")
    write_intent_slot(root / "data" / "train", UTTERANCES * 2)
    write_intent_slot(root / "data" / "dev", UTTERANCES)
    torch.manual_seed(0)
    trainer = joint_trainer(vocab_file, root / "data", use_crf=True, num_epochs=4, seed=1)
    trainer.train(print_steps=0)
    return trainer.export(root / "model")


def labels_of(records: list[dict]) -> list:
    """Everything decoded but the probabilities."""
    return [{k: {kk: vv for kk, vv in v.items() if kk not in ("prob", "probs")} if isinstance(v, dict) else v
             for k, v in record.items()} for record in records]


def test_export_writes_one_graph_beside_the_same_model_files(joint_model, tmp_path):
    assert main(["export", str(joint_model), "--onnx", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} == {p.name for p in joint_model.iterdir()} | {"model.onnx", "onnx.json"}
    for name in ("model.json", "labels.json", "heads.safetensors"):
        assert (out / name).read_bytes() == (joint_model / name).read_bytes()
    info = json.loads((out / "onnx.json").read_text())
    assert info["output_names"] == ["joint.intent.logits", "joint.slots.logits"]
    assert info["parity"]["fp32_max_abs_diff"] < 1e-3
    graph = onnx.load(str(out / "model.onnx"))
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.graph.input]
    assert dims == [["batch", "length"]] * len(dims)
    assert mtl.load(out).predict(TEXTS[:1])[0].keys() == {"text", "intent", "slots"}  # still a model folder


@torch.inference_mode()
def test_graph_outputs_match_pytorch_within_1e_3_at_any_batch_size_and_length(joint_model, tmp_path):
    export_onnx(joint_model, tmp_path / "out")
    predictor = mtl.load(joint_model, precision="fp32")
    session = onnxruntime.InferenceSession(str(tmp_path / "out" / "model.onnx"), providers=["CPUExecutionProvider"])
    reader = predictor.tasks[0].reader
    for size in (1, 4, len(FIXED)):
        prepared = reader.from_texts(FIXED[:size])
        batch = prepared.collate(prepared.features)
        feeds = {i.name: batch[i.name].numpy() for i in session.get_inputs()}
        intent, slots = session.run(["joint.intent.logits", "joint.slots.logits"], feeds)
        enc = predictor.model.backbone(batch)
        heads = predictor.tasks[0].heads
        assert np.abs(intent - heads["intent"](batch, enc)["logits"].numpy()).max() < 1e-3
        assert np.abs(slots - heads["slots"](batch, enc)["logits"].numpy()).max() < 1e-3


def test_onnx_predictor_decodes_the_same_labels(joint_model, tmp_path):
    export_onnx(joint_model, tmp_path / "out")
    ours = load_onnx(tmp_path / "out").predict(FIXED, batch_size=5)
    theirs = mtl.load(joint_model, precision="fp32").predict(FIXED, batch_size=5)
    assert labels_of(ours) == labels_of(theirs)
    probs = [(a["intent"]["prob"], b["intent"]["prob"]) for a, b in zip(ours, theirs)]
    assert max(abs(a - b) for a, b in probs) < 1e-3


def test_torch_decodes_on_one_thread_beside_onnxruntime_and_gets_its_count_back(joint_model, tmp_path,
                                                                                monkeypatch):
    export_onnx(joint_model, tmp_path / "out")
    predictor = load_onnx(tmp_path / "out")
    seen, forward = [], OnnxGraph.forward
    monkeypatch.setattr(OnnxGraph, "forward", lambda self, batch: seen.append(torch.get_num_threads())
                        or forward(self, batch))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert len(predictor.predict(FIXED, batch_size=4)) == len(FIXED)
        assert seen and set(seen) == {1} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_two_tasks_share_one_graph_run(vocab_file, intent_slot_dir, tmp_path):
    trainer = two_task_trainer(vocab_file, intent_slot_dir, num_epochs=1)
    trainer.train(print_steps=0)
    folder = trainer.export(tmp_path / "model")
    info = export_onnx(folder, tmp_path / "out")
    assert info["output_names"] == ["slot.slot.logits", "intent.intent.logits"]
    predictor = load_onnx(tmp_path / "out")
    runs = []
    predictor.model.backbone.register_forward_hook(lambda *args: runs.append(1))
    ours = predictor.predict(TEXTS)
    assert len(runs) == 1  # one graph run feeds both tasks' heads
    assert labels_of(ours) == labels_of(mtl.load(folder, precision="fp32").predict(TEXTS))


def test_int8_quantization_runs_smaller_and_records_its_change(joint_model, tmp_path):
    fp32 = export_onnx(joint_model, tmp_path / "fp32")
    int8 = export_onnx(joint_model, tmp_path / "int8", quantize="int8")
    assert int8["quantize"] == "int8" and "int8_max_abs_diff" in int8["parity"]
    assert (tmp_path / "int8" / "model.onnx").stat().st_size < (tmp_path / "fp32" / "model.onnx").stat().st_size
    assert fp32["parity"]["fp32_max_abs_diff"] < 1e-3
    records = load_onnx(tmp_path / "int8").predict(FIXED)
    assert len(records) == len(FIXED) and all(r.keys() == {"text", "intent", "slots"} for r in records)


class MetaReadingHead(mtl.head.Classify):
    """Reads a non-tensor field of the batch in forward: no graph can take it as an input."""

    def forward(self, batch: dict, enc: dict) -> dict:
        assert len(batch["meta"]) == enc["pooled_output"].size(0)
        return super().forward(batch, enc)


def test_refusals_leave_nothing_behind(joint_model, vocab_file, intent_slot_dir, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(MtlError, match="not an empty folder"):
        export_onnx(joint_model, tmp_path / "full")
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    reader = mtl.reader.IntentSlotReader(vocab_file, 32).load_data(intent_slot_dir / "train", batch_size=8)
    head = MetaReadingHead(4, 32, 0.0, label_field="intent_ids")
    trainer = mtl.MultiHeadTrainer([mtl.Trainer("intent", reader=reader, head=head)], backbone=tiny_bert(),
                                   precision="fp32")
    folder = trainer.export(tmp_path / "meta_model")
    with pytest.raises(MtlError, match=r"reads the batch's \['meta'\]"):
        export_onnx(folder, tmp_path / "meta_out", allowed_modules=[__name__])
    assert not (tmp_path / "meta_out").exists() and not list(tmp_path.glob(".tmp-*"))


def test_a_graph_pointing_at_external_files_is_refused(joint_model, tmp_path):
    export_onnx(joint_model, tmp_path / "out")
    graph = onnx.load(str(tmp_path / "out" / "model.onnx"))
    onnx.save_model(graph, str(tmp_path / "out" / "model.onnx"), save_as_external_data=True,
                    location="weights.bin", size_threshold=0)
    with pytest.raises(MtlError, match="external files"):
        load_onnx(tmp_path / "out")


def test_reading_comprehension_windows_merge_the_same_from_the_graph(vocab_file, tmp_path):
    """MRC cuts a context into windows: the graph's start/end logits go through the head's own merge."""
    from test_mrc import ITEMS, tiny_mrc_trainer
    trainer = tiny_mrc_trainer(vocab_file, tmp_path)
    folder = trainer.export(tmp_path / "model")
    assert export_onnx(folder, tmp_path / "out")["output_names"] == ["mrc.mrc.end_logits", "mrc.mrc.start_logits"]
    questions = [{"question": q, "context": c} for _, q, c, _ in ITEMS]
    ours, theirs = load_onnx(tmp_path / "out").predict(questions), mtl.load(folder, precision="fp32").predict(questions)
    assert [r["mrc"]["answer"] for r in ours] == [r["mrc"]["answer"] for r in theirs]
