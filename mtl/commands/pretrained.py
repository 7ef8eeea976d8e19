"""`mtl export --pretrained`: a BERT checkpoint folder (its MLM head and tokenizer) from a model with one
MaskLM head (docs/pretraining.md)."""
import argparse
import logging
from pathlib import Path

from mtl.commands import import_roots
from mtl.components.heads.mask_lm import MaskLM
from mtl.components.savers.pretrained import export_masked_lm
from mtl.errors import MtlError
from mtl.predictor import load

log = logging.getLogger("mtl")


def export_pretrained(args: argparse.Namespace) -> int:
    import_roots(Path.cwd())
    predictor = load(args.model, device="cpu", precision="fp32", trust_code=args.trust_code,
                     allowed_modules=args.allow_module)
    found = [(task, head) for task in predictor.tasks for head in task.heads.values() if isinstance(head, MaskLM)]
    if len(found) != 1:
        raise MtlError(f"{args.model}: a pretrained export needs exactly one MaskLM head, found {len(found)}")
    task, head = found[0]
    folder = export_masked_lm(predictor.model.backbone, head, task.reader.tokenizer, args.pretrained)
    log.info("wrote %s (BERT with its MLM head, and the tokenizer) from task %r", folder, task.name)
    return 0
