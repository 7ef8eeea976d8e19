"""sha256 of files and model folders: what identifies a served model (/metadata) and a teacher's cached
targets (mtl.distill), computed one way."""
import hashlib
import os
from pathlib import Path


def file_checksum(path: str | Path) -> str:
    """`sha256:` and the hex digest of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def folder_checksum(folder: str | Path) -> str:
    """sha256 over every regular file of the folder (relative path and bytes, in sorted order; links are not
    followed): two folders with the same checksum hold the same model."""
    folder, digest = Path(folder), hashlib.sha256()
    files = sorted(Path(root, name) for root, _, names in os.walk(folder) for name in names)
    for path in files:
        if path.is_symlink() or not path.is_file():
            continue
        digest.update(path.relative_to(folder).as_posix().encode("utf-8") + b"\0")
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()
