"""Freed memory kept in the process: fresh child processes count page faults of a step-like loop that
allocates, touches and frees the same large tensors; and the trainer's switch."""
import json
import platform
import subprocess
import sys

import pytest

from conftest import joint_trainer
from mtl.config import build_run, load_config
from mtl.trainers import allocator
from tiny_runs import tiny_config, write_yaml

CHILD = """
import json, resource, sys
import torch
from mtl.trainers.allocator import retain_freed_memory
retained = retain_freed_memory() if sys.argv[1] == "on" else False
def step():
    grads = [torch.empty(600_000).fill_(1.0) for _ in range(12)]  # 2.4 MB each, like MiniLM's FFN gradients
    big = torch.empty(12_000_000).fill_(1.0)  # 48 MB, like the word-embedding gradient
    del grads, big
for _ in range(3):  # the heap reaches its size (how soon depends on the process's earlier allocations)
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(json.dumps({"retained": retained, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _child(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's thresholds exist in glibc only")
def test_freed_memory_is_reused_instead_of_fresh_pages_every_step():
    off, on = _child("off"), _child("on")
    assert on["retained"] and not off["retained"]
    assert off["faults"] > 5 * 11_719  # glibc hands the 48 MB block (11,719 pages) back and faults it in again
    assert on["faults"] < off["faults"] / 5  # off: about 187k; on: a few hundred, 12k when the heap grew once


@pytest.mark.parametrize("on", [True, False])
def test_the_trainer_sets_it_only_when_asked(vocab_file, intent_slot_dir, monkeypatch, on):
    calls = []
    monkeypatch.setattr(allocator, "retain_freed_memory", lambda: calls.append(1) or True)
    trainer = joint_trainer(vocab_file, intent_slot_dir, retain_freed_memory=on)
    trainer.train(print_steps=0, max_steps=1)
    assert calls == ([1] if on else [])


def test_the_config_key_reaches_the_trainer(vocab_file, intent_slot_dir, tmp_path):
    config = tiny_config(vocab_file, intent_slot_dir, str(tmp_path / "out"))
    config["trainer"]["retain_freed_memory"] = False
    assert build_run(load_config(write_yaml(tmp_path / "run.yaml", config))).trainer.retain_freed_memory is False
