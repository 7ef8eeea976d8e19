"""The /predict request: limits, reading the body within them, and checking every field. A bad request is
answered 4xx with a JSON error that names the field (`texts[3]`, `tasks[0]`), never a traceback."""
import json
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

BYTES_PER_CHAR = 12  # a JSON body may escape each character as \uXXXX, a surrogate pair as two


class RequestError(Exception):
    """A request the server will not run: HTTP status, the field at fault (None: the whole body), why."""

    def __init__(self, status: int, field: str | None, message: str) -> None:
        super().__init__(message)
        self.status, self.field, self.message = status, field, message

    def body(self) -> dict[str, Any]:
        return {"error": {"field": self.field, "message": self.message}}


@dataclass(frozen=True)
class Limits:
    """What one server accepts and how it batches. `max_queue`: texts waiting for the model before new
    requests get 503; `max_batch_size`: texts per model batch; `max_wait_ms`: how long a batch waits to fill."""

    max_batch_size: int = 32
    max_wait_ms: float = 2.0
    max_queue: int = 1024
    max_texts: int = 64
    max_text_chars: int = 2000

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_queue", "max_texts", "max_text_chars"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        if not 0 <= self.max_wait_ms <= 10_000:
            raise ValueError(f"max_wait_ms must be between 0 and 10000, got {self.max_wait_ms!r}")
        if self.max_queue < self.max_texts:
            raise ValueError(f"max_queue ({self.max_queue}) must be at least max_texts ({self.max_texts}): "
                             "a request of max_texts texts must fit an empty queue")

    @property
    def max_body_bytes(self) -> int:
        return self.max_texts * (self.max_text_chars * BYTES_PER_CHAR + 8) + 65536

    def schema(self, task_names: list[str]) -> dict[str, Any]:
        """The request's JSON schema, for the OpenAPI page."""
        return {"type": "object", "required": ["texts"], "additionalProperties": False, "properties": {
            "texts": {"type": "array", "minItems": 1, "maxItems": self.max_texts, "items": {"anyOf": [
                {"type": "string", "maxLength": self.max_text_chars},
                {"type": "object", "required": ["question", "context"], "additionalProperties": False,
                 "properties": {"question": {"type": "string"}, "context": {"type": "string"}}}]},
                "description": "utterances (or question/context pairs for reading comprehension), one record "
                               "per item in the answer"},
            "tasks": {"type": "array", "minItems": 1, "items": {"type": "string", "enum": task_names},
                      "description": "the tasks to run (default: all); their heads' outputs only"}},
            "example": {"texts": ["book a flight from boston to denver tomorrow"]}}


async def read_predict_request(request: Request, limits: Limits,
                               task_names: list[str]) -> tuple[list[Any], tuple[str, ...] | None]:
    """(texts, tasks or None) from the body, or RequestError naming the field."""
    data = _json_body(await _read_body(request, limits.max_body_bytes))
    if not isinstance(data, dict):
        raise RequestError(422, None, 'expected a JSON object: {"texts": ["...", ...]}')
    unknown = sorted(set(data) - {"texts", "tasks"})
    if unknown:
        raise RequestError(422, unknown[0], "unknown field; a request has `texts` and optionally `tasks`")
    texts = _items(data, "texts", limits.max_texts, allow_pairs=True)
    for index, text in enumerate(texts):
        size = len(text) if isinstance(text, str) else len(text["question"]) + len(text["context"])
        if size > limits.max_text_chars:
            raise RequestError(422, f"texts[{index}]", f"{size} characters; the limit is {limits.max_text_chars}")
        parts = [text] if isinstance(text, str) else [text["question"], text["context"]]
        if not all(part.isascii() or _encodable(part) for part in parts):
            raise RequestError(422, f"texts[{index}]", "not valid Unicode (a lone surrogate escape)")
        _check_not_blank(text, index)
    if "tasks" not in data:
        return texts, None
    tasks = _items(data, "tasks", None)
    for index, name in enumerate(tasks):
        if name not in task_names:
            raise RequestError(422, f"tasks[{index}]", f"unknown task {name!r}; the model has {task_names}")
    return texts, tuple(name for name in task_names if name in tasks)  # one order: one batch group


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) past `limit` bytes before it is all read."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, None, f"the body is {declared} bytes; at most {limit} fit the text limits")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, None, f"the body is over {limit} bytes, more than the text limits allow")
        chunks.append(chunk)
    return b"".join(chunks)


def _json_body(body: bytes) -> Any:
    if not body.strip():
        raise RequestError(400, None, 'empty body; send JSON: {"texts": ["...", ...]}')
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as error:
        raise RequestError(400, None, f"the body is not JSON: {error}") from None


def _check_not_blank(text: str | dict, index: int) -> None:
    """An empty or whitespace-only text has nothing to predict from: a model would still answer (an intent
    at near-uniform probability), which reads as a real prediction. Refused, naming the item."""
    if isinstance(text, str):
        if not text.strip():
            raise RequestError(422, f"texts[{index}]", f"text {index} is {'empty' if not text else 'only whitespace'}"
                               "; send at least one word")
        return
    for part in ("question", "context"):
        if not text[part].strip():
            raise RequestError(422, f"texts[{index}]", f"the {part} of item {index} is empty or only whitespace")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _items(data: dict, name: str, most: int | None, allow_pairs: bool = False) -> list[Any]:
    """data[name] as a non-empty list of strings (or, with `allow_pairs`, {"question", "context"} objects for
    reading comprehension), at most `most` long."""
    if name not in data:
        raise RequestError(422, name, "required: a list of strings")
    values = data[name]
    if not isinstance(values, list):
        raise RequestError(422, name, f"must be a list of strings, got {type(values).__name__}")
    if not values:
        raise RequestError(422, name, "must hold at least one string")
    if most is not None and len(values) > most:
        raise RequestError(422, name, f"{len(values)} items; at most {most} per request")
    for index, value in enumerate(values):
        if isinstance(value, str) or (allow_pairs and _is_pair(value)):
            continue
        wanted = "a string or a {question, context} object of strings" if allow_pairs else "a string"
        raise RequestError(422, f"{name}[{index}]", f"must be {wanted}, got {type(value).__name__}")
    return values


def _is_pair(value: Any) -> bool:
    """A reading-comprehension input: exactly {"question": str, "context": str}."""
    return isinstance(value, dict) and set(value) == {"question", "context"} and all(
        isinstance(part, str) for part in value.values())
