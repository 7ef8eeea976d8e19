"""Feature: one example, tokenized; what readers make, cache and collate."""
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Feature:
    """One example, tokenized: model fields (ints or int lists) and meta for decoding and metrics."""

    fields: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
