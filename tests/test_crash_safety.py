"""Crash safety: a run SIGKILLed at random moments (inside a save too) always leaves its latest complete
checkpoint loadable, and resuming from it ends with exactly the weights of a run never killed (CPU, fixed
seed). The run lives in a child process (tests/crash_child.py) that the test kills three times in a row."""
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import torch

import mtl
from mtl.components.savers import checkpoint
from crash_child import run

CHILD = Path(__file__).resolve().parent / "crash_child.py"
ROOT = CHILD.parent.parent


def run_and_kill(args: list[str], stop: str, kill_at_line: str, log: Path) -> list[str]:
    """Start the child, read its output until `kill_at_line`, SIGKILL it there; returns the lines read."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(CHILD.parent)]), "HF_HUB_OFFLINE": "1"}
    with open(log, "w") as stderr:
        child = subprocess.Popen([sys.executable, str(CHILD), *args, stop], stdout=subprocess.PIPE,
                                 stderr=stderr, text=True, env=env)
        watchdog = threading.Timer(90, child.kill)  # never hang the suite
        watchdog.start()
        lines = []
        try:
            for line in child.stdout:
                lines.append(line.strip())
                if lines[-1] == kill_at_line:
                    os.kill(child.pid, signal.SIGKILL)
                    break
        finally:
            child.wait()
            watchdog.cancel()
            child.stdout.close()
    assert lines and lines[-1] == kill_at_line, f"child ended before {kill_at_line!r}: {log.read_text()[-2000:]}"
    assert child.returncode == -signal.SIGKILL
    return lines


def check_loadable(save_path: Path) -> Path:
    latest = checkpoint.latest_checkpoint(save_path)
    assert latest is not None
    assert checkpoint.load_training_state(latest)["global_step"] == int(latest.name.split("-")[1])
    mtl.load(latest, device="cpu")
    return latest


def test_sigkill_at_random_moments_then_resume_matches_uninterrupted(vocab_file, intent_slot_dir, tmp_path):
    reference = run(vocab_file, intent_slot_dir, tmp_path / "reference")
    total = reference.total_steps
    assert total >= 20
    save = tmp_path / "killed"
    args = [str(vocab_file), str(intent_slot_dir), str(save)]
    rng = random.Random(6)

    # 1. inside the write of step-4 (backbone written, heads not): step-2 is the latest complete checkpoint
    run_and_kill(args, "write:step-4", "PAUSED", tmp_path / "child1.log")
    assert (save / ".tmp-step-4").is_dir() and check_loadable(save).name == "step-2"

    # 2. at a random step, while training goes on (resumed from step-2)
    kill_step = rng.randint(5, total // 2)
    run_and_kill(args, "none", f"STEP {kill_step}", tmp_path / "child2.log")
    latest = check_loadable(save)
    assert 2 < int(latest.name.split("-")[1]) <= kill_step

    # 3. with every file of a later checkpoint written and flushed, just before its rename
    name = f"step-{int(latest.name.split('-')[1]) + 2 * rng.randint(2, 3)}"
    run_and_kill(args, f"rename:{name}", "PAUSED", tmp_path / "child3.log")
    assert (save / f".tmp-{name}").is_dir() and not (save / name).exists()
    check_loadable(save)

    resumed = run(vocab_file, intent_slot_dir, save)  # resumes from the latest checkpoint, in this process
    assert resumed.global_step == total
    assert not [p.name for p in save.iterdir() if p.name.startswith(".")]  # leftovers of the kills are gone
    a, b = reference.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == []
