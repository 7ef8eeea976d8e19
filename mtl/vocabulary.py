"""Training a WordPiece vocabulary from text files (HF `tokenizers`), saved as a fast tokenizer folder that every
reader loads like a pretrained model's (`vocab_path=FOLDER`).

BERT's text pipeline: clean control characters, put spaces around every CJK character (so each Chinese
character is its own word, as BERT-Chinese and ERNIE tokenize), optionally lower-case and strip accents, split
on whitespace and punctuation, then WordPiece with `##` continuations. Special tokens come first:
[PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4.
"""
from pathlib import Path
from typing import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertTokenizerFast

from mtl.components.readers.files import check_file, decode_line
from mtl.errors import DataError

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(files: list[str | Path], out_dir: str | Path, vocab_size: int = 30_000,
                    lowercase: bool = True, min_frequency: int = 2, limit_alphabet: int = 10_000,
                    max_length: int = 512) -> BertTokenizerFast:
    """A WordPiece vocabulary of exactly `vocab_size` tokens learnt from UTF-8 text files (one text per line;
    blank lines skipped), written to `out_dir` (tokenizer.json, vocab.txt, tokenizer_config.json) and returned.
    When the corpus yields fewer pieces, `[unused<i>]` tokens fill the rest (as in BERT's vocabularies), so a
    config can give the encoder's and the MLM head's `vocab_size` before the vocabulary exists.
    `limit_alphabet` caps the single characters kept (Chinese needs thousands); `max_length` is recorded as
    the tokenizer's model_max_length."""
    if vocab_size < len(SPECIAL_TOKENS) + 1:
        raise ValueError(f"vocab_size must be > {len(SPECIAL_TOKENS)} (the special tokens), got {vocab_size}")
    paths = [check_file(path, "text file") for path in files]
    if not paths:
        raise ValueError("train_wordpiece needs at least one text file")
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                      strip_accents=lowercase, lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        limit_alphabet=limit_alphabet, special_tokens=SPECIAL_TOKENS,
                                        continuing_subword_prefix="##", show_progress=False)
    tokenizer.train_from_iterator(_texts(paths), trainer=trainer)
    if tokenizer.get_vocab_size() <= len(SPECIAL_TOKENS):
        raise DataError(str(paths[0]), None, "no word in the text files", "give files with text in them")
    learnt = tokenizer.get_vocab_size()
    tokenizer.add_special_tokens([f"[unused{i}]" for i in range(vocab_size - learnt)])
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    fast = BertTokenizerFast(tokenizer_object=tokenizer, do_lower_case=lowercase, model_max_length=max_length,
                             unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
                             mask_token="[MASK]")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
    vocab = sorted(tokenizer.get_vocab(with_added_tokens=True).items(), key=lambda item: item[1])  # PALM's vocab.txt
    (Path(out_dir) / "vocab.txt").write_text("".join(token + "\n" for token, _ in vocab), encoding="utf-8")
    return fast


def _texts(paths: list[Path]) -> Iterator[str]:
    """Non-blank lines of every file, read line by line (a corpus need not fit in memory)."""
    for path in paths:
        yield from _file_texts(path)


def _file_texts(path: Path) -> Iterable[str]:
    with open(path, "rb") as file:
        for number, raw in enumerate(file, start=1):
            raw = raw[3:] if number == 1 and raw.startswith(b"\xef\xbb\xbf") else raw
            text = decode_line(raw.rstrip(b"\n"), str(path), number)
            if text.strip():
                yield text
