"""Vocabulary trimming: a multilingual encoder cut down to the pieces some corpora use, before fine-tuning.

multilingual-e5-small spends 96M of its 117.7M parameters on 250,037 word embeddings, most of them pieces a
Chinese task never meets. `trim_vocabulary(folder, corpora, out)` tokenizes the corpora (UTF-8 files, one text
per non-empty line, taken whole: write a data file's texts one per line, not its labels) with the folder's
tokenizer and writes a folder with the special tokens, the pieces used `min_count` times or more and a
fallback, the embedding rows (and an MLM decoder's) and tokenizer remapped to them, in order, scores kept.
The fallback: the piece of each single character seen or in `keep_chars` (WordPiece: its `##` form too), so
an unseen word is spelt in characters, not lost to `<unk>`; a Unigram model's lowest-scored piece (`<unk>`
scores that minus 10: it must not move) and byte pieces; the pieces WordPiece matched in a word before
giving it up as `[UNK]` (so it fails the same way). With `min_count=1` it is exact on the corpora: a Viterbi
over a superset of the best path's pieces, with the same scores, `<unk>` score and single-character pieces,
finds the same path (ties too: the first candidate wins, in the same order), a greedy WordPiece the same
longest matches, and the rows are copied. `out` appears whole or not at all (written beside it, renamed):
config, weights, tokenizer files and trim.json (checksums, counts, what was kept and why, each new id's
source id); other files (a sentencepiece model, pooling configs) are not copied.
"""
import json
import shutil
import tempfile
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

from mtl.checksums import file_checksum, folder_checksum
from mtl.errors import MtlError

MODELS = ("Unigram", "WordPiece")
PROCESSORS = {"TemplateProcessing", "BertProcessing", "RobertaProcessing", "ByteLevel", "Sequence", None}
VOCAB_TENSORS = ("word_embeddings.weight", "decoder.weight", "decoder.bias", "predictions.bias", "lm_head.bias")
BATCH = 1024  # texts per encode_batch call: bounds the memory the encodings hold


@dataclass
class Source:
    """A model folder, read and checked: what counting and writing need."""

    folder: Path
    spec: dict  # tokenizer.json, as data to rewrite
    tokenizer: Tokenizer
    pieces: list[str]  # the model's pieces by id
    config: dict
    size: int  # the ids the tokenizer gives: the model's pieces and the added tokens
    unk: int | None  # the unknown token's id


