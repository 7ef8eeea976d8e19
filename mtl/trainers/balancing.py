"""Loss balancers: how one step's head losses become the one loss that goes backward.

Every head loss arrives already scaled by its static weights (the head's `loss_weight` times its task's
`loss_weight`), under the key `task.head`. A balancer then gives each loss a weight and may add a term of
its own; the step computes `sum(weight[k] * loss[k]) + extra`. Keeping the combination linear in the
losses is what makes every balancer exact under gradient accumulation and torch.distributed: each
micro-batch's share of a loss gets the same weight, and the extra term is added once per process and step.
A balancer that needs each loss's gradient on its own (PCGrad) says so with `per_loss_gradients`; the step
then calls its `combine_gradients` instead.

Balancers are `nn.Module`s held by the model: a learnable weight (uncertainty weighting) is trained by the
run's optimizer, synchronized by DDP, and its state goes into the checkpoint with the rest of the run.
"""
import math

import torch
from torch import nn


class LossBalancer(nn.Module):
    """Plain sum of the (statically weighted) head losses: PALM's and JointBERT's combination."""

    no_weight_decay = True  # its parameters (if any) are weights of losses, not of the model
    per_loss_gradients = False

    def weights(self, keys: list[str]) -> dict[str, torch.Tensor | float]:
        return {key: 1.0 for key in keys}

    def extra(self, keys: list[str]) -> torch.Tensor | float:
        """A term added once per step (uncertainty weighting's regularizer); 0 for most balancers."""
        return 0.0

    def observe(self, losses: dict[str, float]) -> None:
        """After each step: the step's mean head losses (over the whole batch, all processes)."""

    def bind(self, keys: list[str], steps_per_epoch: int) -> None:
        """Told once the run is planned: every loss key (`task.head`) and how many steps make an epoch of the
        reference task."""

    def current_weights(self) -> dict[str, float]:
        """The weights now, for logs (empty for a balancer whose weights never change)."""
        return {}


class UncertaintyWeighting(LossBalancer):
    """Kendall, Gal and Cipolla (2018): a learnable log-variance `s_k` per loss, weighted
    `0.5 * exp(-s_k) * L_k + 0.5 * s_k`. At the optimum `exp(s_k) = L_k`: each loss counts in proportion to
    the inverse of its own size, so a task with a small loss (a token-averaged tagger) is not drowned by
    one with a large loss. `keys`: the losses it weights (`task.head`; others keep weight 1); by default
    every loss of the run. `lr`: the log-variances' own learning rate (they must travel O(1) in a few
    hundred steps: at a fine-tuning lr of 1e-4 they barely move and the weights stay at 0.5); None trains
    them at the model's lr. The run's schedule (warmup, decay) applies to it too."""

    def __init__(self, keys: list[str] | None = None, init_log_var: float = 0.0, lr: float | None = 0.01) -> None:
        super().__init__()
        self.keys = list(keys) if keys is not None else None
        self.init_log_var, self.param_lr = float(init_log_var), lr
        self.log_vars = nn.Parameter(torch.full((len(keys or ()),), self.init_log_var))

    def bind(self, keys: list[str], steps_per_epoch: int) -> None:
        if self.keys is None:
            self.keys = list(keys)
            self.log_vars = nn.Parameter(torch.full((len(self.keys),), self.init_log_var))
        unknown = sorted(set(self.keys) - set(keys))
        if unknown:
            raise ValueError(f"UncertaintyWeighting: no loss named {unknown}; the run's losses are {keys}")

    def weights(self, keys: list[str]) -> dict[str, torch.Tensor | float]:
        index = {key: i for i, key in enumerate(self.keys)}
        return {key: 0.5 * torch.exp(-self.log_vars[index[key]]) if key in index else 1.0 for key in keys}

    def extra(self, keys: list[str]) -> torch.Tensor | float:
        chosen = [i for i, key in enumerate(self.keys) if key in keys]
        return 0.5 * self.log_vars[chosen].sum() if chosen else 0.0

    def current_weights(self) -> dict[str, float]:
        return {key: 0.5 * math.exp(-float(value)) for key, value in zip(self.keys, self.log_vars.detach())}


