"""Multi-node training, tried on one machine: two `torchrun` launchers (`--nnodes 2 --node_rank 0` and `1`,
one process each) rendezvous on 127.0.0.1 and run `mtl train` on a two-task config (a tiny random BERT): the
recipe of docs/distributed.md. They must end with the weights and metrics of the same config trained by one
process (within 1e-5), and only global rank 0 may write: each node runs in its own folder, as on two
machines, and node 1's folder must hold nothing but its config afterwards."""
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import UTTERANCES, write_intent_slot
from mtl.cli import main
from tiny_runs import tiny_config, write_yaml

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def two_task_config(vocab: Path, data: Path) -> dict:
    """PALM's shape: a `slot` task and an `intent` task over one data set, drawn by mix ratio, so each step
    trains one task's head and leaves the other's without a gradient. No dropout: the ranks' dropout draws
    differ, and with them the weights (docs/distributed.md)."""
    config = tiny_config(vocab, data, save_path="out")
    joint = config["tasks"][0]
    heads = joint.pop("heads")
    heads["slots"]["dropout_prob"] = 0.0
    slot = {**joint, "name": "slot", "head": heads["slots"], "batch_size": 5}
    intent = {**joint, "name": "intent", "head": heads["intent"], "mix_ratio": 0.5}
    config.update(tasks=[slot, intent], selection={"metrics": {"slot": "slot.f1", "intent": "intent.accuracy"}})
    config["trainer"].update(sampling_reference="slot", num_epochs=3)
    return config


@pytest.fixture(scope="module")
def runs(vocab_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """single/, node0/ and node1/, each with run.yaml (the same config) and what its run left there."""
    root = tmp_path_factory.mktemp("multinode")
    data = root / "data"
    write_intent_slot(data / "train", UTTERANCES * 2 + UTTERANCES[:3])
    write_intent_slot(data / "dev", UTTERANCES + UTTERANCES[:1])
    config = two_task_config(vocab_file, data)
    for name in ("single", "node0", "node1"):
        (root / name).mkdir()
        write_yaml(root / name / "run.yaml", config)
    port, env = free_port(), {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                              "TRANSFORMERS_OFFLINE": "1"}
    launchers = []
    for rank in (0, 1):
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(rank),
                   "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", str(port),
                   "-m", "mtl", "train", "run.yaml", "--threads", "1"]
        log = (root / f"node{rank}.log").open("w", encoding="utf-8")
        launchers.append(subprocess.Popen(command, cwd=root / f"node{rank}", env=env, stdout=log,
                                          stderr=subprocess.STDOUT))
    try:
        codes = [launcher.wait(timeout=400) for launcher in launchers]
    finally:  # one launcher failing leaves the other waiting at the rendezvous
        for launcher in launchers:
            if launcher.poll() is None:
                launcher.kill()
    assert codes == [0, 0], [(root / f"node{r}.log").read_text()[-3000:] for r in (0, 1)]
    assert main(["train", str(root / "single" / "run.yaml"), "--threads", "1"]) == 0
    return root


def weights(folder: Path) -> dict[str, torch.Tensor]:
    """Encoder and heads, keyed by file (relative to the checkpoint) and tensor name."""
    found = {}
    for path in sorted(folder.rglob("*.safetensors")):
        name = path.relative_to(folder).as_posix()
        found.update({f"{name}:{key}": value for key, value in load_file(str(path)).items()})
    return found


def records(run: Path, kind: str) -> list[dict]:
    lines = (run / "out" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [record for record in map(json.loads, lines) if record["kind"] == kind]


def numbers(value: object, prefix: str = "") -> dict[str, float]:
    """Every number in a record, by its path (`metrics.slot.slot.f1`)."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in numbers(item, f"{prefix}{key}.").items()}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {prefix.rstrip("."): float(value)}
    return {}


def test_two_nodes_train_the_single_process_weights(runs):
    ours, single = weights(runs / "node0" / "out" / "final"), weights(runs / "single" / "out" / "final")
    assert ours.keys() == single.keys()
    assert {key.split(":")[0] for key in ours} == {"backbone/model.safetensors", "heads.safetensors"}
    earlier = weights(runs / "single" / "out" / "step-16")  # the weights still moved after it: a match means
    assert max(float((single[key] - earlier[key]).abs().max()) for key in single) > 1e-3  # something
    gaps = {key: float((ours[key] - single[key]).abs().max()) for key in ours}
    assert max(gaps.values()) < 1e-5, sorted(gaps.items(), key=lambda kv: -kv[1])[:3]


def test_two_nodes_score_what_one_process_scores(runs):
    ours, single = records(runs / "node0", "eval"), records(runs / "single", "eval")
    assert [r["step"] for r in ours] == [r["step"] for r in single] and len(ours) >= 3
    for a, b in zip(ours, single):
        mine, theirs = numbers(a["metrics"]), numbers(b["metrics"])
        assert mine.keys() == theirs.keys() and {"slot.slot.f1", "intent.intent.accuracy"} <= mine.keys()
        assert all(math.isclose(mine[k], theirs[k], abs_tol=1e-5) for k in mine), (a["step"], mine, theirs)


def test_only_global_rank_0_writes_and_speaks(runs):
    assert sorted(p.name for p in (runs / "node1").iterdir()) == ["run.yaml"]
    written = {p.name for p in (runs / "node0" / "out").iterdir()}
    assert {"final", "best", "best-slot", "best-intent", "metrics.jsonl", "config.json"} <= written
    logs = [(runs / f"node{rank}.log").read_text(encoding="utf-8") for rank in (0, 1)]
    assert "final model:" in logs[0] and "final model:" not in logs[1]  # the closing line, once
    assert "training on 2 processes" in logs[0] and "training on 2 processes" not in logs[1]
    assert not any("find_unused_parameters" in log for log in logs)  # DDP was told how to find them
