"""A pretrained-model folder from an mtl model with a masked-LM head: what continued or from-scratch
pretraining hands to fine-tuning.

The folder is a plain transformers BertForMaskedLM checkpoint (config.json, model.safetensors with `bert.*`
and `cls.predictions.*`, the output layer tied to the word embeddings) plus the tokenizer: transformers'
AutoModel/AutoModelForMaskedLM and AutoTokenizer load it, and so do `mtl.backbone.BERT.from_pretrained(folder)`,
`mtl.head.MaskLM(..., pretrained=folder)` and every reader's `vocab_path=folder`. BertForMaskedLM has no
pooler, so a head on `pooled_output` starts that layer from random weights (a `cls` sentence vector does not
need it).
"""
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import BertForMaskedLM

from mtl.errors import MtlError


def export_masked_lm(backbone: Any, head: Any, tokenizer: Any, folder: str | Path) -> Path:
    """Write `backbone` (a BERT-family mtl Encoder) with `head` (its mtl MaskLM head) and `tokenizer` to
    `folder`, atomically: a crash leaves no half-written folder under that name."""
    config = backbone.config
    if config.model_type != "bert":
        raise MtlError(f"a pretrained export writes BertForMaskedLM; this backbone is {config.model_type!r}")
    model = BertForMaskedLM(config)
    problems = model.bert.load_state_dict(backbone.model.state_dict(), strict=False)
    unexpected = [key for key in problems.unexpected_keys if not key.startswith("pooler.")]
    if problems.missing_keys or unexpected:
        raise MtlError(f"the backbone's weights do not fit BertForMaskedLM: missing {problems.missing_keys[:3]}, "
                       f"unexpected {unexpected[:3]}")
    predictions = model.cls.predictions
    with torch.no_grad():
        predictions.transform.dense.load_state_dict(head.transform.dense.state_dict())
        predictions.transform.LayerNorm.load_state_dict(head.transform.LayerNorm.state_dict())
        predictions.bias.copy_(head.bias)
    model.tie_weights()
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        model.save_pretrained(str(staging), safe_serialization=True)
        tokenizer.save_pretrained(str(staging))
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