def read_corpus(path: str | Path) -> list[str]:
    """The texts of a corpus file: one per non-empty line (a final `\r` dropped)."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise MtlError(f"{path}: cannot read the corpus ({error.strerror or error})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise MtlError(f"{path}, line {line}: not UTF-8 text (a corpus is UTF-8, one text per line)") from None
    texts = [line.removesuffix("\r") for line in text.split("\n") if line.strip()]
    if not texts:
        raise MtlError(f"{path}: empty corpus (it needs at least one text, one per line)")
    return texts


def read_source(folder: Path) -> Source:
    """tokenizer.json (refused unless its model and post-processor are ones this module remaps), config.json
    and model.safetensors, checked before any work."""
    path = folder / "tokenizer.json"
    try:
        text = path.read_text(encoding="utf-8")
        spec = json.loads(text)
        kind, added = spec["model"]["type"], spec.setdefault("added_tokens", [])
        pieces = model_pieces(spec["model"]) if kind in MODELS else []
        processors = _processor_kinds(spec.get("post_processor") or {}) - PROCESSORS
    except OSError as error:
        raise MtlError(f"{path}: cannot read it ({error.strerror or error}): trimming needs a fast tokenizer's "
                       "tokenizer.json") from None
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise MtlError(f"{path}: not a tokenizers JSON file with a Unigram or WordPiece model ({error})") from None
    if kind not in MODELS or processors:
        what = f"model is {kind}" if kind not in MODELS else f"post-processor is {processors.pop()}"
        raise MtlError(f"{path}: the tokenizer's {what}; trimming handles Unigram and WordPiece models with "
                       "template, BERT, RoBERTa or byte-level post-processors")
    try:
        tokenizer = Tokenizer.from_str(text)
    except Exception as error:  # tokenizers raises plain Exception on a bad file
        raise MtlError(f"{path}: tokenizers cannot load it ({error})") from None
    tokenizer.no_truncation()  # count every piece of a long text (the folder keeps its own settings)
    tokenizer.no_padding()
    config, size = _read_json(folder / "config.json"), max([len(pieces)] + [token["id"] + 1 for token in added])
    if config.get("vocab_size", size) < size:
        raise MtlError(f"{folder / 'config.json'}: vocab_size {config['vocab_size']} < the tokenizer's {size} ids")
    if not (folder / "model.safetensors").is_file():
        raise MtlError(f"{folder / 'model.safetensors'}: missing: trimming reads the weights from one safetensors "
                       "file (save_pretrained sharded or pickled weights into one first)")
    unk = spec["model"].get("unk_id") if kind == "Unigram" else tokenizer.token_to_id(spec["model"]["unk_token"])
    return Source(folder, spec, tokenizer, pieces, config, size, unk)


def _processor_kinds(processor: dict) -> set:
    return {processor.get("type")}.union(*(_processor_kinds(p) for p in processor.get("processors", [])))


def model_pieces(model: dict) -> list[str]:
    """The model's pieces, indexed by id."""
    if model["type"] != "WordPiece":
        return [piece for piece, _ in model["vocab"]]
    pieces = sorted(model["vocab"], key=model["vocab"].get)
    if [model["vocab"][piece] for piece in pieces] != list(range(len(pieces))):
        raise ValueError("the WordPiece vocabulary's ids are not 0..N-1")
    return pieces


def count_pieces(source: Source, texts: list[str]) -> tuple[np.ndarray, set, set]:
    """How often each id is used on `texts` (no special tokens added), the characters the model meets, and
    (WordPiece) the pieces matched in the texts that have a `[UNK]`."""
    model, counts, chars, matched = source.spec["model"], np.zeros(source.size, np.int64), set(), set()
    for start in range(0, len(texts), BATCH):
        batch = texts[start:start + BATCH]
        encodings = source.tokenizer.encode_batch(batch, add_special_tokens=False)
        ids = np.fromiter(chain.from_iterable(encoding.ids for encoding in encodings), np.int64)
        counts += np.bincount(ids, minlength=source.size)
        for text, encoding in zip(batch, encodings):
            if model["type"] == "Unigram":  # its pieces (an `<unk>` too) spell out the words
                chars.update("".join(encoding.tokens))
                continue
            words = _words(source.tokenizer, text)
            chars.update("".join(words))
            if source.unk in encoding.ids:
                matched.update(chain.from_iterable(_wordpiece_matches(word, model) for word in words))
    return counts, chars, matched


def _words(tokenizer: Tokenizer, text: str) -> list[str]:
    text = tokenizer.normalizer.normalize_str(text) if tokenizer.normalizer else text
    return [word for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(text)] if tokenizer.pre_tokenizer else [text]


def _wordpiece_matches(word: str, model: dict) -> list[str]:
    """The longest matches WordPiece takes in `word`, up to where it finds none (the word is then `[UNK]`)."""
    vocab, prefix, found, start = model["vocab"], model.get("continuing_subword_prefix") or "", [], 0
    while start < len(word) <= model.get("max_input_chars_per_word", 100):  # a longer word is `[UNK]` at once
        lead = prefix if start else ""
        end = next((end for end in range(len(word), start, -1) if lead + word[start:end] in vocab), None)
        if end is None:
            break
        found.append(lead + word[start:end])
        start = end
    return found


