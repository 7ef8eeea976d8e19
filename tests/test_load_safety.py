"""A model folder is data: `mtl.load` never runs code that the folder names (issue 14).

The corpus in tests/data/bad/model_folders (cases.json) lays malicious entries over a freshly exported tiny
model: every case is refused with one MtlError naming the file, the key and the flag, and the sentinel file
that its payload would create never appears. Beside it: symlinks out of the folder, the opt-in for a user's
own head (`allowed_modules`, `trust_code`), the CLI flags, and a Hypothesis fuzz over model.json's values.
"""
import copy
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import mtl
from conftest import UTTERANCES, joint_trainer, tiny_bert, write_intent_slot
from mtl.cli import main
from mtl.components.heads.base import Head
from mtl.errors import MtlError
from mtl.spec import build, locate_component
from tiny_runs import TEXTS

BAD = Path(__file__).parent / "data" / "bad" / "model_folders"
CASES = json.loads((BAD / "cases.json").read_text(encoding="utf-8"))["cases"]
MODULES = BAD / "modules"  # modules whose import writes the sentinel
SENTINEL = "pwned.txt"


class CustomClassify(mtl.head.Classify):
    """A user's own head, outside mtl: loading it needs the user's opt-in."""


@pytest.fixture(scope="module")
def exported(vocab_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid exported tiny joint intent + slot model (untrained: only loading is under test)."""
    data = tmp_path_factory.mktemp("data")
    write_intent_slot(data / "train", UTTERANCES)
    write_intent_slot(data / "dev", UTTERANCES)
    return joint_trainer(vocab_file, data).export(tmp_path_factory.mktemp("export").resolve() / "model")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory, where every payload would write its sentinel; the side-effect modules importable
    (so that only mtl's refusal keeps them from running)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(MODULES))
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "examples" / "custom_head"))
    before = set(sys.modules)
    yield tmp_path.resolve()
    assert not (tmp_path / SENTINEL).exists(), "a payload ran"
    assert not {"sideeffect", "sideeffect.heads", "mtlevil", "multilabel"} & (set(sys.modules) - before)


def copy_model(exported: Path, folder: Path, overlay: Path | None = None) -> Path:
    shutil.copytree(exported, folder)
    for file in overlay.rglob("*") if overlay else ():
        if file.is_file():
            target = folder / file.relative_to(overlay)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, target)
    return folder


@pytest.mark.parametrize("case", CASES, ids=lambda case: case["id"])
def test_malicious_folders_are_refused_before_anything_runs(case, exported, workdir):
    folder = copy_model(exported, workdir / "model", BAD / case["id"])
    trusts = [{}, {"allowed_modules": ["mtl.components"]}] + ([{"trust_code": True}] if case["trusted_too"] else [])
    for trust in trusts:
        with pytest.raises(MtlError) as caught:
            mtl.load(folder, device="cpu", **trust)
        message = str(caught.value)
        assert str(folder / case["names"]) in message, message
        assert case["key"] is None or f": {case['key']}:" in message, message
        if trust:
            continue  # the flag fragments are advice to a caller who has not opted in
        for fragment in case["fragments"]:
            assert fragment in message, (fragment, message)
    assert not (workdir / SENTINEL).exists()


def test_the_payloads_are_live(exported, tmp_path, monkeypatch):
    """The corpus is not toothless: built the way model.json was used before, a case creates the sentinel."""
    monkeypatch.chdir(tmp_path)
    spec = json.loads((BAD / "os_system_head" / "model.json").read_text(encoding="utf-8"))
    build(spec["tasks"][0]["heads"]["intent"])  # spec.build calls what it is given: for the user's own specs
    assert (tmp_path / SENTINEL).exists()


def test_every_case_folder_is_listed():
    folders = {p.name for p in BAD.iterdir() if p.is_dir()} - {"modules"}
    assert folders == {case["id"] for case in CASES}


@pytest.mark.parametrize("link", ["backbone", "tokenizer", "heads.safetensors", "labels.json",
                                  "backbone/model.safetensors", "tokenizer/tokenizer.json"])
def test_symlinks_out_of_the_folder_are_refused(link, exported, workdir):
    folder = copy_model(exported, workdir / "model")
    outside = workdir / "elsewhere" / link
    outside.parent.mkdir(parents=True)
    shutil.move(folder / link, outside)
    (folder / link).symlink_to(outside, target_is_directory=outside.is_dir())
    with pytest.raises(MtlError, match=r"outside the model folder .* \(a symlink out\)"):
        mtl.load(folder, device="cpu")
    (folder / link).unlink()
    (folder / link).symlink_to(os.path.relpath(outside, (folder / link).parent))  # relative links too
    with pytest.raises(MtlError, match="a symlink out"):
        mtl.load(folder, trust_code=True, device="cpu")  # trust is about code, not about files elsewhere


def test_links_to_folders_inside_are_followed_and_loops_end(exported, workdir):
    folder = copy_model(exported, workdir / "model")
    (workdir / "secret.txt").write_text("not the model's", encoding="utf-8")
    (folder / "extra").mkdir()
    (folder / "extra" / "leak.json").symlink_to(workdir / "secret.txt")
    (folder / "backbone" / "more").symlink_to(folder / "extra", target_is_directory=True)
    (folder / "backbone" / "loop").symlink_to(folder / "backbone", target_is_directory=True)
    with pytest.raises(MtlError, match=r"backbone/more/leak\.json: it resolves to .*secret\.txt"):
        mtl.load(folder, device="cpu")
    (folder / "extra" / "leak.json").unlink()
    assert mtl.load(folder, device="cpu", precision="fp32").tasks[0].name == "joint"


def test_symlinks_inside_the_folder_and_a_linked_folder_load(exported, workdir):
    folder = copy_model(exported, workdir / "model")
    shutil.move(folder / "tokenizer", folder / "tok")
    (folder / "tokenizer").symlink_to("tok", target_is_directory=True)
    (workdir / "latest").symlink_to(folder, target_is_directory=True)
    assert mtl.load(workdir / "latest", device="cpu", precision="fp32").predict(TEXTS[:1])[0]["intent"]["label"]


def test_the_auto_map_gate_is_the_only_thing_in_the_way(exported, workdir):
    """Trusted, transformers would import the folder's modeling_evil.py: the refusal must come from mtl."""
    folder = copy_model(exported, workdir / "model", BAD / "auto_map_backbone")
    with pytest.raises(MtlError, match=r"backbone/config\.json: its `auto_map` names code"):
        mtl.load(folder, device="cpu", allowed_modules=["mtl"])  # allowing modules is not trusting code
    config = json.loads((folder / "backbone" / "config.json").read_text(encoding="utf-8"))
    assert "auto_map" in config and (folder / "backbone" / "modeling_evil.py").is_file()


# ---- a user's own head: the opt-in --------------------------------------------------------------------
@pytest.fixture
def custom_folder(vocab_file, intent_slot_dir, tmp_path) -> Path:
    reader = mtl.reader.IntentSlotReader(vocab_file, 32).load_data(intent_slot_dir / "train", batch_size=8)
    head = CustomClassify(len(reader.label_names["intent_ids"]), 32, 0.0, label_field="intent_ids")
    trainer = mtl.MultiHeadTrainer([mtl.Trainer("intent", reader=reader, head=head)], backbone=tiny_bert(),
                                   precision="fp32")
    return trainer.export(tmp_path / "custom")


def test_a_users_own_head_loads_only_with_the_opt_in(custom_folder):
    key = "tasks[0].heads.intent._component_"
    with pytest.raises(MtlError) as caught:
        mtl.load(custom_folder, device="cpu")
    message = str(caught.value)
    for fragment in (str(custom_folder / "model.json"), key, f"'{__name__}.CustomClassify'",
                     f"allowed_modules=['{__name__}']", "trust_code=True", "--trust-code", "--allow-module"):
        assert fragment in message, (fragment, message)
    with pytest.raises(MtlError, match=re.escape(key)):
        mtl.load(custom_folder, device="cpu", allowed_modules=[__name__[:-3]])  # whole name components only
    for trust in ({"allowed_modules": [__name__]}, {"allowed_modules": __name__}, {"trust_code": True}):
        predictor = mtl.load(custom_folder, device="cpu", precision="fp32", **trust)
        assert type(predictor.tasks[0].heads["intent"]) is CustomClassify
        assert predictor.predict(TEXTS[:2])[1]["intent"]["label"]


def test_the_cli_refuses_then_loads_with_the_flags(custom_folder, tmp_path, capsys):
    texts = tmp_path / "in.txt"
    texts.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    command = ["predict", "--model", str(custom_folder), "--input", str(texts), "--device", "cpu"]
    assert main(command) == 2
    error = capsys.readouterr().err
    assert "tasks[0].heads.intent._component_" in error and "--trust-code" in error and "--allow-module" in error
    assert main(command + ["--allow-module", __name__, "--output", str(tmp_path / "a.jsonl")]) == 0
    assert main(command + ["--trust-code", "--output", str(tmp_path / "b.jsonl")]) == 0
    assert len((tmp_path / "b.jsonl").read_text(encoding="utf-8").splitlines()) == len(TEXTS)


def test_the_cli_refuses_a_malicious_folder(exported, workdir, capsys):
    folder = copy_model(exported, workdir / "model", BAD / "os_system_head")
    assert main(["predict", "--model", str(folder), "--input", str(folder / "model.json"), "--trust-code"]) == 2
    assert "'os.system'" in capsys.readouterr().err


# ---- the locator alone ----------------------------------------------------------------------------------
@pytest.mark.parametrize("path, allowed, problem", [
    ("mtl.head.Classify", ("mtl",), None),
    ("mtl.components.heads.classify.Classify", ("mtl",), None),
    ("mtlevil.Evil", ("mtl",), "only classes from mtl"),
    ("sideeffect.headsevil.Evil", ("mtl", "sideeffect.heads"), "only classes from mtl or sideeffect.heads"),
    ("sideeffect.Evil", ("mtl", "sideeffect.heads"), "only classes from"),  # a parent is not inside
    ("mtl.head.Classify", ("mtl.components.readers",), "only classes from"),
    ("mtl.head.Classify.forward", ("mtl",), "not a class"),
    ("mtl.head.Nothing", ("mtl",), "has no attribute 'Nothing'"),
    ("mtl.nothing.Head", ("mtl",), "has no attribute 'nothing'"),
    ("Classify", ("mtl",), "module.Class"),
    ("mtl..Classify", ("mtl",), "module.Class"),
    ("mtl.head._Hidden", ("mtl",), "public ASCII"),
    ("ｍｔｌ.head.Classify", None, "public ASCII"),
    (["mtl.head.Classify"], ("mtl",), "module.Class"),
    ("subprocess.Popen", None, "not a subclass of Head"),
    ("os.system", None, "not a class"),
])
def test_locate_component(path, allowed, problem, workdir):
    if problem is None:
        assert issubclass(locate_component(path, Head, "key", allowed), Head)
        return
    with pytest.raises(MtlError, match=problem):
        locate_component(path, Head, "key", allowed)


def test_a_class_re_exported_into_an_allowed_module_is_refused(monkeypatch):
    """Judged where the class is defined too: an allowed module that imports a class from elsewhere."""
    monkeypatch.setattr(mtl.head, "Imported", CustomClassify, raising=False)
    with pytest.raises(MtlError, match=f"defined in '{__name__}'"):
        locate_component("mtl.head.Imported", Head, "key", ("mtl",))


def test_bad_allowed_modules_are_refused(exported):
    with pytest.raises(MtlError, match="not a dotted module name"):
        mtl.load(exported, allowed_modules=["mypkg/heads"])


# ---- fuzz: whatever model.json holds, an error that says what is wrong, and nothing runs -------------------
DOTTED = st.sampled_from(["os.system", "builtins.eval", "builtins.exec", "subprocess.Popen", "mtl.__main__.main",
                          "sideeffect.heads.Evil", "mtlevil.Evil", "mtl.spec.build", "mtl.head.Classify",
                          "mtl.head.SequenceLabel", "mtl.reader.IntentSlotReader", "mtl.backbone.BERT",
                          "mtl.components.backbones.encoder.Encoder", "posix.system", "shutil.rmtree",
                          "importlib.import_module", "mtl.config.build.build_run", "torch.nn.Linear"]) | \
    st.from_regex(r"[A-Za-z_]\w{0,6}(\.[A-Za-z_]\w{0,6}){0,3}", fullmatch=True) | st.text(max_size=12)
PATHS = st.sampled_from(["..", "../model", "/etc", "/tmp", "~", "backbone/../..", "tokenizer", "backbone", ".",
                         "", "heads.safetensors", "labels.json", "nowhere", "a\x00b"])
JSON = st.recursive(st.none() | st.booleans() | st.integers(-3, 40) | st.floats(-1e3, 1e3) | st.text(max_size=8)
                    | DOTTED | PATHS,
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=6)


def _locations(node, trail=()):
    """Every place in a JSON tree (key paths), containers included."""
    yield trail
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield from _locations(value, trail + (key,))


@pytest.fixture(scope="module")
def fuzz_folder(exported, tmp_path_factory) -> Path:
    return copy_model(exported, tmp_path_factory.mktemp("fuzz").resolve() / "model")


@settings(max_examples=int(os.environ.get("MTL_FUZZ_EXAMPLES", 60)), deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_model_json_fails_clearly_and_runs_nothing(data, exported, fuzz_folder, workdir):
    """The export's model.json with one to three places replaced (a `_component_` by a dotted path, a folder
    by a path, anything by any JSON value): it loads, or fails with MtlError/FileNotFoundError naming the
    folder; never another exception, never the sentinel."""
    spec = json.loads((exported / "model.json").read_text(encoding="utf-8"))
    places = sorted(_locations(spec), key=repr)
    for _ in range(data.draw(st.integers(1, 3), label="changes")):
        trail = data.draw(st.sampled_from(places), label="where")
        value = data.draw(DOTTED if trail and trail[-1] == "_component_" else
                          PATHS if trail and trail[-1] in ("folder", "tokenizer") else JSON, label="value")
        spec = _replace(spec, trail, value)
    (fuzz_folder / "model.json").write_text(json.dumps(spec), encoding="utf-8")
    trust = data.draw(st.sampled_from([{}, {"allowed_modules": ["torch.nn"]}]), label="trust")
    try:
        mtl.load(fuzz_folder, device="cpu", precision="fp32", **trust)
        event("loaded")
    except (MtlError, FileNotFoundError) as error:
        assert str(fuzz_folder) in str(error), str(error)
        event("refused" if "refused" in str(error) else "built, then failed" if "cannot be built" in str(error)
              or "heads.safetensors" in str(error) else "malformed")
    assert not (workdir / SENTINEL).exists()


def _replace(node, trail, value):
    """`node` with the value at `trail` replaced, where that place still exists (an earlier change may have
    replaced a container above it)."""
    if not trail:
        return value
    if isinstance(node, dict) and trail[0] in node or isinstance(node, list) and trail[0] in range(len(node)):
        node = copy.copy(node)
        node[trail[0]] = _replace(node[trail[0]], trail[1:], value)
    return node
