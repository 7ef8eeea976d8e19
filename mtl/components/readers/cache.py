"""Tokenized features cached per data file, so a file is tokenized once, not once per run.

An entry is a folder of numpy `.npy` arrays (the columns of a FeatureTable: token values and offsets, scalar
labels, meta as UTF-8 JSON lines) and an `entry.json` describing them; it is opened memory-mapped, so a large
file opens in about the time it takes to read the small index, and only the pages batches touch are read.
Arrays are loaded with allow_pickle=False and meta is JSON: a cache folder may be shared, and neither can run
code. The folder is named by a SHA-256 over everything that decides the features: the data's path, size,
mtime and content (every file of a folder), the reader's class and the source of the reader modules, its
settings (public attributes: max_seqlen, label maps, ...), its tokenizer (serialized, so vocab and
lower-casing count) and mtl's version. A changed file or setting gives another name, so a stale entry is never
read. An entry is written in a temporary folder and renamed into place, so a half-written one is never read.
What loading changed in the reader (label maps built from the training data) is stored in entry.json and
restored on a hit. Features or settings that JSON and flat arrays would not give back exactly (tuples, MRC's
offsets, numpy values) are simply not cached.
"""
import hashlib
import inspect
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mtl.components.readers.table import ZEROS, FeatureTable
from mtl.version import __version__

log = logging.getLogger(__name__)
# set per load_data call or while reading batches: not part of what the features depend on
RUNTIME = {"features", "epoch", "position", "input_file", "batch_size", "num_epochs", "shuffle", "group_by_length",
           "max_tokens", "pad_to_multiple_of", "cache_dir"}


def cached_features(reader: Any, file_format: str, cache_dir: str | Path | None,
                    build: Callable[[], Any]) -> FeatureTable:
    """`build()` (read and tokenize the reader's input file) as a FeatureTable, or the cached table of an
    earlier call with the same file, reader settings and code; the result is written to `cache_dir` when it
    can be."""
    if cache_dir is None or not Path(reader.input_file).exists():  # a missing file: build() says so
        return FeatureTable.of(build())
    before = settings(reader)
    if before is None:
        return FeatureTable.of(build())
    key = _key(reader, file_format, before)
    path = Path(cache_dir).expanduser() / f"{type(reader).__name__}-{key}"
    hit = _read(path, key)
    if hit is not None:
        state, table = hit
        for name, value in state.items():
            setattr(reader, name, value)
        log.info("%s: tokenized features read from the cache %s", reader.input_file, path)
        return table
    table = FeatureTable.of(build())
    after = settings(reader)
    changed = {name: getattr(reader, name) for name in after or {} if before.get(name) != after[name]}
    if after is not None and all(_plain(value) for value in changed.values()):  # restored as they are (order kept)
        _write(path, key, changed, table)
    return table


def settings(reader: Any) -> dict[str, str] | None:
    """The reader's public attributes that decide its features, each as canonical JSON; None when one of
    them cannot be written so (then nothing is cached). The tokenizer counts by its serialized form."""
    out = {}
    for name, value in sorted(vars(reader).items()):
        if name.startswith("_") or name in RUNTIME:
            continue  # leading underscore: scratch state of one _featurize call
        text = _canonical(value)
        if text is None:
            log.debug("%s.%s cannot be written as JSON: its features are not cached", type(reader).__name__, name)
            return None
        out[name] = text
    return out


def _plain(value: Any) -> bool:
    """True for values JSON gives back exactly (what may be restored from an entry)."""
    return not hasattr(value, "backend_tokenizer") and not isinstance(value, np.ndarray)


def _canonical(value: Any) -> str | None:
    if hasattr(value, "backend_tokenizer"):
        # the tokenizer's vocab, normalizer (lower-casing) and splitters; not the truncation it was last called with
        spec = json.loads(value.backend_tokenizer.to_str())
        spec = {k: v for k, v in spec.items() if k not in ("truncation", "padding")}
        digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode("utf-8")).hexdigest()
        return json.dumps({"tokenizer": type(value).__name__, "sha256": digest})
    if isinstance(value, np.ndarray):
        return json.dumps({"ndarray": str(value.dtype), "shape": value.shape,
                           "sha256": hashlib.sha256(value.tobytes()).hexdigest()})
    try:
        text = json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        return None
    return text if json.loads(text) == value else None  # tuples, int dict keys: not given back exactly


