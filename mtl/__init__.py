"""mtl: multi-task learning for NLP over one shared pretrained encoder, in the style of PaddlePALM."""
from mtl import backbone, balancer, head, lr_sched, optimizer, reader, saver
from mtl.errors import ConfigError, ContractError, DataError, MtlError
from mtl.predictor import Predictor, load
from mtl.trainers.multi_head import MultiHeadTrainer
from mtl.trainers.solo import Trainer
from mtl.trainers.selection import Selector
from mtl.version import __version__
from mtl import config  # after the trainers: configs are checked against their signatures

__all__ = ["reader", "backbone", "head", "optimizer", "lr_sched", "saver", "balancer", "config", "Trainer",
           "MultiHeadTrainer", "Selector", "Predictor", "load", "ConfigError", "ContractError", "DataError",
           "MtlError"]