def choose(source: Source, counts: np.ndarray, chars: set, min_count: int, keep_chars: str,
           matched: set) -> dict[int, str]:
    """Old id -> why it is kept ('special', 'used', 'char', 'fallback'), the first reason that applies."""
    model, index, why = source.spec["model"], {piece: i for i, piece in enumerate(source.pieces)}, {}
    _keep(why, "special", [token["id"] for token in source.spec["added_tokens"]] + [source.unk] + [
        v for k, v in source.config.items() if k.endswith("_token_id") and type(v) is int and 0 <= v < source.size])
    _keep(why, "used", np.flatnonzero(counts >= min_count).tolist() + [index[piece] for piece in matched])
    forms = ("",) if model["type"] == "Unigram" else ("", model.get("continuing_subword_prefix") or "")
    _keep(why, "char", [index.get(form + char) for char in sorted(chars | set(keep_chars)) for form in forms])
    if model["type"] == "Unigram":
        bytes_ = [index.get(f"<0x{byte:02X}>") for byte in range(256)] if model.get("byte_fallback") else []
        _keep(why, "fallback", [int(np.argmin([score for _, score in model["vocab"]]))] + bytes_)
    return why


def _keep(why: dict[int, str], reason: str, ids: list[int | None]) -> None:
    for i in ids:
        if i is not None:
            why.setdefault(i, reason)


def rewrite_tokenizer(spec: dict, pieces: list[str], kept: list[int]) -> dict:
    """tokenizer.json over the kept ids (new id = rank among them): the same normalizer, pre-tokenizer and
    decoder; the model, added tokens, post-processor and padding with the new ids."""
    new = {old: rank for rank, old in enumerate(kept)}
    spec, model = json.loads(json.dumps(spec)), spec["model"]  # a deep copy to edit
    inside = [old for old in kept if old < len(pieces)]
    if model["type"] == "Unigram":
        spec["model"]["vocab"] = [model["vocab"][old] for old in inside]
        spec["model"]["unk_id"] = new.get(model.get("unk_id"))  # None stays None
    else:
        spec["model"]["vocab"] = {pieces[old]: new[old] for old in inside}
    for token in spec["added_tokens"]:
        token["id"] = new[token["id"]]
    ids = {**{pieces[old]: new[old] for old in inside}, **{t["content"]: t["id"] for t in spec["added_tokens"]}}
    if spec.get("post_processor"):
        spec["post_processor"] = _remap_processor(spec["post_processor"], ids)
    if spec.get("padding") and spec["padding"].get("pad_token") in ids:
        spec["padding"]["pad_id"] = ids[spec["padding"]["pad_token"]]
    return spec


def _remap_processor(processor: dict, ids: dict[str, int]) -> dict:
    kind = processor.get("type")
    if kind == "TemplateProcessing":
        for special in processor["special_tokens"].values():
            special["ids"] = [ids[token] for token in special["tokens"]]
    elif kind in ("BertProcessing", "RobertaProcessing"):
        processor["sep"], processor["cls"] = ([token, ids[token]] for token, _ in (processor["sep"], processor["cls"]))
    elif kind == "Sequence":
        processor["processors"] = [_remap_processor(p, ids) for p in processor["processors"]]
    return processor


def trim_weights(source: Path, out: Path, kept: list[int], rows: int) -> tuple[int, int]:
    """model.safetensors with the kept rows of every token-indexed tensor; (parameters before, after)."""
    path = source / "model.safetensors"
    try:
        tensors = load_file(str(path))
    except Exception as error:  # safetensors raises its own errors, and OSError
        raise MtlError(f"{path}: cannot read the weights ({error})") from None
    select, before = torch.as_tensor(kept), sum(t.numel() for t in tensors.values())
    for name, tensor in tensors.items():  # by name: an intermediate size may equal the vocabulary's by chance
        if name.endswith(VOCAB_TENSORS):
            if tensor.shape[0] != rows:
                raise MtlError(f"{path}: tensor {name} has {tensor.shape[0]} rows, config.json's vocab_size is {rows}")
            tensors[name] = tensor.index_select(0, select).contiguous()
    if not any(name.endswith("word_embeddings.weight") for name in tensors):
        raise MtlError(f"{path}: no word_embeddings.weight tensor (not an encoder's weights?)")
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    return before, sum(t.numel() for t in tensors.values())


