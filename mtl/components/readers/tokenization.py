"""Loading a fast tokenizer from a model folder or a bare vocab.txt, offline."""
from pathlib import Path

from transformers import AutoTokenizer, BertTokenizerFast, PreTrainedTokenizerFast


def load_tokenizer(vocab_path: str | Path, do_lower_case: bool = True) -> PreTrainedTokenizerFast:
    """A fast tokenizer: sub-word alignment and MRC offsets need one.

    `vocab_path` is a model folder (with tokenizer.json or vocab.txt) or a WordPiece vocab.txt, as PALM took.
    """
    path = Path(vocab_path)
    if path.is_dir():
        tokenizer = AutoTokenizer.from_pretrained(str(path), use_fast=True, local_files_only=True)
    elif path.is_file():
        tokens = path.read_text(encoding="utf-8").splitlines()
        tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(tokens)}, do_lower_case=do_lower_case)
    else:
        raise FileNotFoundError(f"vocab_path {vocab_path}: no such file or folder (give a model folder or a vocab.txt)")
    if not tokenizer.is_fast:
        raise TypeError(f"{vocab_path}: mtl needs a fast tokenizer (tokenizer.json or vocab.txt)")
    return tokenizer


def truncated_rows(encoded) -> list[int]:
    """Indices of the sequences of a fast-tokenizer batch that truncation cut short."""
    return [index for index, encoding in enumerate(encoded.encodings) if encoding.overflowing]
