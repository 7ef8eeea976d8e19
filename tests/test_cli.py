"""`mtl train|eval|predict` end to end on a tiny config (a random BERT from `from_config`, a test vocab)."""
import configparser
import json
from pathlib import Path

import pytest

from mtl.cli import main
from tiny_runs import tiny_config, write_yaml

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def config_file(vocab_file, intent_slot_dir, tmp_path) -> Path:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "vocab.txt").write_bytes(vocab_file.read_bytes())
    config = tiny_config(Path("vocab.txt"), intent_slot_dir, save_path="out")  # both relative to the YAML
    config["selection"] = {"metrics": {"joint": "slots.f1"}}
    return write_yaml(tmp_path / "run" / "run.yaml", config)


def test_train_eval_predict_from_a_config(config_file, tmp_path, capsys):
    out = config_file.parent / "out"
    assert main(["train", str(config_file)]) == 0
    assert {"final", "best", "metrics.jsonl", "config.json", "tensorboard"} <= {p.name for p in out.iterdir()}
    assert sorted(p.name for p in out.glob("step-*")) == ["step-4"]  # 6 steps, save_steps 4
    assert json.loads((out / "config.json").read_text())["trainer"]["lr"] == 3e-3
    capsys.readouterr()

    assert main(["eval", str(config_file), "--split", "dev"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["checkpoint"] == str(out / "best") and report["split"] == "dev"
    assert {"intent.accuracy", "slots.f1", "frame_accuracy", "score"} <= set(report["metrics"]["joint"])
    best_f1 = max(r["metrics"]["joint"]["slots.f1"] for r in map(json.loads, (out / "metrics.jsonl").open())
                  if r["kind"] == "eval")
    assert report["metrics"]["joint"]["slots.f1"] == pytest.approx(best_f1)

    (tmp_path / "in.txt").write_text("book a flight from boston to denver\n\nplay some jazz\n", encoding="utf-8")
    # (`python -m mtl predict` in a new process: test_predictor.py)
    assert main(["predict", "--model", str(out / "best"), "--input", str(tmp_path / "in.txt"), "--output",
                 str(tmp_path / "pred.jsonl")]) == 0
    records = [json.loads(line) for line in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert [r["text"] for r in records] == ["book a flight from boston to denver", "play some jazz"]
    assert set(records[0]) == {"text", "intent", "slots"} and "label" in records[0]["intent"]

    assert main(["train", str(config_file), "--resume"]) == 0  # the run had finished: nothing to do
    assert json.loads((out / "final" / "trainer_state.json").read_text())["global_step"] == 6


def test_a_bad_config_fails_before_training_with_one_message(config_file, capsys):
    text = config_file.read_text().replace("num_epochs: 2", "num_epoch: 2")
    config_file.write_text(text)
    assert main(["train", str(config_file)]) == 2
    error = capsys.readouterr().err
    assert error.strip() == (f"mtl train: {config_file}: trainer.num_epoch: unknown key for mtl.MultiHeadTrainer "
                             "(it takes: lr, num_epochs, sampling_reference, warmup_proportion, weight_decay, "
                             "seed, precision, device, log_dir, max_nonfinite_steps, grad_accum_steps, compile, "
                             "embedding_grad_buffer, fast_dropout, balancer, affinity_every)")
    assert not (config_file.parent / "out").exists()


def test_predict_and_eval_without_a_model_fail_clearly(config_file, tmp_path, capsys):
    assert main(["predict", "--model", str(tmp_path / "nowhere"), "--input", str(config_file)]) == 2
    assert f"{tmp_path / 'nowhere'}: does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["predict", "--model", str(tmp_path / "empty"), "--input", str(config_file)]) == 2
    assert "no model.json" in capsys.readouterr().err
    assert main(["eval", str(config_file)]) == 2
    assert "no best/ or final/ checkpoint" in capsys.readouterr().err


def test_console_script_is_declared():
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    assert parser["options.entry_points"]["console_scripts"].strip() == "mtl = mtl.cli:main"


def test_a_palm_style_two_task_config(config_file, capsys):
    """Two tasks with one head each (`head:`), sampled by mix ratio: per-task best folders, eval of both."""
    import yaml
    config = yaml.safe_load(config_file.read_text())
    joint = config["tasks"][0]
    heads = joint.pop("heads")
    slot = {**joint, "name": "slot", "head": heads["slots"]}
    intent = {**joint, "name": "intent", "head": heads["intent"], "mix_ratio": 0.5, "aux": True}
    config.update(tasks=[slot, intent], selection={"metrics": {"slot": "slot.f1", "intent": "intent.accuracy"}})
    config["trainer"]["sampling_reference"] = "slot"
    write_yaml(config_file, config)
    assert main(["train", str(config_file)]) == 0
    out = config_file.parent / "out"
    assert {"best", "best-slot", "best-intent", "final"} <= {p.name for p in out.iterdir()}
    assert not any((out / name / "training_state.pt").exists() for name in ("best", "best-slot", "best-intent"))
    capsys.readouterr()
    assert main(["eval", str(config_file), "--checkpoint", str(out / "final")]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert set(metrics) == {"slot", "intent"} and "slot.f1" in metrics["slot"]
