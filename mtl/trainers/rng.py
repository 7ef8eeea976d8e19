"""The dropout RNG of a run: saved with each training checkpoint and put back on resume.

Weights alone are not enough for a resumed run to match an uninterrupted one; the trainer's parts each save
their own state (optimizer, schedule, sampler, readers, selector, balancer, counters), and this module the
RNG that dropout draws from. Under torch.distributed every rank keeps its own (seeded `seed + rank`): all of
them are saved, and each rank takes its own back when the run resumes on as many processes (on another
number, the data order is still exact; only dropout differs).
"""
import torch

from mtl import distributed


def get_rng(device: torch.device) -> dict:
    """The RNG state dropout draws from (CPU, and the GPU `device` when it is one)."""
    state = {"torch_rng": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def set_rng(device: torch.device, state: dict) -> None:
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], device)


def gather_rng(device: torch.device) -> list[dict] | None:
    """Every rank's dropout RNG, in rank order (a collective: every rank calls it); None in one process."""
    return distributed.gather_objects(get_rng(device)) if distributed.active() else None


def restore_rng(state: dict, device: torch.device, seed: int, step: int) -> None:
    """This rank's dropout RNG from a run state: its own when the state holds one per rank of a run as wide as
    this one; else rank 0 takes the saved one and the others a fresh seed of their own (ranks sharing one
    RNG would all drop the same units)."""
    rank, world, saved = distributed.rank(), distributed.world_size(), state.get("rank_rng")
    if saved is not None and len(saved) == world:
        set_rng(device, saved[rank])
    elif rank == 0:
        set_rng(device, state)
    else:
        torch.manual_seed(seed + rank + 1_000_003 * step)
