"""PALM's `lr_sched` namespace."""
from mtl.components.lr_schedulers import *  # noqa: F401,F403
from mtl.components.lr_schedulers import __all__  # noqa: F401
