"""Per-task LoRA adapters over one frozen encoder: only adapters and heads train, each task runs its own
adapter, a folder saves them in PEFT's layout beside the untouched base, loads back to the same predictions,
and is refused over another base."""
import json
import shutil
from pathlib import Path

import pytest
import torch

import mtl
from conftest import UTTERANCES, joint_heads, tiny_bert, write_intent_slot
from mtl.components.backbones.adapters import LoRA, base_state, resolve_targets
from mtl.errors import MtlError


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("adapter-data")
    write_intent_slot(root / "train", UTTERANCES * 2)
    return root


def two_tasks(vocab: Path, data: Path, adapters: tuple) -> list["mtl.Trainer"]:
    """An intent task and a slot task on the same data, each with the adapter given (or None)."""
    readers = [mtl.reader.IntentSlotReader(vocab, 32, seed=seed).load_data(data / "train", batch_size=8)
               for seed in (1, 2)]
    heads = joint_heads(readers[0])
    return [mtl.Trainer("intent", reader=readers[0], head=heads["intent"], adapter=adapters[0]),
            mtl.Trainer("slots", reader=readers[1], head=heads["slots"], adapter=adapters[1])]


def trained(vocab: Path, data: Path, adapters: tuple, epochs: int = 4) -> "mtl.MultiHeadTrainer":
    torch.manual_seed(0)
    trainer = mtl.MultiHeadTrainer(two_tasks(vocab, data, adapters), backbone=tiny_bert(), lr=5e-3,
                                   num_epochs=epochs, precision="fp32", seed=1)
    trainer.train(print_steps=0)
    return trainer


def test_auto_targets_are_the_attention_query_and_value_of_each_architecture():
    assert resolve_targets(tiny_bert().model, LoRA()) == ["query", "value"]
    mpnet = mtl.backbone.Encoder.from_config({"model_type": "mpnet", "vocab_size": 99, "hidden_size": 32,
                                             "num_hidden_layers": 1, "num_attention_heads": 4,
                                             "intermediate_size": 37})
    assert resolve_targets(mpnet.model, LoRA()) == ["q", "v"]
    with pytest.raises(MtlError, match="name no linear layer"):
        resolve_targets(tiny_bert().model, LoRA(target_modules=("query", "nonsense")))
    with pytest.raises(ValueError, match="rank"):
        LoRA(r=0)


def test_a_dotted_target_adapts_only_the_layers_whose_path_ends_with_it():
    encoder = tiny_bert()
    lora = LoRA(r=2, target_modules=["query", "intermediate.dense"])
    assert resolve_targets(encoder.model, lora) == ["query", "intermediate.dense"]
    encoder.add_adapter("a", lora)
    adapted = {name.removesuffix(".lora_A.a") for name, _ in encoder.model.named_modules()
               if name.endswith(".lora_A.a")}
    layers = encoder.model.config.num_hidden_layers
    assert adapted == {f"encoder.layer.{i}.{part}" for i in range(layers)
                       for part in ("attention.self.query", "intermediate.dense")}
    with pytest.raises(MtlError, match="name no linear layer"):
        resolve_targets(tiny_bert().model, LoRA(target_modules=["attention.dense"]))


def test_only_adapters_and_heads_train_and_the_base_stays_bit_identical(vocab_file, data):
    torch.manual_seed(0)
    encoder = tiny_bert()
    before = {k: v.clone() for k, v in encoder.model.state_dict().items()}
    trainer = mtl.MultiHeadTrainer(two_tasks(vocab_file, data, (LoRA(r=4), {"r": 2})), backbone=encoder, lr=5e-3,
                                   num_epochs=4, precision="fp32", seed=1)
    trainer.train(print_steps=0)
    assert all(torch.equal(before[k], v) for k, v in base_state(encoder.model).items())
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n or n.startswith("heads.") for n in trainable)
    lora_a = dict(trainer.model.named_parameters())
    moved = [n for n in trainable if ".lora_B." in n and float(lora_a[n].detach().abs().sum()) > 0]  # B starts at zero
    assert any(".intent." in n for n in moved) and any(".slots." in n for n in moved)  # each task its own


