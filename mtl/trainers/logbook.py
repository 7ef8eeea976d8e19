"""Where training reports go: TensorBoard scalars, and the same numbers as JSON lines (`metrics.jsonl`).

JSON lines can be read without TensorBoard (one record per report and per evaluation). Besides losses, lr
and dev metrics, both show how many batches each task actually got against its target share: with random
task sampling the two drift apart, and a task starved by a small mix ratio shows up here first.
"""
import json
import math
from pathlib import Path
from typing import Any

import torch

from mtl import distributed
from mtl.trainers.busy_cores import warn_if_busy
from mtl.trainers.selection import Selector, Verdict

METRICS_FILE = "metrics.jsonl"


class Logbook:
    """Writes to `tensorboard_dir` (TensorBoard) and `folder/metrics.jsonl`; either may be None.

    `resume_step` drops what a previous run logged after that step (TensorBoard's purge_step, a rewrite of
    the JSON lines), so an interrupted and resumed run reads as one.
    """

    def __init__(self, folder: Path | None, tensorboard_dir: Path | None, task_names: list[str],
                 resume_step: int | None = None) -> None:
        self.task_names = task_names
        self.jsonl = Path(folder) / METRICS_FILE if folder is not None else None
        self.writer = None
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter
            purge = resume_step + 1 if resume_step is not None else None
            self.writer = SummaryWriter(str(tensorboard_dir), purge_step=purge)
        if self.jsonl is not None:
            self.jsonl.parent.mkdir(parents=True, exist_ok=True)
            _truncate(self.jsonl, resume_step)
        self.loss_sums = {name: [0.0, 0] for name in task_names}
        self.reported_step = resume_step or 0  # the mean losses cover the steps after this one

    def start(self, trainer: Any, print_steps: int, stop_at: int) -> None:
        """Before the first step, on rank 0: a warning when other work keeps the CPU cores busy
        (mtl.trainers.busy_cores), and with `print_steps` the plan in one line, so that a log written to a file
        shows the run started long before the first print step."""
        if not distributed.is_main():
            return
        if trainer.device.type == "cpu":
            warn_if_busy(torch.get_num_threads())
        if print_steps:
            print(start_line(trainer, print_steps, stop_at), flush=True)

    def console_line(self, trainer: Any, task: Any, loss: float, speed: float) -> str:
        """PALM's line at a print step, its two losses named: `batch loss`, the loss of this step's batch alone
        (PALM's `loss`), and `mean loss of steps a-b`, the task's mean over its batches since the last line:
        the number metrics.jsonl's record of this step holds under `loss` for the task."""
        total, count = self.loss_sums[task.name]
        mean = f"{total / count:.3f}" if count else "n/a"
        return (f"global step: {trainer.global_step}, {task.name}: step {task.cur_train_step}/{task.budget} "
                f"(epoch {task.reader.epoch}), batch loss: {loss:.3f}, mean loss of steps "
                f"{self.reported_step + 1}-{trainer.global_step}: {mean}, speed: {speed:.2f} steps/s")

    def step(self, step: int, task: str, loss: float, head_losses: dict[str, float], lr: float) -> None:
        """Every training step: the task's loss (and each head's, for joint tasks) and the lr. A skipped step
        (non-finite loss) is left out of the mean losses; `report` counts it under `skipped_steps`."""
        if not math.isfinite(loss):
            return
        self.loss_sums[task][0] += loss
        self.loss_sums[task][1] += 1
        if self.writer is not None:
            self.writer.add_scalar(f"loss/{task}", loss, step)
            if len(head_losses) > 1:
                for head, value in head_losses.items():
                    self.writer.add_scalar(f"loss/{task}/{head}", value, step)
            self.writer.add_scalar("lr", lr, step)

    @classmethod
    def for_trainer(cls, trainer: Any, resume_step: int | None) -> "Logbook":
        """TensorBoard under the trainer's `log_dir` (or save_path/tensorboard); JSON lines in save_path
        (or log_dir); nothing without either, nor on a rank other than 0."""
        save_path = trainer.saver.save_path  # None: the trainer's saver keeps nothing on disk
        folder = save_path or trainer.log_dir
        board = trainer.log_dir or (save_path / "tensorboard" if save_path else None)
        if not distributed.is_main():  # under torch.distributed only rank 0 writes (every rank's numbers agree)
            folder = board = None
        logbook = cls(folder, board, [t.name for t in trainer.tasks], resume_step)
        logbook.start_record(resume_step or 0, trainer.precision, str(trainer.device), trainer.total_steps)
        return logbook

    def start_record(self, step: int, precision: str, device: str, total_steps: int) -> None:
        """The first record of each sitting (a resumed run has one more): what `precision="auto"` resolved to
        and where, which a run resumed on another machine may change."""
        self._write({"kind": "start", "step": step, "total_steps": total_steps, "precision": precision,
                     "device": device, "processes": distributed.world_size()})

    def report(self, trainer: Any) -> None:
        """At print steps: mean loss per task since the last report, lr, and batches per task against the
        sampler's target share (mix_ratio / sum of mix ratios for PALM's sampler)."""
        step, lr = trainer.global_step, trainer.scheduler.get_last_lr()[0]
        batches = {t.name: t.cur_train_step for t in trainer.tasks}
        targets = trainer.sampler.probabilities(step)
        done = max(sum(batches.values()), 1)
        share = {name: batches[name] / done for name in self.task_names}
        target = {name: float(t) for name, t in zip(self.task_names, targets)}
        losses = {name: (s / n if n else None) for name, (s, n) in self.loss_sums.items()}
        self.loss_sums = {name: [0.0, 0] for name in self.task_names}
        since, self.reported_step = self.reported_step, step
        if self.writer is not None:
            for name in self.task_names:
                self.writer.add_scalar(f"batches/{name}", batches[name], step)
                self.writer.add_scalar(f"share/{name}/actual", share[name], step)
                self.writer.add_scalar(f"share/{name}/target", target[name], step)
        self._write({"kind": "train", "step": step, "lr": lr, "loss": losses, "loss_steps": [since + 1, step],
                     "batches": batches,
                     "share": share, "target_share": target,
                     "epoch": {t.name: t.reader.epoch for t in trainer.tasks},
                     "skipped_steps": dict(trainer.skipped_steps),
                     **({"loss_weights": weights} if (weights := trainer.balancer.current_weights()) else {})})

    def evaluation(self, verdict: Verdict, results: dict[str, dict[str, float]]) -> None:
        if self.writer is not None:
            for task, values in results.items():
                for key, value in values.items():
                    self.writer.add_scalar(f"dev/{task}/{key}", value, verdict.step)
            self.writer.add_scalar("dev/selection_score", verdict.score, verdict.step)
        self._write({"kind": "eval", "step": verdict.step, "metrics": results, "score": verdict.score,
                     "best": verdict.improved, "improved_tasks": verdict.improved_tasks,
                     "early_stop": verdict.stop})

    def affinity(self, record: dict[str, Any]) -> None:
        """One task-affinity estimate: its two matrices as a JSON line and as TensorBoard scalars."""
        self._write({"affinity": record})
        if self.writer is not None:
            for kind in ("tag", "grad_cosine"):
                for i, row in record[kind].items():
                    for j, value in row.items():
                        self.writer.add_scalar(f"affinity/{kind}/{i}->{j}", value, record["step"])

    def end(self, step: int, best_score: float, stopped_early: bool, finished: bool) -> None:
        """The last record of a run; `finished` is false when it stopped at max_steps (to be resumed)."""
        self._write({"kind": "end", "step": step, "best_score": best_score if math.isfinite(best_score) else None,
                     "stopped_early": stopped_early, "finished": finished})
        if self.writer is not None:
            self.writer.close()

    def _write(self, record: dict[str, Any]) -> None:
        if self.jsonl is None:
            return
        with open(self.jsonl, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def evaluation_line(verdict: Verdict, selector: Selector) -> str:
    """The console line of one evaluation: each task's selection metric (its `score` unless the selection says
    otherwise) and whether it is that task's best so far, then, with several tasks, the weighted selection
    score; `new best` is what `best/` now holds. E.g.
    `dev at step 40: slot slot.f1 71.20 (new best), intent intent.accuracy 90.10 (best 91.00) | selection 80.65
    (best 81.20 at step 20)`."""
    parts = []
    for task, value in verdict.task_values.items():
        best = selector.task_best.get(task, value)
        mark = "new best" if task in verdict.improved_tasks else f"best {best:.2f}"
        parts.append(f"{task} {selector.metrics.get(task, 'score')} {value:.2f} ({mark})")
    line = f"dev at step {verdict.step}: " + ", ".join(parts)
    if len(verdict.task_values) > 1:
        mark = "new best" if verdict.improved else f"best {selector.best:.2f} at step {selector.best_step}"
        line += f" | selection {verdict.score:.2f} ({mark})"
    elif not verdict.improved and verdict.task_values:
        line += f", best at step {selector.best_step}"
    if verdict.stop:
        line += f"; stopping early: {selector.evals_without_gain} evaluations without a better score"
    return line


def start_line(trainer: Any, print_steps: int, stop_at: int) -> str:
    """The plan of a train() call, e.g. `training 120 steps (3 epochs); tasks: slot (budget 80, mix 1.0),
    intent (budget 40, mix 0.5); cpu, fp32, 2 threads; a line every 10 steps`."""
    start, total = trainer.global_step, trainer.total_steps
    epochs = trainer.num_epochs
    epochs = f" ({epochs:g} epoch{'' if epochs == 1 else 's'})" if isinstance(epochs, (int, float)) else ""
    span = f"{total} steps{epochs}" if (start, stop_at) == (0, total) else \
        f"steps {start + 1}-{stop_at} of {total}" + (f" (resuming after step {start})" if start else " (max_steps)")
    tasks = ", ".join(f"{t.name} (budget {t.budget}, mix {t.mix_ratio:g}{', auxiliary' if t.is_aux else ''})"
                      for t in trainer.tasks)
    threads = torch.get_num_threads()
    where = f"{trainer.device}, {trainer.precision}, {threads} thread{'' if threads == 1 else 's'}"
    if distributed.world_size() > 1:
        where += f" x {distributed.world_size()} processes"
    return f"training {span}; tasks: {tasks}; {where}; a line every {print_steps} steps"


def _truncate(path: Path, resume_step: int | None) -> None:
    """Keep only the records up to `resume_step`; a new run (not resuming) starts an empty file."""
    if not path.is_file():
        return
    if resume_step is None:
        path.unlink()
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= resume_step]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
