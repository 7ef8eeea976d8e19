"""`mtl serve`: a model folder behind the HTTP server (docs/serving.md), on a runtime of the table."""
import argparse
import logging
from pathlib import Path

from mtl.commands import import_roots
from mtl.errors import MtlError
from mtl.safe_load import model_folder
from mtl.serving.engine import load_engine
from mtl.serving.requests import Limits
from mtl.serving.server import serve as run_server

log = logging.getLogger("mtl")


def serve(args: argparse.Namespace) -> int:
    try:
        limits = Limits(args.max_batch_size, args.max_wait_ms, args.max_queue, args.max_texts, args.max_text_chars)
    except ValueError as error:
        raise MtlError(str(error)) from None
    import_roots(Path.cwd())  # for --allow-module's modules only, as in predict
    first, *beside = [model_folder(folder) for folder in args.model]
    engine = load_engine(first, args.runtime, args.device, args.precision, args.max_batch_size,
                         args.threads, trust_code=args.trust_code, allowed_modules=args.allow_module,
                         width_multiple=args.pad_to_multiple_of, beside=beside, base=args.base)
    log.info("loaded %s (%s runtime; tasks: %s); starting the server on %s", ", ".join(args.model), engine.runtime,
             ", ".join(engine.task_names), args.host)
    run_server(engine, limits, args.host, args.port, args.access_log)
    return 0
