"""`mtl export --onnx`: one ONNX graph with the encoder and every head, beside the model folder."""
import argparse
import logging
from pathlib import Path

from mtl.commands import import_roots
from mtl.serving.onnx_export import export_onnx

log = logging.getLogger("mtl")


def export_onnx_folder(args: argparse.Namespace) -> int:
    import_roots(Path.cwd())  # for --allow-module's modules only, as in predict
    info = export_onnx(args.model, args.onnx, args.quantize, args.opset, trust_code=args.trust_code,
                       allowed_modules=args.allow_module, task=args.task, base=args.base)
    log.info("wrote %s: %d inputs, %d outputs; largest difference from PyTorch %s", args.onnx, len(info["inputs"]),
             len(info["output_names"]), ", ".join(f"{k} {v:.2e}" for k, v in info["parity"].items()))
    return 0