def _key(reader: Any, file_format: str, state: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for part in (__version__, f"{type(reader).__module__}.{type(reader).__qualname__}", file_format,
                 json.dumps(state, sort_keys=True)):
        digest.update(part.encode("utf-8") + b"\0")
    for source in _sources(type(reader)):
        digest.update(source.read_bytes() + b"\0")
    _fingerprint(Path(reader.input_file), digest)
    return digest.hexdigest()


def _sources(cls: type) -> list[Path]:
    """The code that featurizes: the modules of the reader's classes and of mtl's readers package."""
    files = {Path(p) for p in (_source_file(c) for c in cls.__mro__) if p}
    files |= set(Path(__file__).parent.glob("*.py"))
    return sorted(files)


def _source_file(cls: type) -> str | None:
    try:
        return inspect.getsourcefile(cls)
    except TypeError:  # built-in classes (object)
        return None


def _fingerprint(path: Path, digest: Any) -> None:
    """Path, size, mtime and content of the data file, or of every file of a data folder."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        stat = file.stat()
        digest.update(f"{file.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode("utf-8"))
        digest.update(hashlib.sha256(file.read_bytes()).digest())


def _read(path: Path, key: str) -> tuple[dict, FeatureTable] | None:
    """(reader state, table) of the entry at `path`, its arrays memory-mapped; None when there is none or
    it is unreadable (then the file is tokenized again)."""
    try:
        entry = json.loads((path / "entry.json").read_text(encoding="utf-8"))
        if not isinstance(entry, dict) or entry.get("key") != key:
            return None
        if not all(isinstance(name, str) and name.isidentifier() for name in [*entry["tokens"], *entry["scalars"]]):
            raise ValueError("a field name that is not an identifier")
        tokens = {name: (ZEROS if kind == ZEROS else _load(path, f"tokens.{name}.values"),
                         _load(path, f"tokens.{name}.offsets")) for name, kind in entry["tokens"].items()}
        scalars = {name: _load(path, f"scalars.{name}") for name in entry["scalars"]}
        table = FeatureTable(int(entry["size"]), tokens, scalars, (_load(path, "meta.bytes"), _load(path, "meta.offsets")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("%s: unreadable cache entry (%s); tokenizing again", path, error)
        return None
    return entry["state"], table


def _load(folder: Path, name: str) -> np.ndarray:
    try:
        return np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
    except ValueError:  # an empty array cannot be memory-mapped
        return np.load(folder / f"{name}.npy", allow_pickle=False)


def _write(path: Path, key: str, state: dict, table: FeatureTable) -> None:
    """Atomically (written in a temporary folder, then renamed), and only when every column is a flat array
    and the state JSON gives back exactly."""
    arrays = _arrays(table)
    entry = {"key": key, "state": state, "size": len(table), "scalars": sorted(table.scalars),
             "tokens": {name: ZEROS if isinstance(column[0], str) else "array" for name, column in table.tokens.items()}}
    text = json.dumps(entry, ensure_ascii=False)
    if arrays is None or json.loads(text) != entry:
        log.debug("%s: features hold values the cache does not give back exactly; not cached", path.name)
        return
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        temporary.mkdir(parents=True, exist_ok=True)
        for name, array in arrays.items():
            np.save(temporary / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        (temporary / "entry.json").write_text(text, encoding="utf-8")  # written last: marks a whole entry
        os.rename(temporary, path)
    except OSError as error:
        shutil.rmtree(temporary, ignore_errors=True)
        if not (path / "entry.json").exists():  # another process may have written the same entry first
            log.warning("%s: could not write the features cache (%s); training goes on without it", path, error)


def _arrays(table: FeatureTable) -> dict[str, np.ndarray] | None:
    """The table's columns by file name; None when one is not a flat array (kept as Python objects)."""
    if table.rows is not None or isinstance(table.meta, list):
        return None
    arrays = {"meta.bytes": table.meta[0], "meta.offsets": table.meta[1]}
    for name, column in table.tokens.items():
        if isinstance(column, list):
            return None
        if not isinstance(column[0], str):
            arrays[f"tokens.{name}.values"] = column[0]
        arrays[f"tokens.{name}.offsets"] = column[1]
    for name, column in table.scalars.items():
        if isinstance(column, list):
            return None
        arrays[f"scalars.{name}"] = column
    return arrays
