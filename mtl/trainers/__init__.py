"""Trainers: Trainer (one task), MultiHeadTrainer (shared backbone, task sampling, the loop), samplers."""
from mtl.trainers.multi_head import MultiHeadTrainer
from mtl.trainers.trainer import Trainer

__all__ = ["Trainer", "MultiHeadTrainer"]