def test_each_task_runs_its_own_adapter():
    encoder = tiny_bert()
    encoder.add_adapter("a", LoRA(r=2, dropout=0.0))
    encoder.add_adapter("b", LoRA(r=2, dropout=0.0))
    with torch.no_grad():
        for name, param in encoder.named_parameters():
            if ".lora_B.a." in name:
                param.normal_()
    batch = {"input_ids": torch.tensor([[2, 7, 9, 3]]), "attention_mask": torch.ones(1, 4, dtype=torch.long),
             "token_type_ids": torch.zeros(1, 4, dtype=torch.long)}
    encoder.eval()
    outputs = {}
    for name in ("a", "b", None):
        encoder.use_adapter(name)
        outputs[name] = encoder(batch)["sequence_output"]
    assert not torch.allclose(outputs["a"], outputs[None])
    assert torch.allclose(outputs["b"], outputs[None])  # b's update is still zero: the base's outputs


def test_a_task_without_adapter_fine_tunes_the_encoder_beneath_the_others(vocab_file, data):
    trainer = trained(vocab_file, data, (LoRA(r=2), None), epochs=1)
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert any("base_layer" in n for n in trainable) and any(".lora_" in n for n in trainable)


def test_a_folder_with_adapters_loads_back_to_the_same_predictions(vocab_file, data, tmp_path):
    trainer = trained(vocab_file, data, (LoRA(r=4), LoRA(r=2)))
    folder = trainer.export(tmp_path / "model")
    spec = json.loads((folder / "model.json").read_text())
    assert sorted(spec["backbone"]["adapters"]) == ["intent", "slots"]
    assert (folder / "adapters" / "intent" / "adapter_model.safetensors").is_file()
    texts = [row[0] for row in UTTERANCES]
    expected = trainer.predict("intent", texts), trainer.predict("slots", texts)
    loaded = mtl.load(folder, precision="fp32").predict(texts)
    assert [r["intent"]["label"] for r in loaded] == [r["intent"]["label"] for r in expected[0]]
    assert [r["slots"]["tags"] for r in loaded] == [r["slots"]["tags"] for r in expected[1]]
    plain = mtl.backbone.BERT.from_pretrained(folder / "backbone")  # backbone/ is the untouched base for HF
    assert all(torch.equal(v, base_state(trainer.backbone.model)[k]) for k, v in plain.model.state_dict().items())


