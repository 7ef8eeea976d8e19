"""A module with an import-time side effect: importing it at all creates pwned.txt. A model folder that
names it must be refused before it is imported."""
from pathlib import Path

Path("pwned.txt").write_text("sideeffect was imported")
