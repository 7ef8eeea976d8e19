"""The module every step runs: one shared backbone, each task's heads; one encoder pass per batch."""
import torch
from torch import nn

from mtl.components.backbones.encoder import Encoder
from mtl.components.heads.base import Head
from mtl.trainers.balancing import LossBalancer


class MultiTaskModel(nn.Module):
    """Backbone + heads[task][head]. What PALM called `loss_var`: the optimizer finds parameters here."""

    def __init__(self, backbone: Encoder, heads: dict[str, dict[str, Head]],
                 balancer: LossBalancer | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict({task: nn.ModuleDict(task_heads) for task, task_heads in heads.items()})
        self.balancer = balancer if balancer is not None else LossBalancer()

    def forward(self, task: str, batch: dict) -> dict[str, dict[str, torch.Tensor]]:
        """Encode once, then run every head of `task` on the same outputs (the joint mode)."""
        enc = self.backbone(batch)
        return {name: head(batch, enc) for name, head in self.heads[task].items()}

    def task_loss(self, task: str, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """Sum of the task's head losses, and each loss as a float for logging."""
        outputs = self(task, batch)
        losses = {name: out["loss"] for name, out in outputs.items() if "loss" in out}
        if not losses:
            raise RuntimeError(f"task {task!r}: no head returned a loss; does the reader yield labels?")
        keys = [f"{task}.{name}" for name in losses]
        weights = self.balancer.weights(keys)
        total = sum(weights[key] * self.heads[task][name].loss_weight * loss for key, (name, loss)
                    in zip(keys, losses.items())) + self.balancer.extra(keys)
        # the heads' losses reach the host in one copy (on a GPU each float(tensor) waits for the device)
        values = torch.stack([loss.detach().float() for loss in losses.values()]).tolist()
        return total, dict(zip(losses, values))


def unique_state(module: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The state dict with each tensor once, under its first name, and the names left out (aliases).

    A head shared by two tasks (`reuse_head_with`) is one set of weights reachable under both tasks' names:
    it is saved once (safetensors refuses a tensor twice) and tied again by the model it is loaded into."""
    kept: dict[str, torch.Tensor] = {}
    aliases: list[str] = []
    seen: set[int] = set()
    for name, tensor in module.state_dict(keep_vars=True).items():
        if id(tensor) in seen:
            aliases.append(name)
            continue
        seen.add(id(tensor))
        kept[name] = tensor.detach()
    return kept, aliases
