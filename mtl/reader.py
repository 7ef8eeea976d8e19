"""PALM's `reader` namespace."""
from mtl.components.readers import *  # noqa: F401,F403
from mtl.components.readers import __all__  # noqa: F401
