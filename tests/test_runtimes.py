"""The runtime table (mtl.serving.runtime): the CLI's `--runtime` choices come from it, `auto` picks the first
runtime that fits a folder, and a third runtime registered in the table alone (no engine or server code
touched) is served over HTTP and drives `mtl predict`."""
import asyncio
import json
from pathlib import Path
from typing import Any, Sequence

import httpx
import pytest

from mtl.cli import _parser, main
from mtl.errors import MtlError
from mtl.serving import runtime
from mtl.serving.engine import load_engine
from mtl.serving.requests import Limits
from mtl.serving.runtime import RUNTIMES, LoadOptions, RuntimeEntry, get_runtime, pick_runtime
from mtl.serving.server import create_app

FAKE = RuntimeEntry("test_runtimes:FakeRuntime", "shouts every text back (a test double)")


class FakeModel:
    """Two tasks; each record holds the text upper-cased under `shout` and its length under `size`."""

    task_names = ["shout", "size"]

    def __init__(self, options: LoadOptions) -> None:
        self.options = options

    def predict(self, texts: list[Any], tasks: Sequence[str] | None = None,
                batch_size: int = 32) -> list[dict[str, Any]]:
        tasks = tasks or self.task_names
        return [{"text": t, **({"shout": t.upper()} if "shout" in tasks else {}),
                 **({"size": len(t)} if "size" in tasks else {})} for t in texts]

    def describe(self) -> dict[str, Any]:
        return {"runtime": "fake", "device": "nowhere", "precision": self.options.precision,
                "tasks": {name: {"reader": None, "heads": {}} for name in self.task_names}}


class FakeRuntime:
    """Fits a folder holding fake.model."""

    def fits(self, folder: Path) -> bool:
        return (folder / "fake.model").is_file()

    def load(self, folder: Path, options: LoadOptions) -> FakeModel:
        return FakeModel(options)


@pytest.fixture
def fake_table(monkeypatch: pytest.MonkeyPatch) -> dict[str, RuntimeEntry]:
    """The table with the fake runtime first (so `auto` asks it first), restored afterwards."""
    monkeypatch.setattr(runtime, "RUNTIMES", {"fake": FAKE, **RUNTIMES})
    return runtime.RUNTIMES


@pytest.fixture
def fake_folder(tmp_path: Path) -> Path:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "fake.model").write_text("fake", encoding="utf-8")
    return tmp_path / "model"


def runtime_choices_of(verb: str) -> list[str]:
    parser = _parser()
    verbs = next(a for a in parser._actions if a.dest == "command").choices
    return list(next(a for a in verbs[verb]._actions if a.dest == "runtime").choices)


def test_the_cli_choices_are_the_table(fake_table):
    for verb in ("serve", "predict"):
        assert runtime_choices_of(verb) == ["auto", "fake", "onnx", "torch"]
    help_text = next(a for a in _parser()._actions if a.dest == "command").choices["serve"].format_help()
    assert "shouts every text back" in " ".join(help_text.split())


def test_without_the_fake_the_choices_are_torch_and_onnx():
    assert sorted(runtime_choices_of("serve")) == ["auto", "onnx", "torch"]


def test_auto_picks_the_first_runtime_that_fits(fake_table, fake_folder, tmp_path):
    assert pick_runtime(fake_folder)[0] == "fake"
    (tmp_path / "other").mkdir()
    assert pick_runtime(tmp_path / "other")[0] == "torch"  # the last resort: mtl.load says what is missing
    (tmp_path / "other" / "model.onnx").write_bytes(b"")
    assert pick_runtime(tmp_path / "other")[0] == "onnx"


def test_an_unknown_runtime_is_refused_naming_the_choices():
    with pytest.raises(MtlError, match=r"runtime must be one of \['auto', 'onnx', 'torch'\], got 'tpu'"):
        get_runtime("tpu")


def test_a_registered_runtime_is_served_without_touching_engine_code(fake_table, fake_folder):
    app = create_app(load_engine(fake_folder, "fake", precision="fp32"), Limits(max_wait_ms=5))

    async def ask() -> list[httpx.Response]:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
                while (await client.get("/ready")).status_code != 200:
                    await asyncio.sleep(0.02)
                return [await client.post("/predict", json={"texts": ["hi there", "yo"]}),
                        await client.post("/predict", json={"texts": ["hi"], "tasks": ["size"]}),
                        await client.post("/predict", json={"texts": ["hi"], "tasks": ["nope"]}),
                        await client.get("/metadata")]
    both, size_only, unknown, metadata = asyncio.run(ask())
    assert both.json()["predictions"] == [{"text": "hi there", "shout": "HI THERE", "size": 8},
                                          {"text": "yo", "shout": "YO", "size": 2}]
    assert size_only.json()["predictions"] == [{"text": "hi", "size": 2}]
    assert unknown.status_code == 422 and unknown.json()["error"]["field"] == "tasks[0]"
    meta = metadata.json()
    assert (meta["runtime"], meta["device"], meta["precision"]) == ("fake", "nowhere", "fp32")
    assert list(meta["tasks"]) == ["shout", "size"] and meta["model_checksum"].startswith("sha256:")


def test_mtl_predict_runs_a_registered_runtime_picked_by_auto(fake_table, fake_folder, tmp_path):
    (tmp_path / "in.txt").write_text("hello\nplay some jazz\n", encoding="utf-8")
    assert main(["predict", "--model", str(fake_folder), "--input", str(tmp_path / "in.txt"),
                 "--output", str(tmp_path / "out.jsonl")]) == 0
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert records == [{"text": "hello", "shout": "HELLO", "size": 5},
                       {"text": "play some jazz", "shout": "PLAY SOME JAZZ", "size": 14}]


def test_the_onnx_runtime_refuses_a_torch_precision(tmp_path):
    with pytest.raises(MtlError, match="--precision bf16 is for torch"):
        get_runtime("onnx").load(tmp_path, LoadOptions(precision="bf16"))
