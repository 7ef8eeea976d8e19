"""Trainers: Task and PALM's Trainer (one task), MultiHeadTrainer (shared backbone, task sampling, the loop),
the step, samplers, loss balancers, selection. Import from the modules themselves (`mtl.trainers.multi_head`)
or from the package face (`mtl.MultiHeadTrainer`): this package file imports nothing, so that inference can
use `mtl.trainers.evaluation` without loading the training loop."""
