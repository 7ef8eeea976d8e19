"""Hard links between checkpoint folders: folders saved at the same moment of a run (the last `step-N` and
`final/`, `best/` and `best-<task>/`) hold the same bytes, so they share one copy on disk.

Safe because no checkpoint file is ever written in place: a save writes new files into a temp folder and
renames it into place, and pruning or replacing a folder only removes its names. A linked file therefore
never changes under any of its names, and each folder stays complete and loadable on its own.
"""
import os
import shutil
from pathlib import Path


def link_or_copy(source: Path, target: Path) -> None:
    """`target` as a hard link of `source` (one copy on disk), or a copy where the file system refuses links
    (FAT, some network mounts, another device)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def link_tree(source: Path, target: Path) -> None:
    """Every file under `source` linked (or copied) to the same place under `target`."""
    for path in sorted(source.rglob("*")):
        destination = target / path.relative_to(source)
        if path.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
        else:
            destination.parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(path, destination)
