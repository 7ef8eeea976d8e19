"""Each loss's gradient on the shared encoder kept apart, for balancers that combine gradients (PCGrad).

The step runs one backward per loss; after each, the encoder's gradients are moved into that loss's flat
accumulator (float32), so micro-batches add up per loss. Heads' parameters keep their plain gradients: only
their own loss reaches them. At the end of the step, under torch.distributed, every accumulator and every
head gradient is averaged over processes by hand (the step ran the backward passes without DDP's
all-reduce), then the balancer combines the accumulators into the encoder's gradient.
"""
import torch
from torch import nn

from mtl import distributed


class SeparateGradients:
    """Per-loss encoder gradients of one step (see the module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.shared = [p for p in model.backbone.parameters() if p.requires_grad]
        self.sums: dict[str, torch.Tensor] = {}

    def backward(self, losses: dict[str, torch.Tensor]) -> None:
        """Backward of each loss in turn (the graph kept until the last), its encoder gradient set aside."""
        items = list(losses.items())
        for index, (key, loss) in enumerate(items):
            loss.backward(retain_graph=index < len(items) - 1)
            flat = torch.cat([p.grad.reshape(-1).float() if p.grad is not None else
                              torch.zeros(p.numel(), device=p.device) for p in self.shared])
            self.sums[key] = self.sums[key] + flat if key in self.sums else flat
            for param in self.shared:
                param.grad = None

    def finish(self, balancer: nn.Module) -> None:
        """Average over processes, combine (`balancer.combine_gradients`), write the encoder's gradients."""
        world = distributed.world_size()
        grads = [distributed.all_reduce_sum(g) / world for g in self.sums.values()]
        if world > 1:
            shared = {id(p) for p in self.shared}
            for param in self.model.parameters():
                if param.grad is not None and id(param) not in shared:
                    param.grad.copy_(distributed.all_reduce_sum(param.grad) / world)
        combined = balancer.combine_gradients(grads)
        offset = 0
        for param in self.shared:
            size = param.numel()
            param.grad = combined[offset:offset + size].view_as(param).to(param.dtype)
            offset += size
