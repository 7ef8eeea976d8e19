"""Trainers: Task and PALM's Trainer (one task), MultiHeadTrainer (shared backbone, task sampling, the loop)
and its parts, the step, samplers, loss balancers, selection. Import from the modules themselves
(`mtl.trainers.multi_head`) or from the package face (`mtl.MultiHeadTrainer`): this package file imports
nothing. What inference shares with training (the model, device and precision, decoding) lives in mtl.model."""
