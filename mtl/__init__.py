"""mtl: multi-task learning for NLP over one shared pretrained encoder, in the style of PaddlePALM."""
from mtl import backbone, head, lr_sched, optimizer, reader, saver
from mtl.errors import ContractError, DataError, MtlError
from mtl.trainers import MultiHeadTrainer, Trainer

__version__ = "0.1.0"
__all__ = ["reader", "backbone", "head", "optimizer", "lr_sched", "saver", "Trainer", "MultiHeadTrainer",
           "ContractError", "DataError", "MtlError"]
