"""BERT's masked-language-model head: transform (dense + activation + LayerNorm), then an output layer tied to
the backbone's word embeddings, plus its own bias. Optionally starts from a BertForMaskedLM checkpoint."""
import inspect
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn
from torch.nn import functional as F
from transformers.activations import ACT2FN

from mtl.components.heads.base import Head
from mtl.errors import ContractError, MtlError

PREFIX = "cls.predictions."
# our parameter -> names it may have in a checkpoint (old BERT checkpoints say gamma/beta)
CHECKPOINT_NAMES = {
    "transform.dense.weight": ("transform.dense.weight",),
    "transform.dense.bias": ("transform.dense.bias",),
    "transform.LayerNorm.weight": ("transform.LayerNorm.weight", "transform.LayerNorm.gamma"),
    "transform.LayerNorm.bias": ("transform.LayerNorm.bias", "transform.LayerNorm.beta"),
    "bias": ("bias", "decoder.bias"),
}


class MaskLM(Head):
    """Predicts the original token at each masked position (`mlm_labels` != -100, or in prediction the
    positions of the [MASK] tokens the reader found). Logits are computed at those positions only, not over
    the whole sequence: a 30k-word output layer over every token would cost more than the encoder.

    The output weight is not a parameter of this head: it is `enc["word_embeddings"]`, the backbone's own
    embedding table (the same tensor), so the MLM loss trains the embeddings and a checkpoint holds it once.
    `pretrained`: a folder with a BertForMaskedLM safetensors checkpoint whose transform and bias are loaded.
    """

    label_fields = ("mlm_labels",)
    backbone_outputs = ("sequence_output", "word_embeddings")
    main_metric = "accuracy"

    def __init__(self, vocab_size: int, hidden_size: int, hidden_act: str = "gelu", layer_norm_eps: float = 1e-12,
                 pretrained: str | None = None) -> None:
        super().__init__()
        if hidden_act not in ACT2FN:
            raise ValueError(f"hidden_act {hidden_act!r} is unknown; use one of {sorted(ACT2FN)}")
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        self.transform = nn.Sequential()
        self.transform.add_module("dense", nn.Linear(hidden_size, hidden_size))
        self.transform.add_module("act", ACT2FN[hidden_act])
        self.transform.add_module("LayerNorm", nn.LayerNorm(hidden_size, eps=layer_norm_eps))
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        if pretrained is not None:
            self.load_pretrained(pretrained)
            self._forget_pretrained()

    def _forget_pretrained(self) -> None:
        """Record `pretrained=None` for exports: an exported model restores these weights from its own
        checkpoint, so its folder must not need the pretrained folder to exist where it is loaded."""
        args, kwargs = getattr(self, "_init_args", ((), {}))
        bound = inspect.signature(type(self).__init__).bind_partial(None, *args, **kwargs)
        bound.arguments["pretrained"] = None
        object.__setattr__(self, "_init_args", (bound.args[1:], bound.kwargs))

    def output_weight(self, enc: dict[str, torch.Tensor]) -> torch.Tensor:
        """The tied output weight: the backbone's word-embedding table itself (checked against vocab_size)."""
        weight = enc["word_embeddings"]
        if tuple(weight.shape) != (self.vocab_size, self.hidden_size):
            raise ContractError(f"MaskLM(vocab_size={self.vocab_size}, hidden_size={self.hidden_size}) does not fit "
                                f"the backbone's word embeddings of shape {tuple(weight.shape)}")
        return weight

    def forward(self, batch: dict, enc: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        sequence = enc["sequence_output"]
        labels = batch.get("mlm_labels")
        selected = labels.ne(-100) if labels is not None else _positions_mask(batch, sequence)
        hidden = self.transform(sequence[selected])
        logits = F.linear(hidden, self.output_weight(enc)) + self.bias
        out = {"logits": logits, "selected": selected}
        if labels is not None and self.training:
            # no masked token in the batch (texts made only of special tokens): a zero loss, still a graph
            out["loss"] = (F.cross_entropy(logits.float(), labels[selected]) if logits.size(0)
                           else logits.sum() * 0.0)
        return out

    def predict(self, outputs: dict[str, torch.Tensor], batch: dict) -> list[dict[str, list]]:
        """Per example: the predicted id and its probability at each selected position, and with labels the
        gold token's negative log-likelihood (for perplexity)."""
        log_probs = outputs["logits"].float().log_softmax(-1)
        best, ids = log_probs.max(-1)
        labels = batch.get("mlm_labels")
        nll = -log_probs.gather(1, labels[outputs["selected"]].unsqueeze(1)).squeeze(1) if labels is not None else None
        counts = outputs["selected"].sum(1).tolist()
        results, start = [], 0
        for count in counts:
            part = slice(start, start + count)
            result = {"ids": ids[part].tolist(), "probs": best[part].exp().tolist()}
            if nll is not None:
                result["nll"] = nll[part].tolist()
            results.append(result)
            start += count
        return results

    def decode(self, prediction: dict[str, list], names: list[str] | None, meta: dict) -> dict[str, Any]:
        """The predicted token at each masked position (token index in the sequence, [CLS] = 0)."""
        vocab = meta.get("vocab") or names
        decoded = {"positions": list(meta.get("mlm_positions", [])),
                   "tokens": [vocab[i] if vocab else str(i) for i in prediction["ids"]],
                   "probs": [round(p, 6) for p in prediction["probs"]]}
        if "nll" in prediction:
            decoded["nll"] = [round(v, 6) for v in prediction["nll"]]
        return decoded

    def metrics(self, decoded: list[dict], golds: list[list[str]]) -> dict[str, float]:
        """Masked-token accuracy (0-100, over all masked tokens) and perplexity exp(mean gold NLL)."""
        right = sum(p == g for d, gold in zip(decoded, golds) for p, g in zip(d["tokens"], gold or []))
        total = sum(len(gold or []) for gold in golds)
        nll = [v for d in decoded for v in d.get("nll", [])]
        metrics = {"accuracy": 100.0 * right / total if total else 0.0}
        if nll:
            metrics["perplexity"] = math.exp(min(sum(nll) / len(nll), 700.0))
        return metrics

    def is_correct(self, decoded: dict, gold: list[str]) -> bool:
        return decoded["tokens"] == list(gold or [])

    def load_pretrained(self, folder: str | Path) -> None:
        """Transform and bias from `cls.predictions.*` of a BertForMaskedLM folder, from safetensors only."""
        folder = Path(folder)
        files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
        if not files:
            raise MtlError(f"{folder}: no *.safetensors file (MaskLM loads a pretrained MLM head from safetensors "
                           "only; pickled weights are refused)")
        found: dict[str, torch.Tensor] = {}
        for file in files:
            with safe_open(str(file), framework="pt") as handle:
                found.update({key[len(PREFIX):]: handle.get_tensor(key) for key in handle.keys()
                              if key.startswith(PREFIX)})
        own = dict(self.named_parameters())
        state = {}
        for name, options in CHECKPOINT_NAMES.items():
            key = next((option for option in options if option in found), None)
            if key is None:
                raise MtlError(f"{folder}: no {PREFIX}{options[0]} in its safetensors; is it a BertForMaskedLM "
                               "checkpoint (with its MLM head)?")
            if found[key].shape != own[name].shape:
                raise MtlError(f"{folder}: {PREFIX}{key} has shape {tuple(found[key].shape)} but MaskLM(vocab_size="
                               f"{self.vocab_size}, hidden_size={self.hidden_size}) needs {tuple(own[name].shape)}")
            state[name] = found[key]
        self.load_state_dict(state, strict=True)


def _positions_mask(batch: dict, sequence: torch.Tensor) -> torch.Tensor:
    """Without labels (prediction): the [MASK] positions the reader listed in each example's meta."""
    selected = torch.zeros(sequence.shape[:2], dtype=torch.bool, device=sequence.device)
    for row, meta in enumerate(batch.get("meta", [])):
        positions = [p for p in meta.get("mlm_positions", []) if p < sequence.size(1)]
        selected[row, positions] = True
    return selected
