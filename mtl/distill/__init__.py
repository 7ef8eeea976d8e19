"""Knowledge distillation: a teacher (one model folder, an ensemble, or one per task) labels the training data
once (kept on disk, memory-mapped); a student, any encoder with the teachers' label spaces, trains on a mix of
the teacher's soft targets and the labels through an ordinary MultiHeadTrainer (docs/distillation.md)."""
from mtl.distill.student import distill_into
from mtl.distill.teacher import Teacher

__all__ = ["Teacher", "distill_into"]