class DynamicWeightAverage(LossBalancer):
    """DWA (Liu, Johns and Davison 2019): each loss's weight follows how fast it fell over the last two
    periods, `w_k = K * softmax_k(r_k / temperature)` with `r_k = mean L_k(period t-1) / mean L_k(period t-2)`;
    weight 1 for the first two periods. A period is an epoch of the reference task unless `period` (steps)
    is given. A loss falling slowly gets more weight. The history is kept in the checkpoint."""

    def __init__(self, temperature: float = 2.0, period: int | None = None) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"DWA temperature must be > 0, got {temperature}")
        if period is not None and period < 1:
            raise ValueError(f"DWA period must be >= 1 step, got {period}")
        self.temperature, self.period = float(temperature), period
        self.steps = 0
        self.sums: dict[str, float] = {}    # this period's loss sums and counts, per key
        self.counts: dict[str, int] = {}
        self.history: list[dict[str, float]] = []  # the last two finished periods' mean losses
        self._weights: dict[str, float] = {}

    def bind(self, keys: list[str], steps_per_epoch: int) -> None:
        if self.period is None:
            self.period = max(1, int(steps_per_epoch))

    def weights(self, keys: list[str]) -> dict[str, torch.Tensor | float]:
        return {key: self._weights.get(key, 1.0) for key in keys}

    def observe(self, losses: dict[str, float]) -> None:
        for key, value in losses.items():
            if math.isfinite(value):
                self.sums[key] = self.sums.get(key, 0.0) + value
                self.counts[key] = self.counts.get(key, 0) + 1
        self.steps += 1
        if self.period and self.steps % self.period == 0:
            self.history = (self.history + [{k: self.sums[k] / self.counts[k] for k in self.sums}])[-2:]
            self.sums, self.counts = {}, {}
            self._weights = self._dwa_weights()

    def _dwa_weights(self) -> dict[str, float]:
        if len(self.history) < 2:
            return {}
        older, last = self.history
        keys = [k for k in last if k in older and older[k] > 0]
        if not keys:
            return {}
        rates = torch.tensor([last[k] / older[k] for k in keys], dtype=torch.float64)
        weights = len(keys) * torch.softmax(rates / self.temperature, 0)
        return dict(zip(keys, weights.tolist()))

    def current_weights(self) -> dict[str, float]:
        return dict(self._weights)

    def get_extra_state(self) -> dict:
        return {"steps": self.steps, "sums": dict(self.sums), "counts": dict(self.counts),
                "history": [dict(h) for h in self.history], "period": self.period}

    def set_extra_state(self, state: dict) -> None:
        self.steps, self.period = int(state["steps"]), state["period"]
        self.sums, self.counts = dict(state["sums"]), dict(state["counts"])
        self.history = [dict(h) for h in state["history"]]
        self._weights = self._dwa_weights()


class PCGrad(LossBalancer):
    """Gradient surgery (Yu et al. 2020) for heads that share a batch: each head's gradient on the shared
    parameters (the encoder) is projected off the others' where they conflict (negative dot product), in a
    random order per step, then summed. Heads' own parameters get their plain gradients. It costs one
    backward pass through the encoder per loss instead of one in all (measured in BENCHMARKS.md).
    The order comes from its own seeded generator, saved with the run."""

    per_loss_gradients = True

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.generator = torch.Generator().manual_seed(seed)

    def combine_gradients(self, grads: list[torch.Tensor]) -> torch.Tensor:
        """Flat per-loss gradients (one row each, float32) -> the projected sum."""
        projected = [g.clone() for g in grads]
        for i, g in enumerate(projected):
            for j in torch.randperm(len(grads), generator=self.generator).tolist():
                if j == i:
                    continue
                dot = torch.dot(g, grads[j])
                if dot < 0:
                    g -= dot / grads[j].square().sum().clamp_min(1e-20) * grads[j]
        return torch.stack(projected).sum(0)

    def get_extra_state(self) -> dict:
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
