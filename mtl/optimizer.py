"""PALM's `optimizer` namespace."""
from mtl.components.optimizers import *  # noqa: F401,F403
from mtl.components.optimizers import __all__  # noqa: F401
