"""The multi-task model: one shared backbone under each task's heads, one encoder pass per batch. Training
runs it every step; `mtl.load`'s Predictor builds the same module from a model folder."""
import torch
from torch import nn

from mtl.components.backbones.encoder import Encoder
from mtl.components.heads.base import Head
from mtl.components.heads.distill import mix_teacher_loss


class MultiTaskModel(nn.Module):
    """Backbone + heads[task][head]. What PALM called `loss_var`: the optimizer finds parameters here."""

    def __init__(self, backbone: Encoder, heads: dict[str, dict[str, Head]],
                 balancer: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict({task: nn.ModuleDict(task_heads) for task, task_heads in heads.items()})
        self.balancer = balancer  # the trainer's loss balancer (an nn.Module); None for inference

    def encode(self, task: str, batch: dict) -> dict[str, torch.Tensor]:
        """The encoder's outputs for a batch of `task`: with the task's LoRA adapter where it has one (the
        encoder's own weights alone where it has none). A runtime's stand-in encoder (ONNX) has none."""
        if getattr(self.backbone, "adapters", None):
            self.backbone.use_adapter(task if task in self.backbone.adapters else None)
        return self.backbone(batch)

    def forward(self, task: str, batch: dict) -> dict[str, dict[str, torch.Tensor]]:
        """Encode once, then run every head of `task` on the same outputs (the joint mode); a head being
        distilled mixes in its teacher's loss."""
        enc = self.encode(task, batch)
        heads = self.heads[task]
        return {name: mix_teacher_loss(head, head(batch, enc), batch, enc) for name, head in heads.items()}
