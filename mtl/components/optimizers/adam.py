"""PALM's Adam verb: AdamW (decoupled weight decay), no decay on bias or LayerNorm, global-norm clipping."""
import logging

import torch
from torch import nn

from mtl.components.lr_schedulers.schedules import Scheduler, TriangularScheduler

log = logging.getLogger(__name__)


def decay_groups(model: nn.Module, weight_decay: float, head_lr: float | None = None) -> list[dict]:
    """Two parameter groups: decayed weights, and biases + normalization weights (and the parameters of a module
    that sets `no_weight_decay`) without decay. A module that sets `param_lr` (a loss balancer's learnable
    weights, which must move much faster than the model's) gets a third group at that lr, without decay.
    With `head_lr`, every parameter outside `model.backbone` (the heads) moves at that lr, in two more groups."""
    no_decay, own_lr = set(), {}
    for module in model.modules():
        if (isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d)) or "norm" in type(module).__name__.lower()
                or getattr(module, "no_weight_decay", False)):  # e.g. a loss balancer's learnable weights
            no_decay.update(id(p) for p in module.parameters(recurse=False))
        if getattr(module, "param_lr", None) is not None:
            own_lr.update({id(p): float(module.param_lr) for p in module.parameters()})
    for name, param in model.named_parameters():
        if name.endswith("bias"):
            no_decay.add(id(param))
    head = _head_parameters(model) if head_lr is not None else set()
    params = [p for p in model.parameters() if p.requires_grad and id(p) not in own_lr]
    encoder = [p for p in params if id(p) not in head]
    groups = [{"params": [p for p in encoder if id(p) not in no_decay], "weight_decay": weight_decay},
              {"params": [p for p in encoder if id(p) in no_decay], "weight_decay": 0.0}]
    if head:
        groups += [{"params": [p for p in params if id(p) in head and id(p) not in no_decay],
                    "weight_decay": weight_decay, "lr": head_lr},
                   {"params": [p for p in params if id(p) in head and id(p) in no_decay], "weight_decay": 0.0,
                    "lr": head_lr}]
    for lr in sorted(set(own_lr.values())):
        groups.append({"params": [p for p in model.parameters() if own_lr.get(id(p)) == lr and p.requires_grad],
                       "weight_decay": 0.0, "lr": lr})
    return groups


def _head_parameters(model: nn.Module) -> set[int]:
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise ValueError(f"Adam(head_lr=...) needs a model with a `backbone` (the shared encoder) to tell the heads "
                         f"apart; {type(model).__name__} has none")
    encoder = {id(p) for p in backbone.parameters()}
    return {id(p) for p in model.parameters() if id(p) not in encoder}


class Adam:
    """The one home of the optimizer's settings (lr, weight decay, betas, eps, clipping, lr schedule); it holds
    them until the trainer knows every parameter and the number of steps (PALM's `build_backward`).

    `loss_var` is what `build_forward` returned (the model); it may be None when the trainer supplies it.
    `head_lr` gives the heads their own peak lr (the schedule scales it like `lr`): an encoder whose outputs are
    small (sentence-embedding models such as all-mpnet-base-v2, whose hidden states are a quarter of BERT's scale)
    leaves freshly initialised heads crawling at an lr that suits the encoder.
    """

    def __init__(self, loss_var: nn.Module | None = None, lr: float = 5e-5, lr_schedule: Scheduler | None = None,
                 weight_decay: float = 0.01, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 max_grad_norm: float | None = 1.0, fused: bool | None = None, head_lr: float | None = None) -> None:
        self.model, self.lr, self.lr_schedule, self.head_lr = loss_var, lr, lr_schedule, head_lr
        self.weight_decay, self.betas, self.eps = weight_decay, betas, eps
        self.max_grad_norm, self.fused = max_grad_norm, fused

    def build(self, model: nn.Module | None = None) -> torch.optim.AdamW:
        """The torch optimizer over `model` (fused kernels where the device supports them)."""
        model = model if model is not None else self.model
        if model is None:
            raise ValueError("Adam: no parameters; pass the value build_forward returned as loss_var")
        groups = decay_groups(model, self.weight_decay, self.head_lr)
        return torch.optim.AdamW(groups, lr=self.lr, betas=self.betas, eps=self.eps, fused=self._fused(model))

    def build_schedule(self, optimizer: torch.optim.Optimizer, total_steps: int,
                       warmup_proportion: float) -> torch.optim.lr_scheduler.LambdaLR:
        """The lr schedule over a run of `total_steps` (the number that really runs): `lr_schedule`, or PALM's
        triangular one warming up over `warmup_proportion` of the steps."""
        schedule = self.lr_schedule or TriangularScheduler(int(warmup_proportion * total_steps))
        schedule.bind(total_steps)
        if schedule.num_train_steps != total_steps:
            log.warning("the lr schedule counts %d steps but training runs %d (PALM's examples under-counted them; "
                        "leave num_train_steps=None to use the real number)", schedule.num_train_steps, total_steps)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.factor)

    def _fused(self, model: nn.Module) -> bool:
        if self.fused is not None:
            return self.fused
        device = next(model.parameters()).device.type
        return device in ("cuda", "cpu")
