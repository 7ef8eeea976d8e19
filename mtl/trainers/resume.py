"""Exact resume: everything a run's future depends on, saved with each training checkpoint and put back.

Weights alone are not enough for a resumed run to match an uninterrupted one: the optimizer's moments,
the schedule's step, the task sampler's generator, each reader's epoch and position (batch order is a pure
function of seed and epoch, so the position suffices), the step counters, the best scores and patience, and
the RNG that dropout draws from all decide what happens next. Under torch.distributed every rank keeps its
own dropout RNG (seeded `seed + rank`): all of them are saved, and each rank takes its own back when the run
resumes on as many processes (on another number, the data order is still exact; only dropout differs).
"""
from pathlib import Path
from typing import Any

import torch

from mtl.errors import MtlError
from mtl import distributed
from mtl.components.savers import checkpoint


def get_rng(trainer: Any) -> dict:
    """The RNG state dropout draws from (CPU, and the trainer's GPU when it has one)."""
    state = {"torch_rng": torch.get_rng_state()}
    if trainer.device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(trainer.device)
    return state


def set_rng(trainer: Any, state: dict) -> None:
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and trainer.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], trainer.device)


def gather_rng(trainer: Any) -> list[dict] | None:
    """Every rank's dropout RNG, in rank order (a collective: every rank calls it); None in one process."""
    return distributed.gather_objects(get_rng(trainer)) if distributed.active() else None


def training_state(trainer: Any, rank_rngs: list[dict] | None = None) -> dict:
    """The state of a run in progress (plain containers and tensors: loadable with weights_only=True);
    `rank_rngs`: every rank's RNG (`gather_rng`) in a distributed run."""
    state = {**trainer.state.state_dict(), "total_steps": trainer.total_steps,
             "tasks": {t.name: {"cur_train_step": t.cur_train_step, "budget": t.budget} for t in trainer.tasks},
             "optimizer": trainer.optimizer.state_dict(), "scheduler": trainer.scheduler.state_dict(),
             "sampler": trainer.sampler.state_dict(), "balancer": trainer.balancer.state_dict(),
             "readers": {t.name: t.reader.state_dict() for t in trainer.tasks},
             "selector": trainer.selector.state_dict(), **get_rng(trainer)}
    if rank_rngs is not None:
        state["rank_rng"] = rank_rngs
    return state


def restore(trainer: Any, folder: str | Path) -> int:
    """Put a checkpoint's run state back into a planned trainer (after `_plan`); returns the step it was at.

    Fails when the checkpoint comes from a different run plan (other tasks or another number of steps):
    continuing it would silently train something else than either run.
    """
    state = checkpoint.load_training_state(folder)
    if state is None:
        raise MtlError(f"{folder}: no {checkpoint.TRAINING}; only step-N and final checkpoints of a training "
                       "run can be resumed (an exported model cannot)")
    names = [t.name for t in trainer.tasks]
    if sorted(state["tasks"]) != sorted(names) or state["total_steps"] != trainer.total_steps:
        raise MtlError(f"{folder}: saved by a run with tasks {sorted(state['tasks'])} and "
                       f"{state['total_steps']} steps, but this run has tasks {sorted(names)} and "
                       f"{trainer.total_steps} steps; resume with the same config")
    checkpoint.load_weights(folder, trainer.model)
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
    if trainer.saver and (trainer.saver.save_path / "best" / checkpoint.HEADS).is_file():
        trainer.best_folder = trainer.saver.save_path / "best"  # load_best() works after a resumed run too
    _restore_rng(trainer, state)
    return trainer.global_step


def _restore_rng(trainer: Any, state: dict) -> None:
    """This rank's dropout RNG: its own when the checkpoint holds one per rank of a run as wide as this one;
    else rank 0 takes the saved one and the others a fresh seed of their own (ranks sharing one RNG would
    all drop the same units)."""
    rank, world, saved = distributed.rank(), distributed.world_size(), state.get("rank_rng")
    if saved is not None and len(saved) == world:
        set_rng(trainer, saved[rank])
    elif rank == 0:
        set_rng(trainer, state)
    else:
        torch.manual_seed(trainer.seed + rank + 1_000_003 * trainer.global_step)
