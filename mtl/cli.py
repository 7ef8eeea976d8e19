"""`mtl train|eval|predict`: the same objects as the Python API, driven by a YAML run config.

    mtl train CONFIG.yaml [--resume]        check the config, build, train; checkpoints under saver.save_path
    mtl eval CONFIG.yaml [--checkpoint DIR] [--split test|dev]
    mtl predict --model DIR --input FILE [--output FILE] [--allow-module MODULE] [--trust-code]

Errors the user can fix (config, data, contracts) print one message and exit with status 2.
"""
import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from mtl.errors import MtlError

log = logging.getLogger("mtl")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()  # this process is ours: keep the output to mtl's own lines
    try:
        return args.run(args)
    except (MtlError, FileNotFoundError) as error:
        print(f"mtl {args.command}: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtl", description="Multi-task NLP training from a config.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train the tasks of a config")
    train.add_argument("config", help="run config (YAML)")
    train.add_argument("--resume", action="store_true",
                       help="continue from the latest step-N or final checkpoint in saver.save_path")
    train.set_defaults(run=train_command)
    evaluate = commands.add_parser("eval", help="score a trained model on each task's test (or dev) data")
    evaluate.add_argument("config", help="the run config it was trained with")
    evaluate.add_argument("--checkpoint", help="checkpoint folder (default: save_path/best, else save_path/final)")
    evaluate.add_argument("--split", choices=("test", "dev"), default="test")
    evaluate.set_defaults(run=eval_command)
    predict = commands.add_parser("predict", help="decoded predictions of a saved model, as JSON lines")
    predict.add_argument("--model", required=True, help="an exported model or checkpoint folder (safe to load "
                         "from anyone: it may name only mtl's own classes unless you allow more)")
    predict.add_argument("--input", required=True, help="one utterance per line ('-' reads stdin)")
    predict.add_argument("--output", help="JSON lines file (default: stdout)")
    predict.add_argument("--batch-size", type=int, default=32)
    predict.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    predict.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                         help="auto: bf16 where the hardware runs it fast (GPUs, CPUs with AMX/AVX512-BF16), else fp32")
    predict.add_argument("--allow-module", action="append", default=[], metavar="MODULE",
                         help="also admit heads/readers/encoders defined in MODULE (and its submodules), e.g. "
                         "your own mypkg.heads; repeatable")
    predict.add_argument("--trust-code", action="store_true",
                         help="admit component classes from any module and let transformers run code the folder "
                         "ships (auto_map): only for a folder whose author you trust")
    predict.set_defaults(run=predict_command)
    return parser


def train_command(args: argparse.Namespace) -> int:
    from mtl.config import build_run, load_config
    from mtl.components.savers.checkpoint import latest_checkpoint
    config = load_config(args.config)  # every key checked before anything is built
    run = build_run(config)
    resume_from = latest_checkpoint(run.save_path) if args.resume else None
    if args.resume and resume_from is None:
        log.info("nothing to resume in %s: starting from scratch", run.save_path)
    elif resume_from is not None:
        log.info("resuming from %s", resume_from)
    _keep_config(config, run.save_path)
    result = run.trainer.train(**run.train_options, resume_from=resume_from, selector=run.selector)
    best = run.save_path / "best"
    log.info("trained %d steps%s; final model: %s%s", result["steps"],
             " (stopped early)" if result["stopped_early"] else "", run.save_path / "final",
             f"; best (score {result['best_score']:.2f}): {best}" if best.is_dir() else "")
    return 0


def eval_command(args: argparse.Namespace) -> int:
    from mtl.config import build_run, load_config
    run = build_run(load_config(args.config))
    folder = Path(args.checkpoint) if args.checkpoint else _default_checkpoint(run.save_path)
    run.trainer.load_checkpoint(folder)
    readers = run.eval_readers(args.split)
    if not readers:
        raise MtlError(f"no task of {args.config} has {args.split}_data")
    metrics = run.trainer.evaluate(readers)
    print(json.dumps({"checkpoint": str(folder), "split": args.split, "metrics": metrics}, indent=1))
    return 0


def predict_command(args: argparse.Namespace) -> int:
    from mtl.predictor import load
    predictor = load(args.model, device=args.device, precision=args.precision, trust_code=args.trust_code,
                     allowed_modules=args.allow_module)
    source = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")
    with source:
        texts = [line.strip() for line in source if line.strip()]  # blank lines carry no utterance
    records = predictor.predict(texts, args.batch_size)
    lines = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(lines, encoding="utf-8")
        log.info("%d predictions written to %s", len(records), args.output)
    else:
        sys.stdout.write(lines)
    return 0


def _default_checkpoint(save_path: Path) -> Path:
    for name in ("best", "final"):
        if (save_path / name / "heads.safetensors").is_file():
            return save_path / name
    raise MtlError(f"{save_path}: no best/ or final/ checkpoint; train first or give --checkpoint")


def _keep_config(config: object, save_path: Path) -> None:
    """The checked config (absolute paths) beside the checkpoints: what this run was."""
    save_path.mkdir(parents=True, exist_ok=True)
    values = dataclasses.asdict(config)
    values["path"] = str(values["path"])
    (save_path / "config.json").write_text(json.dumps(values, indent=1, default=str), encoding="utf-8")