def test_peft_loads_the_saved_adapter_onto_the_base(vocab_file, data, tmp_path):
    from peft import PeftModel
    trainer = trained(vocab_file, data, (LoRA(r=4, dropout=0.0), None), epochs=2)
    folder = trainer.export(tmp_path / "model")
    theirs = PeftModel.from_pretrained(mtl.backbone.BERT.from_pretrained(folder / "backbone").model,
                                       str(folder / "adapters" / "intent")).eval()
    ours = mtl.load(folder, precision="fp32").model.backbone
    ours.use_adapter("intent")
    ids = torch.tensor([[2, 7, 9, 11, 3]])
    expected = theirs(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    got = ours({"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)})
    assert torch.allclose(got["sequence_output"], expected, atol=1e-5)


def test_adapters_are_refused_over_another_base(vocab_file, data, tmp_path):
    folder = trained(vocab_file, data, (LoRA(r=2), LoRA(r=2)), epochs=1).export(tmp_path / "model")
    other = tiny_bert()  # other random weights in the base's place
    shutil.rmtree(folder / "backbone")
    other.save(folder / "backbone")
    with pytest.raises(MtlError, match="not the base the adapters"):
        mtl.load(folder, precision="fp32")
    spec = json.loads((folder / "model.json").read_text())
    spec["backbone"]["adapters"]["intent"]["folder"] = "../elsewhere"
    (folder / "model.json").write_text(json.dumps(spec))
    with pytest.raises(MtlError, match="backbone.adapters.intent.folder"):
        mtl.load(folder, precision="fp32")


def test_an_adapter_run_resumes_exactly(vocab_file, data, tmp_path):
    def run(folder: Path, max_steps: int | None, resume: Path | None) -> dict:
        torch.manual_seed(0)
        trainer = mtl.MultiHeadTrainer(two_tasks(vocab_file, data, (LoRA(r=2), LoRA(r=4))), backbone=tiny_bert(),
                                       lr=5e-3, num_epochs=2, precision="fp32", seed=1)
        trainer.set_saver(folder, save_steps=2)
        trainer.train(print_steps=0, max_steps=max_steps, resume_from=resume)
        return {k: v.clone() for k, v in trainer.model.state_dict().items()}
    whole = run(tmp_path / "whole", None, None)
    run(tmp_path / "halves", 4, None)
    resumed = run(tmp_path / "halves", None, tmp_path / "halves" / "step-4")
    assert any(".lora_B.slots." in k for k in whole) and all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_a_config_gives_a_task_its_adapter(vocab_file, tmp_path):
    from mtl.cli import main
    from mtl.config import validate_config
    from tiny_runs import tiny_config, write_yaml
    data = write_intent_slot(tmp_path / "data" / "train", UTTERANCES * 2).parent
    write_intent_slot(data / "dev", UTTERANCES)
    config = tiny_config(vocab_file, data, str(tmp_path / "run"))
    config["tasks"][0]["adapter"] = {"r": 4, "alpha": 8, "target_modules": ["query", "value"]}
    assert main(["train", str(write_yaml(tmp_path / "run.yaml", config)), "--threads", "1"]) == 0
    spec = json.loads((tmp_path / "run" / "final" / "model.json").read_text())
    assert spec["backbone"]["adapters"]["joint"]["lora"]["r"] == 4
    config["tasks"][0]["adapter"] = {"rank": 4}
    with pytest.raises(Exception, match=r"tasks\[0\]\.adapter\.rank"):
        validate_config(config, tmp_path, check_resources=False)


def test_a_folder_of_adapters_alone_goes_back_over_its_base(vocab_file, data, tmp_path):
    trainer = trained(vocab_file, data, (LoRA(r=4), LoRA(r=2)))
    full = trainer.export(tmp_path / "full")
    small = trainer.export(tmp_path / "small", base=False)
    assert not (small / "backbone" / "model.safetensors").exists()
    assert sum(f.stat().st_size for f in small.rglob("*") if f.is_file()) < \
        sum(f.stat().st_size for f in full.rglob("*") if f.is_file()) / 2
    with pytest.raises(MtlError, match="give the base encoder"):
        mtl.load(small)
    texts = [row[0] for row in UTTERANCES]
    expected = mtl.load(full, precision="fp32").predict(texts)
    assert mtl.load(small, precision="fp32", base=full).predict(texts) == expected  # an mtl folder as the base
    assert mtl.load(small, precision="fp32", base=full / "backbone").predict(texts) == expected  # an HF folder
    other = tmp_path / "other"
    tiny_bert().save(other)
    with pytest.raises(MtlError, match="not the base the adapters"):
        mtl.load(small, base=other)


def test_export_without_base_needs_an_adapter_for_every_task(vocab_file, data, tmp_path):
    trainer = trained(vocab_file, data, (LoRA(r=2), None), epochs=1)
    with pytest.raises(MtlError, match=r"tasks \['slots'\] have no adapter"):
        trainer.export(tmp_path / "small", base=False)


def test_a_new_adapter_task_is_served_beside_a_deployed_model_over_one_base(vocab_file, data, tmp_path):
    deployed = trained(vocab_file, data, (LoRA(r=4), LoRA(r=2))).export(tmp_path / "deployed")
    reader = mtl.reader.IntentSlotReader(vocab_file, 32, seed=3).load_data(data / "train", batch_size=8)
    base = mtl.backbone.BERT.from_pretrained(deployed / "backbone")  # the deployed model's base, untouched
    later = mtl.Trainer("intent_v2", reader=reader, head=joint_heads(reader)["intent"], adapter=LoRA(r=8))
    trainer = mtl.MultiHeadTrainer([later], backbone=base, lr=5e-3, num_epochs=3, precision="fp32", seed=4)
    trainer.train(print_steps=0)
    added = trainer.export(tmp_path / "intent_v2", base=False)
    texts = [row[0] for row in UTTERANCES]
    served = mtl.Predictor.from_folders([deployed, added], precision="fp32")
    together = served.predict(texts)
    alone = mtl.load(deployed, precision="fp32").predict(texts)
    assert [{k: r[k] for k in ("intent", "slots")} for r in together] == [{k: r[k] for k in ("intent", "slots")}
                                                                          for r in alone]
    assert [r["intent_v2"] for r in together] == [r["intent_v2"] for r in trainer.predict("intent_v2", texts)]
    assert sum(p.numel() for p in served.model.backbone.parameters()) < 1.2 * sum(
        p.numel() for p in base.model.parameters())  # one base, not three encoders
    with pytest.raises(MtlError, match="same task twice"):
        mtl.Predictor.from_folders([deployed, deployed])


def test_one_adapter_task_merges_into_a_plain_folder_that_exports_to_onnx(vocab_file, data, tmp_path):
    from mtl.serving.merge import merge_adapter
    from mtl.serving.onnx_export import export_onnx
    from mtl.serving.onnx_runtime import load_onnx
    trainer = trained(vocab_file, data, (LoRA(r=4, dropout=0.0), LoRA(r=2, dropout=0.0)))
    small = trainer.export(tmp_path / "small", base=False)
    full = trainer.export(tmp_path / "full")
    merged = merge_adapter(small, "slots", tmp_path / "slots", base=full)
    assert not (merged / "adapters").exists()
    texts = [row[0] for row in UTTERANCES]
    expected = [r["slots"] for r in mtl.load(full, precision="fp32").predict(texts)]
    plain = mtl.load(merged, precision="fp32")
    assert plain.model.backbone.adapters == {} and [t.name for t in plain.tasks] == ["slots"]
    assert [r["slots"]["tags"] for r in plain.predict(texts)] == [r["tags"] for r in expected]
    export_onnx(merged, tmp_path / "slots-onnx")
    onnx = load_onnx(tmp_path / "slots-onnx")
    assert [r["slots"]["tags"] for r in onnx.predict(texts)] == [r["tags"] for r in expected]
    with pytest.raises(MtlError, match="has no adapter here"):
        merge_adapter(full, "nope", tmp_path / "nope")


def test_onnx_export_of_adapter_tasks_names_the_task_to_fold_in(vocab_file, data, tmp_path):
    from mtl.serving.onnx_export import export_onnx
    from mtl.serving.onnx_runtime import load_onnx
    trainer = trained(vocab_file, data, (LoRA(r=4, dropout=0.0), LoRA(r=2, dropout=0.0)), epochs=2)
    folder = trainer.export(tmp_path / "model")
    with pytest.raises(MtlError, match="--task NAME"):
        export_onnx(folder, tmp_path / "onnx")
    export_onnx(folder, tmp_path / "intent-onnx", task="intent")
    texts = [row[0] for row in UTTERANCES]
    assert [r["intent"]["label"] for r in load_onnx(tmp_path / "intent-onnx").predict(texts)] == \
        [r["intent"]["label"] for r in mtl.load(folder, precision="fp32").predict(texts)]


def test_mtl_serve_hosts_a_deployed_model_and_a_later_adapter_task_over_one_base(vocab_file, data, tmp_path):
    import httpx
    from mtl.serving.process import ServerProcess, serve_command
    deployed = trained(vocab_file, data, (LoRA(r=4), LoRA(r=2))).export(tmp_path / "deployed")
    reader = mtl.reader.IntentSlotReader(vocab_file, 32, seed=3).load_data(data / "train", batch_size=8)
    later = mtl.Trainer("intent_v2", reader=reader, head=joint_heads(reader)["intent"], adapter=LoRA(r=8))
    trainer = mtl.MultiHeadTrainer([later], backbone=mtl.backbone.BERT.from_pretrained(deployed / "backbone"),
                                   lr=5e-3, num_epochs=2, precision="fp32", seed=4)
    trainer.train(print_steps=0)
    added = trainer.export(tmp_path / "intent_v2", base=False)
    command = serve_command(added, "--model", str(deployed), "--threads", "1", "--precision", "fp32")
    server = ServerProcess(command, tmp_path / "serve.log")
    try:
        meta = httpx.get(f"{server.url}/metadata").json()
        assert meta["tasks"]["intent_v2"]["adapter"]["r"] == 8 and meta["tasks"]["slots"]["adapter"]["r"] == 2
        texts = [row[0] for row in UTTERANCES[:4]]
        answer = httpx.post(f"{server.url}/predict", json={"texts": texts, "tasks": ["slots", "intent_v2"]}).json()
        expected = mtl.Predictor.from_folders([deployed, added], precision="fp32").predict(texts)
        assert [(r["slots"]["tags"], r["intent_v2"]["label"]) for r in answer["predictions"]] == \
            [(r["slots"]["tags"], r["intent_v2"]["label"]) for r in expected]
    finally:
        assert server.stop(), server.text()[-2000:]
