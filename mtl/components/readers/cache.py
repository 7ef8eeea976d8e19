"""Tokenized features cached per data file, so a file is tokenized once, not once per run.

A cache entry is a JSON file (never pickle: a cache folder may be shared, and JSON cannot run code) named by
a SHA-256 over everything that decides the features: the data's path, size, mtime and content (every file of
a folder), the reader's class and the source of the reader modules, its settings (public attributes:
max_seqlen, label maps, ...), its tokenizer (serialized, so vocab and lower-casing count) and mtl's version.
A changed file or setting gives another name, so a stale entry is never read. What loading changed in the
reader (label maps built from the training data) is stored with the features and restored on a hit.
Features or settings that JSON would not give back exactly (tuples, numpy values) are simply not cached.
"""
import hashlib
import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mtl.components.readers.feature import Feature
from mtl.version import __version__

log = logging.getLogger(__name__)
# set per load_data call or while reading batches: not part of what the features depend on
RUNTIME = {"features", "epoch", "position", "input_file", "batch_size", "num_epochs", "shuffle", "group_by_length",
           "max_tokens", "pad_to_multiple_of", "cache_dir"}
_NOT_JSON = object()


def cached_features(reader: Any, file_format: str, cache_dir: str | Path | None, build: Callable[[], list]) -> list:
    """`build()` (read and tokenize the reader's input file), or the cached result of an earlier call with
    the same file, reader settings and code; the result is written to `cache_dir` when it can be."""
    if cache_dir is None or not Path(reader.input_file).exists():  # a missing file: build() says so
        return build()
    before = settings(reader)
    if before is None:
        return build()
    key = _key(reader, file_format, before)
    path = Path(cache_dir).expanduser() / f"{type(reader).__name__}-{key}.json"
    hit = _read(path, key)
    if hit is not None:
        for name, value in hit["state"].items():
            setattr(reader, name, value)
        log.info("%s: tokenized features read from the cache %s", reader.input_file, path)
        return [_feature(item) for item in hit["features"]]
    features = build()
    after = settings(reader)
    changed = {name: getattr(reader, name) for name in after or {} if before.get(name) != after[name]}
    if after is not None and all(_plain(value) for value in changed.values()):  # restored as they are (order kept)
        _write(path, {"key": key, "state": changed,
                      "features": [{"fields": f.fields, "meta": f.meta} for f in features]})
    return features


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


def _read(path: Path, key: str) -> dict | None:
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        log.warning("%s: unreadable cache entry (%s); tokenizing again", path, error)
        return None
    return entry if isinstance(entry, dict) and entry.get("key") == key else None


def _write(path: Path, entry: dict) -> None:
    """Atomically (a half-written entry is never read), and only when JSON gives the features back exactly."""
    text = json.dumps(entry, ensure_ascii=False)
    if json.loads(text) != entry:
        log.debug("%s: features hold values JSON does not give back exactly; not cached", path.name)
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    except OSError as error:
        log.warning("%s: could not write the features cache (%s); training goes on without it", path, error)


def _feature(item: dict) -> Feature:
    return Feature(item["fields"], item["meta"])
