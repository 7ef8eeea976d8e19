"""PALM's MRC head: start/end logits over the tokens, n-best spans per window, one answer per question."""
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mtl.components.heads.base import Head
from mtl.components.heads.mrc_distill import merge_windows, window_loss, window_signal
from mtl.metrics import qa_metric


class MRC(Head):
    """Extractive QA over `MRCReader` windows.

    Training: cross-entropy of the gold start and of the gold end token (their mean); a window without the
    answer points both at [CLS]. Prediction: per window, the `n_best` spans over context tokens only, with
    end >= start and at most `max_answer_len` tokens, scored start logit + end logit; `merge` then keeps, per
    question, the best-scoring span over all its windows, decoded as the context substring via the offsets.
    Metrics: exact match and F1, best over the gold answers: `metric="squad"` scores words as SQuAD v1.1's
    official script does; `metric="cmrc2018"` scores characters as CMRC 2018's does (Chinese answers have no
    spaces, so word F1 would equal exact match). Distillation is over the context's words (mrc_distill), so a
    student may tokenize and window differently from its teacher.
    """

    label_fields = ("start_positions", "end_positions")
    backbone_outputs = ("sequence_output",)
    main_metric = "f1"

    def __init__(self, input_dim: int, dropout_prob: float = 0.1, max_answer_len: int = 30, n_best: int = 20,
                 metric: str = "squad") -> None:
        super().__init__()
        if max_answer_len < 1 or n_best < 1:
            raise ValueError(f"max_answer_len and n_best must be >= 1, got {max_answer_len} and {n_best}")
        self.max_answer_len, self.n_best = max_answer_len, n_best
        self._score_all, self._exact_match = qa_metric(metric)
        self.dropout = nn.Dropout(dropout_prob)
        self.qa_outputs = nn.Linear(input_dim, 2)

    def forward(self, batch: dict, enc: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = self.qa_outputs(self.dropout(enc["sequence_output"])).float()
        padding = batch["attention_mask"] == 0
        start, end = (part.squeeze(-1).masked_fill(padding, -1e4) for part in logits.split(1, dim=-1))
        out = {"start_logits": start, "end_logits": end}
        if self.training and "start_positions" in batch:
            out["loss"] = (F.cross_entropy(start, batch["start_positions"])
                           + F.cross_entropy(end, batch["end_positions"])) / 2
        return out

    # ---- distillation over words (mtl.components.heads.mrc_distill) -----------------------------------------
    def teacher_signal(self, outputs: dict[str, torch.Tensor], batch: dict,
                       temperature: float) -> list[torch.Tensor]:
        """Per window: (start, end) logits per word of the whole context, NaN where the window does not
        cover the word; `merge_signals` turns a question's windows into its targets."""
        return [window_signal(start, end, meta) for start, end, meta in
                zip(outputs["start_logits"], outputs["end_logits"], batch["meta"])]

    def merge_signals(self, features: list[np.ndarray], temperature: float) -> np.ndarray:
        return merge_windows(features, temperature)

    def distill_loss(self, outputs: dict[str, torch.Tensor], batch: dict, targets: torch.Tensor,
                     mask: torch.Tensor, temperature: float) -> torch.Tensor:
        return window_loss(outputs["start_logits"], outputs["end_logits"], batch["meta"], targets, temperature)

    def loss_units(self, batch: dict) -> float:
        """Both losses, hard and soft, are means over the batch's windows."""
        return float(len(batch["input_ids"]))

    def predict(self, outputs: dict[str, torch.Tensor], batch: dict) -> list[list[tuple[float, int, int]]]:
        """Per window: up to `n_best` (score, start token, end token), best first, context tokens only."""
        starts, ends = outputs["start_logits"].float().cpu(), outputs["end_logits"].float().cpu()
        return [self._best_spans(starts[row], ends[row], meta["offsets"]) for row, meta in enumerate(batch["meta"])]

    def _best_spans(self, start: torch.Tensor, end: torch.Tensor,
                    offsets: list[tuple[int, int] | None]) -> list[tuple[float, int, int]]:
        context = torch.tensor([span is not None for span in offsets] + [False] * (len(start) - len(offsets)))
        if not bool(context.any()):
            return []
        k = min(self.n_best, int(context.sum()))
        start_val, start_idx = start.masked_fill(~context, -torch.inf).topk(k)
        end_val, end_idx = end.masked_fill(~context, -torch.inf).topk(k)
        length = end_idx.unsqueeze(0) - start_idx.unsqueeze(1)  # (start candidate, end candidate)
        scores = (start_val.unsqueeze(1) + end_val.unsqueeze(0)).masked_fill(
            (length < 0) | (length >= self.max_answer_len), -torch.inf)
        best_val, best_flat = scores.flatten().topk(min(self.n_best, scores.numel()))
        return [(float(v), int(start_idx[i // k]), int(end_idx[i % k]))
                for v, i in zip(best_val.tolist(), best_flat.tolist()) if v > -torch.inf]

    def decode(self, prediction: list[tuple[float, int, int]], names: list[str] | None, meta: dict) -> dict:
        """A window's candidates as context substrings with their character spans."""
        offsets, context = meta["offsets"], meta["context"]
        return {"candidates": [{"text": context[offsets[s][0]:offsets[e][1]], "score": round(score, 6),
                                "start": offsets[s][0], "end": offsets[e][1]} for score, s, e in prediction]}

    def merge(self, decoded: list[Any], metas: list[dict]) -> tuple[list[Any], list[dict]]:
        """Windows -> questions (grouped by meta `id`, first-seen order): the best candidate of all windows."""
        merged: dict[str, tuple[dict, dict]] = {}
        for window, meta in zip(decoded, metas):
            answer, question_meta = merged.setdefault(meta["id"], (
                {"id": meta["id"], "answer": "", "score": None, "start": None, "end": None},
                {key: value for key, value in meta.items() if key not in ("offsets", "window")}))
            best = max(window["candidates"], key=lambda c: c["score"], default=None)
            if best is not None and (answer["score"] is None or best["score"] > answer["score"]):
                answer.update(answer=best["text"], score=best["score"], start=best["start"], end=best["end"])
        return [answer for answer, _ in merged.values()], [meta for _, meta in merged.values()]

    def gold(self, meta: dict) -> list[str] | None:
        return meta.get("gold", {}).get("answers")

    def metrics(self, decoded: list[dict], golds: list[list[str]]) -> dict[str, float]:
        return self._score_all([d["answer"] for d in decoded], golds)

    def is_correct(self, decoded: dict, gold: list[str]) -> bool:
        return bool(self._exact_match(decoded["answer"], gold))

    # ---- SQuAD predictions file -----------------------------------------------------------------------------
    @staticmethod
    def answers_by_id(records: list[dict], head_name: str | None = None) -> dict[str, str]:
        """{question id: answer text} from merged prediction records (`MultiHeadTrainer.predict`)."""
        answers = {}
        for record in records:
            decoded = record[head_name] if head_name else next(
                v for v in record.values() if isinstance(v, dict) and "id" in v and "answer" in v)
            answers[decoded["id"]] = decoded["answer"]
        return answers

    @staticmethod
    def write_predictions(records: list[dict], path: str | Path, head_name: str | None = None) -> Path:
        """Write the official SQuAD predictions file: `{question id: answer text}` JSON."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(MRC.answers_by_id(records, head_name), ensure_ascii=False, indent=1) + "\n",
                        encoding="utf-8")
        return path