def trim_vocabulary(folder: str | Path, corpora: Sequence[str | Path], out: str | Path, min_count: int = 1,
                    keep_chars: str = "") -> dict:
    """Write `out`: the encoder in `folder` with only the pieces `corpora` use (module docstring); return
    what trim.json records."""
    folder, out = Path(folder), Path(out)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise MtlError(f"{out}: already exists; remove it or choose another output folder")
    if not corpora or min_count < 1:
        raise MtlError(f"trimming needs at least one corpus and min_count >= 1 (got {len(corpora)}, {min_count})")
    source, checksum = read_source(folder), folder_checksum(folder)
    texts = {Path(path): read_corpus(path) for path in corpora}
    counts, chars, matched, record = np.zeros(source.size, np.int64), set(), set(), []
    for path, lines in texts.items():
        used, seen, tried = count_pieces(source, lines)
        counts, chars, matched = counts + used, chars | seen, matched | tried
        record.append({"file": str(path.resolve()), "checksum": file_checksum(path), "texts": len(lines),
                       "tokens": int(used.sum())})
    why = choose(source, counts, chars, min_count, keep_chars, matched)
    kept, rows = sorted(why), source.config.get("vocab_size", source.size)
    reasons = {reason: list(why.values()).count(reason) for reason in ("special", "used", "char", "fallback")}
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as temporary:
        (work := Path(temporary) / out.name).mkdir()
        parameters = _write_folder(source, work, kept, rows)
        trimmed = {"source": str(folder.resolve()), "source_checksum": checksum, "corpora": record,
                   "model": source.spec["model"]["type"], "min_count": min_count, "keep_chars": keep_chars,
                   "vocab_size": [rows, len(kept)], "parameters": list(parameters), "kept": reasons,
                   "unknown_tokens": int(counts[source.unk]) if source.unk is not None else 0,
                   "rare_dropped": int(((counts > 0) & (counts < min_count)).sum()),
                   "source_ids": kept, "counts": counts[kept].tolist()}
        _write_json(work / "trim.json", trimmed)
        if out.exists():
            out.rmdir()  # empty, as checked above
        work.rename(out)  # the folder appears whole or not at all
    return trimmed


def _write_folder(source: Source, work: Path, kept: list[int], rows: int) -> tuple[int, int]:
    """The weights, config.json (new vocab_size and token ids), tokenizer.json, tokenizer_config.json (its
    `added_tokens_decoder` by new ids), special_tokens_map.json and a WordPiece vocab.txt where the source has
    them; (parameters before, after)."""
    parameters, folder = trim_weights(source.folder, work, kept, rows), source.folder
    new = {old: rank for rank, old in enumerate(kept)}
    ids = {k: new[v] for k, v in source.config.items() if k.endswith("_token_id") and type(v) is int and v in new}
    _write_json(work / "config.json", {**source.config, **ids, "vocab_size": len(kept)})
    spec = rewrite_tokenizer(source.spec, source.pieces, kept)
    (work / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    if (folder / "tokenizer_config.json").is_file():
        config = _read_json(folder / "tokenizer_config.json")
        if "added_tokens_decoder" in config:
            config["added_tokens_decoder"] = {str(new[int(old)]): token for old, token
                                              in config["added_tokens_decoder"].items() if int(old) in new}
        _write_json(work / "tokenizer_config.json", config)
    if (folder / "special_tokens_map.json").is_file():
        shutil.copyfile(folder / "special_tokens_map.json", work / "special_tokens_map.json")
    if (folder / "vocab.txt").is_file() and source.spec["model"]["type"] == "WordPiece":
        names = {**spec["model"]["vocab"], **{token["content"]: token["id"] for token in spec["added_tokens"]}}
        (work / "vocab.txt").write_text("\n".join(sorted(names, key=names.get)) + "\n", encoding="utf-8")
    return parameters


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise MtlError(f"{path}: cannot read it as JSON ({error})") from None


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
