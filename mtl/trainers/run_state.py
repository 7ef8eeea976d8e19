"""What a MultiHeadTrainer's checkpoints hold besides the weights, and how a resume puts it back: the trainer
says what its state is, its Saver writes and reads the folders (mtl.components.savers).

Two parts: `trainer_state.json` (step counters and the precision the run trained in, for people and for
`latest_checkpoint`) and the run state in `training_state.pt` (everything the run's future depends on, each
part through its own state_dict, loadable with weights_only=True).
"""
import math
from typing import Any

from mtl.components.savers import Snapshot
from mtl.trainers import rng


def snapshot(trainer: Any, training: bool = True, strict: bool = False, base_weights: bool = True) -> Snapshot:
    """The checkpoint's contents besides the weights: with the run state once training has started (unless
    `training=False`: an export). Every rank calls it alike (the run state gathers every rank's RNG)."""
    best = trainer.best_score
    state = {"global_step": trainer.global_step, "total_steps": trainer.total_steps,
             "tasks": task_steps(trainer.tasks), "best_score": best if math.isfinite(best) else None,
             "precision": trainer.precision}  # what precision="auto" resolved to on the machine that trained
    state_now = run_state(trainer) if training and trainer.optimizer is not None else None
    return Snapshot.of(trainer.model.backbone, trainer.tasks, state, state_now, strict, base_weights)


def task_steps(tasks: list[Any]) -> dict[str, dict[str, int]]:
    return {t.name: {"cur_train_step": t.cur_train_step, "budget": t.budget} for t in tasks}


def run_state(trainer: Any) -> dict:
    """Everything the run's future depends on, each part's own state_dict (plain containers and tensors), and
    the dropout RNG of every rank (mtl.trainers.rng)."""
    state = {**trainer.state.state_dict(), "total_steps": trainer.total_steps, "tasks": task_steps(trainer.tasks),
             "optimizer": trainer.optimizer.state_dict(), "scheduler": trainer.scheduler.state_dict(),
             "sampler": trainer.sampler.state_dict(), "balancer": trainer.balancer.state_dict(),
             "readers": {t.name: t.reader.state_dict() for t in trainer.tasks},
             "selector": trainer.selector.state_dict(), **rng.get_rng(trainer.device)}
    ranks = rng.gather_rng(trainer.device)
    return state if ranks is None else {**state, "rank_rng": ranks}


def load_run_state(trainer: Any, state: dict) -> None:
    """A saved run state back into a planned trainer, each part through its own load_state_dict."""
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.sampler.load_state_dict(state["sampler"])
    for task in trainer.tasks:
        task.reader.load_state_dict(state["readers"][task.name])
        task.cur_train_step = int(state["tasks"][task.name]["cur_train_step"])
    if "balancer" in state:
        trainer.balancer.load_state_dict(state["balancer"])
    trainer.state.load_state_dict(state)
    trainer.selector.load_state_dict(state["selector"])
    rng.restore_rng(state, trainer.device, trainer.seed, trainer.global_step)
