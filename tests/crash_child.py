"""The child process of test_crash_safety: a tiny two-task run that resumes from its latest checkpoint (if any)
and can stop inside a save so the parent kills it there.

    python tests/crash_child.py VOCAB DATA SAVE_PATH [write:NAME | rename:NAME | none]

Prints `STEP n` after each step and `PAUSED` when it stops inside the named save: `write:step-4` after the
backbone is written and before the heads are; `rename:step-4` after every file is written and flushed, before
the temporary folder is renamed into place.
"""
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from mtl.components.savers import saver as saver_module  # noqa: E402
from mtl.components.savers import checkpoint  # noqa: E402
from tiny_runs import two_task_trainer  # noqa: E402

NUM_EPOCHS, SAVE_STEPS = 3, 2


def run(vocab: Path, data: Path, save_path: Path, stop: str = "none") -> "object":
    mh = two_task_trainer(vocab, data, num_epochs=NUM_EPOCHS)
    mh.set_saver(save_path, save_steps=SAVE_STEPS)
    mh.train(print_steps=0, resume_from=checkpoint.latest_checkpoint(save_path))
    return mh


def pause_in(where: str, name: str) -> None:
    def pause():
        print("PAUSED", flush=True)
        time.sleep(120)
    if where == "write":
        real = checkpoint.save_file

        def save_file(tensors, path, *args, **kwargs):
            if Path(path).parent.name == f".tmp-{name}":
                pause()
            return real(tensors, path, *args, **kwargs)
        checkpoint.save_file = save_file
    elif where == "rename":
        real_fsync = saver_module._fsync_tree

        def fsync_tree(folder, files=True):
            real_fsync(folder, files)
            if Path(folder).name == f".tmp-{name}":
                pause()
        saver_module._fsync_tree = fsync_tree


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("MTL_TEST_THREADS", "1")))
    vocab, data, save_path = map(Path, sys.argv[1:4])
    stop = sys.argv[4] if len(sys.argv) > 4 else "none"
    if stop != "none":
        pause_in(*stop.split(":", 1))
    import mtl.trainers.multi_head as multi_head
    real_step = multi_head.MultiHeadTrainer._train_step

    def step(self, task, batch):
        result = real_step(self, task, batch)
        print(f"STEP {self.global_step + 1}", flush=True)
        return result
    multi_head.MultiHeadTrainer._train_step = step
    run(vocab, data, save_path)
    print("DONE", flush=True)
