"""What training and inference share, and nothing else: the multi-task model (one encoder under each task's
heads), device and precision, the one decode path, and the description of a task that decoding needs.

Trainers (mtl.trainers) and inference (mtl.predictor, mtl.serving, mtl.distill's teacher) both import these
modules; nothing here imports a trainer, an optimizer, a schedule or a config. Import from the modules
themselves (`mtl.model.device`): this package file imports nothing, so `mtl.model.device` stays as light as
torch."""
