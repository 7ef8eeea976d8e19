"""A module with an import-time side effect: importing it at all creates pwned.txt. A model folder that
names it must be refused before it is imported."""
from pathlib import Path

Path("pwned.txt").write_text("sideeffect.heads was imported")

import mtl  # noqa: E402


class Evil(mtl.head.Classify):
    """A real Head subclass: only the import gives it away."""
