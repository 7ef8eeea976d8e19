"""A head mtl does not ship, written against `mtl.head.Head`: multi-label classification (ATIS's
`atis_flight#atis_airfare`: one utterance, several intents), plus the small reader that feeds it."""
import torch
from torch import nn
from torch.nn import functional as F

import mtl


class MultiLabel(mtl.head.Head):
    """A sigmoid per label over the pooled output; predicts every label whose probability passes `threshold`
    (the most likely one when none does). Metrics: micro-F1 over (example, label) pairs, exact-set accuracy."""

    backbone_outputs = ("pooled_output",)
    main_metric = "f1"

    def __init__(self, num_classes: int, input_dim: int, dropout_prob: float = 0.1, label_field: str = "intents",
                 threshold: float = 0.5) -> None:
        super().__init__()
        self.label_fields, self.num_classes, self.threshold = (label_field,), num_classes, threshold
        self.dropout = nn.Dropout(dropout_prob)
        self.classifier = nn.Linear(input_dim, num_classes)

    def forward(self, batch: dict, enc: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {"logits": self.classifier(self.dropout(enc["pooled_output"]))}
        labels = batch.get(self.label_fields[0])  # multi-hot, (B, num_classes)
        if labels is not None and self.training:
            loss = F.binary_cross_entropy_with_logits(out["logits"].float(), labels.float(), reduction="none")
            out["loss"] = loss.sum(1).mean()  # summed over labels: a mean would shrink the gradient by 1/num_classes
        return out

    def predict(self, outputs: dict[str, torch.Tensor], batch: dict) -> list[tuple[list[int], list[float]]]:
        probs = outputs["logits"].float().sigmoid()
        chosen = [(row >= self.threshold).nonzero().flatten().tolist() or [int(row.argmax())] for row in probs]
        return list(zip(chosen, probs.tolist()))

    def decode(self, prediction: tuple[list[int], list[float]], names: list[str] | None, meta: dict) -> dict:
        ids, probs = prediction
        name = (lambda i: names[i]) if names else str
        return {"labels": sorted(name(i) for i in ids), "probs": {name(i): round(probs[i], 4) for i in ids}}

    def metrics(self, decoded: list[dict], golds: list[list[str]]) -> dict[str, float]:
        pairs = [(set(d["labels"]), set(g)) for d, g in zip(decoded, golds)]
        hits = sum(len(p & g) for p, g in pairs)
        predicted, gold = sum(len(p) for p, _ in pairs), sum(len(g) for _, g in pairs)
        f1 = 2 * hits / (predicted + gold) if predicted + gold else 0.0
        exact = sum(p == g for p, g in pairs) / max(len(pairs), 1)
        return {"f1": 100.0 * f1, "exact_match": 100.0 * exact}

    def is_correct(self, decoded: dict, gold: list[str]) -> bool:
        return set(decoded["labels"]) == set(gold)


class MultiIntentReader(mtl.reader.IntentSlotReader):
    """The ATIS/SNIPS folder format, its `label` file read as `#`-joined intents: field `intents` is
    multi-hot over the atomic intents of the training data (or `intents` given, for dev/test/export)."""

    label_fields = ("intents",)
    token_label_fields = ()

    def __init__(self, vocab_path: str, max_seqlen: int = 128, intents: list[str] | None = None, seed: int = 0,
                 phase: str = "train", do_lower_case: bool = True) -> None:
        super().__init__(vocab_path, max_seqlen, seed=seed, phase=phase, do_lower_case=do_lower_case)
        self.intents = intents

    @property
    def label_names(self) -> dict[str, list[str]]:
        return {"intents": self.intents} if self.intents else {}

    def _read_examples(self, path: str, file_format: str = "tsv") -> list[dict]:
        examples = super()._read_examples(path, file_format)
        if self.intents is None and self.phase == "train":
            self.intents = sorted({name for ex in examples for name in ex["intent"].split("#")})
        return examples

    def _add_extra(self, example: dict, fields: dict, meta: dict) -> None:
        if example.get("intent") is not None and self.phase != "predict":
            names = example["intent"].split("#")  # an atomic intent unseen in training stays in the gold: an error
            fields["intents"] = [int(name in names) for name in self.intents]
            meta["gold"]["intents"] = sorted(names)
