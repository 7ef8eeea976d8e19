"""A pretrained-model folder from an mtl model with a masked-LM head: what continued or from-scratch
pretraining hands to fine-tuning.

The folder is a plain transformers BertForPreTraining checkpoint (config.json, model.safetensors with `bert.*`
including the pooler, and `cls.predictions.*`, the output layer tied to the word embeddings) plus the
tokenizer: transformers' AutoModel, AutoModelForMaskedLM and AutoTokenizer load it, and so do
`mtl.backbone.BERT.from_pretrained(folder)`, `mtl.head.MaskLM(..., pretrained=folder)` and every reader's
`vocab_path=folder`. The pooler is the backbone's own (trained by whatever trained it; an MLM-only run leaves
it as it started); the next-sentence head (`cls.seq_relationship`) is untrained: mtl never trains NSP.
"""
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import BertForPreTraining

from mtl.errors import MtlError


def export_masked_lm(backbone: Any, head: Any, tokenizer: Any, folder: str | Path) -> Path:
    """Write `backbone` (a BERT-family mtl Encoder) with `head` (its mtl MaskLM head) and `tokenizer` to
    `folder`, atomically: a crash leaves no half-written folder under that name."""
    config = backbone.config
    if config.model_type != "bert":
        raise MtlError(f"a pretrained export writes a BERT checkpoint; this backbone is {config.model_type!r}")
    model = BertForPreTraining(config)
    problems = model.bert.load_state_dict(backbone.model.state_dict(), strict=False)
    missing = [key for key in problems.missing_keys if not key.startswith("pooler.")]  # a backbone without one
    if missing or problems.unexpected_keys:
        raise MtlError(f"the backbone's weights do not fit BERT: missing {missing[:3]}, "
                       f"unexpected {problems.unexpected_keys[:3]}")
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
