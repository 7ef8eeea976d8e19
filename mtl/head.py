"""PALM's `head` namespace."""
from mtl.components.heads import *  # noqa: F401,F403
from mtl.components.heads import __all__  # noqa: F401
