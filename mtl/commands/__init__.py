"""The bodies of the `mtl` verbs (mtl.cli parses the command line and imports the one module a verb needs,
so `mtl --help` and `mtl VERB --help` import neither torch nor transformers, and `mtl predict` no training
module). What every verb shares lives here: the folders `_component_` modules are found in."""
import os
import sys
from pathlib import Path


def import_roots(*folders: Path) -> None:
    """Put `folders` on the import path (after the installed packages, so none is shadowed), as `python -m`
    puts the current folder: a config's `_component_: myheads.Tagger` finds myheads.py beside the config or
    where the command runs. Import errors list the folders searched (mtl.spec)."""
    known = {os.path.abspath(path or os.curdir) for path in sys.path}  # '' is the current folder
    for folder in map(os.path.abspath, folders):
        if folder not in known:
            sys.path.append(folder)
            known.add(folder)
