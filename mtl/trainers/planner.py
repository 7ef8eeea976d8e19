"""A MultiHeadTrainer's plan: the model joined from the tasks' heads over one backbone, the optimizer, and
the length of the run (PALM's budgets, the exact number of steps) with the schedule bound to it."""
import copy
import warnings
from typing import Any

from mtl import distributed
from mtl.components.optimizers.adam import Adam
from mtl.model.multitask import MultiTaskModel
from mtl.trainers.sampling import MixRatioSampler, plan_run


def attach_adapters(backbone: Any, tasks: list) -> None:
    """Each task's LoRA adapter in the shared encoder (once); the encoder's own weights train only where some
    task has no adapter (it fine-tunes the encoder, the adapters of the others sit over it)."""
    for task in tasks:
        if task.adapter is not None and task.name not in backbone.adapters:
            backbone.add_adapter(task.name, task.adapter)
    if backbone.adapters:
        backbone.set_trainable(base=any(task.adapter is None for task in tasks))


def refuse_shared_readers(tasks: list) -> None:
    """One reader per task: a reader keeps one position in its data, and two tasks drawing from it would each
    skip the other's batches, in an order a resumed run could not repeat."""
    owners: dict[int, str] = {}
    for task in tasks:
        if task.reader is None:
            continue
        if id(task.reader) in owners:
            raise ValueError(f"tasks {owners[id(task.reader)]!r} and {task.name!r} share one reader object; give "
                             "each task its own (two readers may load the same file)")
        owners[id(task.reader)] = task.name


class Planner:
    """Assembles and plans for one trainer (a MultiHeadTrainer): writes what it decides onto the trainer
    (`model`, `adam`, `sampler`, `total_steps`, each task's `budget`, `optimizer`, `scheduler`), where the
    loop, the checkpoints and the user read it."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.sampler_start: dict | None = None  # the sampler's first state: every plan starts where the run did

    def ready_model(self) -> MultiTaskModel:
        """The trainer's model, joined now if it is not yet."""
        return self.trainer.model if self.trainer.model is not None else self.assemble()

    def assemble(self) -> MultiTaskModel:
        """Join the tasks' heads over the one shared backbone (PALM's `build_forward`)."""
        trainer = self.trainer
        backbones = {id(t.backbone): t.backbone for t in trainer.tasks if t.backbone is not None}
        if trainer.backbone is not None:
            backbones.setdefault(id(trainer.backbone), trainer.backbone)
        if len(backbones) != 1:
            raise ValueError(f"tasks must share exactly one backbone, found {len(backbones)}")
        trainer.backbone = next(iter(backbones.values()))
        for task in trainer.tasks:
            task.build_forward(trainer.backbone)
        attach_adapters(trainer.backbone, trainer.tasks)
        trainer.model = MultiTaskModel(trainer.backbone, {t.name: t.heads for t in trainer.tasks},
                                       trainer.balancer).to(trainer.device)
        if trainer.compile:
            # in place (nn.Module.compile): parameter names and checkpoints stay those of the eager model
            trainer.backbone.compile(dynamic=True)
        return trainer.model

    def optimizer(self, optimizer: Adam | None, weight_decay: float | None) -> Adam:
        """The run's optimizer (PALM's `build_backward`): the one given, or an Adam from the trainer's `lr` and
        `weight_decay`; a trainer value that differs from a given optimizer's is ignored, with a warning."""
        given = {"lr": self.trainer.lr, "weight_decay": self.trainer.weight_decay}
        if optimizer is None:
            optimizer = Adam(**{name: value for name, value in given.items() if value is not None})
        ignored = [f"{name}={value} (the optimizer's: {getattr(optimizer, name)})" for name, value in given.items()
                   if value is not None and value != getattr(optimizer, name)]
        if ignored:  # the optimizer is the one home of its settings
            warnings.warn(f"MultiHeadTrainer {', '.join(ignored)} is not used: the optimizer given to build_backward "
                          "has its own settings, and they win (give lr and weight_decay to mtl.optimizer.Adam)",
                          UserWarning, stacklevel=3)
        if weight_decay is not None:
            optimizer.weight_decay = weight_decay
        return optimizer

    def plan(self) -> None:
        """Budgets, the exact number of steps, then optimizer and schedule bound to that number."""
        trainer = self.trainer
        refuse_shared_readers(trainer.tasks)
        trainer.sampler = trainer.sampler or MixRatioSampler([t.mix_ratio for t in trainer.tasks], trainer.seed)
        self.sampler_start = self.sampler_start or copy.deepcopy(trainer.sampler.state_dict())
        trainer.sampler.load_state_dict(copy.deepcopy(self.sampler_start))
        plan = plan_run(trainer.tasks, trainer.reference, trainer.num_epochs, trainer.sampler)
        trainer.num_epochs, trainer.total_steps = plan.num_epochs, plan.total_steps
        for task, budget in zip(trainer.tasks, plan.budgets):
            task.budget = budget
        distributed.check_same("the run plan (steps, budgets, sampler state)",
                               (trainer.total_steps, plan.budgets, self.sampler_start))
        model = self.ready_model()
        if trainer.adam is None:
            trainer.adam = self.optimizer(None, None)
        trainer.balancer.bind([f"{t.name}.{h}" for t in trainer.tasks for h in t.heads], plan.base)
        trainer.balancer.to(trainer.device)  # a parameter it made on binding
        trainer.optimizer = trainer.adam.build(model)
        trainer.scheduler = trainer.adam.build_schedule(trainer.optimizer, trainer.total_steps,
                                                        trainer.warmup_proportion)
