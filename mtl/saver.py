"""PALM's `saver` namespace."""
from mtl.components.savers import *  # noqa: F401,F403
from mtl.components.savers import __all__  # noqa: F401
