"""`mtl predict`: a model folder's decoded predictions for a file of utterances, as JSON lines, on any runtime
of the table (mtl.serving.runtime); no training module is imported."""
import argparse
import json
import logging
import sys
from pathlib import Path

from mtl.commands import import_roots
from mtl.components.readers.files import read_utterances
from mtl.serving.runtime import LoadOptions, load_model

log = logging.getLogger("mtl")


def predict(args: argparse.Namespace) -> int:
    import_roots(Path.cwd())  # for --allow-module's modules only: the folder still names nothing else
    options = LoadOptions(args.device, args.precision, args.threads, args.trust_code, tuple(args.allow_module),
                          base=args.base)
    model = load_model(args.model, args.runtime, options)
    texts = read_utterances(args.input)  # blank lines skipped with a warning naming them; bad UTF-8 named
    records = model.predict(texts, None, args.batch_size)
    text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text, encoding="utf-8")
        log.info("%d predictions written to %s", len(records), args.output)
    else:
        sys.stdout.write(text)
    return 0
