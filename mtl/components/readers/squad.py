"""Reading SQuAD v1.1 JSON with errors that name the file and the JSON path of the bad item.

`data[3].paragraphs[2].qas[5].answers[0]` in a message is the item to fix; invalid JSON is reported with the
line and column json found. Used by `MRCReader`; also by anything else that reads SQuAD files.
"""
import json
import logging
from pathlib import Path
from typing import Any

from mtl.components.readers.files import read_lines
from mtl.errors import DataError
from mtl.metrics import qa_metric

log = logging.getLogger(__name__)

LAYOUT = ('SQuAD v1.1: {"data": [{"title": ..., "paragraphs": [{"context": "...", "qas": [{"id": "...", '
          '"question": "...", "answers": [{"text": "...", "answer_start": 0}]}]}]}]}')


def load_json(path: str) -> Any:
    """The parsed file; empty or invalid JSON is a DataError with json's line and column."""
    text = "\n".join(read_lines(path, "SQuAD JSON file"))
    if not text.strip():
        raise DataError(path, None, "empty file", LAYOUT)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(path, error.lineno, f"not valid JSON: {error.msg} at column {error.colno}",
                        "fix the JSON syntax; the layout is " + LAYOUT) from None
    except RecursionError:
        raise DataError(path, None, "JSON nested too deeply", LAYOUT) from None


def _get(item: Any, key: str, kind: type, path: str, where: str, fix: str = LAYOUT) -> Any:
    """`item[key]`, which must exist and be of `kind`; else a DataError naming `where`."""
    if not isinstance(item, dict):
        raise DataError(path, None, f"{where} must be a JSON object, found {_kind(item)}", fix)
    if key not in item:
        raise DataError(path, None, f"{where} has no {key!r}", f"add {key!r}; the layout is {fix}")
    value = item[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        name = f"{where}.{key}" if where != "the top level" else key
        raise DataError(path, None, f"{name} must be {_name(kind)}, found {_kind(value)}", fix)
    return value


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def _name(kind: type | tuple) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({dict: "an object", list: "a list", str: "a string", int: "an integer"}[k] for k in kinds)


def read_squad(path: str, phase: str) -> list[dict]:
    """Questions of a SQuAD v1.1 file, in file order: {id, question, context, answers, answer_start, path}.

    Answers are required except in phase 'predict'. In 'train' every answer's text must be found at its
    `answer_start` (an error otherwise: the label would be wrong); in 'eval' only the answer texts are scored,
    so a misplaced `answer_start` is counted in a warning instead.
    """
    root = load_json(path)
    if not isinstance(root, dict) or "data" not in root:
        found = f"an object with keys {sorted(root)[:5]}" if isinstance(root, dict) else _kind(root)
        raise DataError(path, None, f"the top level must be an object with a \"data\" list, found {found}", LAYOUT)
    articles = _get(root, "data", list, path, "the top level")
    examples, seen, misplaced = [], {}, []
    for a, article in enumerate(articles):
        for p, paragraph in enumerate(_get(article, "paragraphs", list, path, f"data[{a}]")):
            where = f"data[{a}].paragraphs[{p}]"
            context = _get(paragraph, "context", str, path, where)
            if not context.strip():
                raise DataError(path, None, f"{where}.context is empty", "give the paragraph its text, or remove it")
            for q, qa in enumerate(_get(paragraph, "qas", list, path, where)):
                example = _question(qa, context, path, f"{where}.qas[{q}]", phase, misplaced)
                if example["id"] in seen:
                    raise DataError(path, None, f"{example['path']}.id {example['id']!r} is also the id of "
                                    f"{seen[example['id']]}", "give every question its own id")
                seen[example["id"]] = example["path"]
                examples.append(example)
    if not examples:
        raise DataError(path, None, "no questions (every paragraph's \"qas\" list is empty)", LAYOUT)
    if misplaced:
        log.warning("%s: %d answer(s) not found at their answer_start (first: %s); kept: evaluation scores "
                    "answer texts only", path, len(misplaced), misplaced[0])
    return examples


def _question(qa: Any, context: str, path: str, where: str, phase: str, misplaced: list[str]) -> dict:
    question = _get(qa, "question", str, path, where)
    if not question.strip():
        raise DataError(path, None, f"{where}.question is empty", "write the question, or remove the item")
    qid = str(_get(qa, "id", (str, int), path, where))
    answers, start = [], None
    if phase != "predict" or "answers" in qa:
        items = _get(qa, "answers", list, path, where)
        if not items and phase != "predict":
            raise DataError(path, None, f"{where}.answers is empty",
                            "give at least one answer {\"text\": ..., \"answer_start\": ...}")
        for n, item in enumerate(items):
            text, position = _answer(item, context, path, f"{where}.answers[{n}]", phase, misplaced)
            answers.append(text)
            start = position if n == 0 else start
    return {"id": qid, "question": question, "context": context, "answers": answers, "answer_start": start,
            "path": where}


def _answer(item: Any, context: str, path: str, where: str, phase: str, misplaced: list[str]) -> tuple[str, int | None]:
    """(text, start) of one answer; start is None when the text is not at answer_start (eval only)."""
    text = _get(item, "text", str, path, where)
    start = _get(item, "answer_start", int, path, where)
    if not text.strip():
        raise DataError(path, None, f"{where}.text is empty", "write the answer as it appears in the context")
    if context[start:start + len(text)] == text and start >= 0:
        return text, start
    found = context.find(text)
    hint = (f"the text first occurs at {found}" if found >= 0 else "the text does not occur in the context at all")
    if not 0 <= start < len(context):
        problem = f"{where}.answer_start {start} is outside the context (0..{len(context) - 1})"
    else:
        problem = (f"{where}: the answer text {_short(text)} is not at answer_start {start} (the context there "
                   f"reads {_short(context[start:start + len(text)])})")
    if phase == "train":
        raise DataError(path, None, problem, f"set answer_start to the answer's character offset in the "
                                             f"context; {hint}")
    misplaced.append(where)
    return text, None


def _short(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def score_squad_predictions(answers: dict[str, str], path: str | Path, metric: str = "squad") -> dict[str, float]:
    """EM/F1 of `{question id: answer text}` (`MRC.write_predictions`) against a SQuAD v1.1 file, as the
    official script scores a predictions file: every question of the file counts, one without an answer as
    wrong. The same figures `evaluate` gives for the same model (with the head's `metric`: "squad", or
    "cmrc2018" for CMRC 2018's character-level scores), from the one prediction pass."""
    score_all, _ = qa_metric(metric)
    questions = read_squad(str(path), "eval")
    return score_all([answers.get(q["id"], "") for q in questions], [q["answers"] for q in questions])
