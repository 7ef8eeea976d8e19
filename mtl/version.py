"""The package's version, in a module of its own: setup.cfg reads it without importing torch, and modules
that record it (checkpoints, the features cache) need not import the package face."""
__version__ = "0.1.0"
