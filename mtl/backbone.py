"""PALM's `backbone` namespace."""
from mtl.components.backbones import *  # noqa: F401,F403
from mtl.components.backbones import __all__  # noqa: F401
