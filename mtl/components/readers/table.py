"""FeatureTable: a reader's features as flat arrays, so a large file costs its token data, not Python objects.

A list of `Feature` objects holding Python int lists takes about 7 KB per short example (90 times its token
data); a table holds each token field as one flat array of the smallest integer type that fits (uint16 for a
30k vocabulary, int16 for labels with -100) plus an offsets array, scalar fields (labels) as one array, and
meta as JSON lines in one byte array. A field that is derivable (all zeros, as token types of single texts)
is not stored at all. `table[i]` builds the `Feature` of row i on demand (lists and dicts equal to what the
reader made), so readers, heads and collate keep working on features; batching only needs `lengths()`.
Meta that JSON would not give back exactly (MRC's offset tuples) is kept as it is, one dict per row.
"""
import json
import math
from array import array
from typing import Any, Iterable, Iterator

import numpy as np

from mtl.components.readers.feature import Feature

ZEROS = "zeros"  # a token field that is 0 at every position of every row: made on demand, not stored
_MISSING = object()
_PLAIN = {str, int, bool, type(None)}  # types JSON gives back as they are
_STR = {str}


class FeatureTable:
    """Rows of features stored column by column; `rows` (optional) selects and orders a subset (a shard)."""

    def __init__(self, size: int, tokens: dict[str, Any], scalars: dict[str, Any], meta: Any,
                 rows: np.ndarray | None = None) -> None:
        self._size = size
        self.tokens = tokens  # name -> (values, offsets), or (ZEROS, offsets), or a list of per-row values
        self.scalars = scalars  # name -> 1-D array, or a list of per-row values (_MISSING where absent)
        self.meta = meta  # (utf-8 bytes array, offsets) of JSON lines, or a list of dicts
        self.rows = rows

    @classmethod
    def build(cls, features: Iterable[Feature]) -> "FeatureTable":
        """Consume features one at a time (a generator keeps only one chunk of them alive)."""
        builder = _Builder()
        for feature in features:
            builder.add(feature)
        return builder.finish()

    @classmethod
    def of(cls, features: Any) -> "FeatureTable":
        return features if isinstance(features, FeatureTable) else cls.build(features)

    # ---- sequence protocol ------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._size if self.rows is None else len(self.rows)

    def _row(self, index: int) -> int:
        return index if self.rows is None else int(self.rows[index])

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return self.select(np.arange(len(self))[index])
        if not -len(self) <= index < len(self):
            raise IndexError(f"feature {index} of {len(self)}")
        row = self._row(int(index) % len(self))
        return Feature(self.fields_of(row), self.meta_of(row))

    def __iter__(self) -> Iterator[Feature]:
        for index in range(len(self)):
            yield self[index]

    def select(self, indices: np.ndarray) -> "FeatureTable":
        """A table over rows `indices` of this one, sharing its arrays (no copy of the data)."""
        rows = np.asarray(indices, dtype=np.int64)
        return FeatureTable(self._size, self.tokens, self.scalars, self.meta,
                            rows if self.rows is None else self.rows[rows])

    # ---- rows ---------------------------------------------------------------------------------------
    def fields_of(self, row: int) -> dict[str, Any]:
        """The model fields of stored row `row`, as the reader made them (int lists and ints)."""
        fields: dict[str, Any] = {}
        for name, column in self.tokens.items():
            if isinstance(column, list):
                value = column[row]
            else:
                values, offsets = column
                start, end = int(offsets[row]), int(offsets[row + 1])
                value = [0] * (end - start) if isinstance(values, str) else values[start:end].tolist()
            if value is not _MISSING:
                fields[name] = value
        for name, column in self.scalars.items():
            value = column[row] if isinstance(column, list) else column[row].item()
            if value is not _MISSING:
                fields[name] = value
        return fields

    def meta_of(self, row: int) -> dict[str, Any]:
        if isinstance(self.meta, list):
            return self.meta[row]
        data, offsets = self.meta
        return json.loads(bytes(data[int(offsets[row]):int(offsets[row + 1])]))

    def lengths(self, name: str = "input_ids") -> np.ndarray:
        """Tokens of field `name` in each row (in this table's order): what batching by length needs."""
        column = self.tokens[name]
        every = np.array([len(v) for v in column]) if isinstance(column, list) else np.diff(column[1])
        return every if self.rows is None else every[self.rows]

    def scalar(self, name: str) -> np.ndarray | None:
        """Scalar field `name` of every row as an array (None when it is not stored as one)."""
        column = self.scalars.get(name)
        if column is None or isinstance(column, list):
            return None
        return column if self.rows is None else column[self.rows]


class _Builder:
    """Appends features into compact buffers (array('i') for tokens, widened to 'q' when a value needs it;
    bytearray for meta), then packs them as numpy arrays."""

    def __init__(self) -> None:
        self.size = 0
        self.tokens: dict[str, Any] = {}  # name -> [array values, array offsets] or a list fallback
        self.scalars: dict[str, Any] = {}
        self.meta_bytes, self.meta_offsets, self.meta_list = bytearray(), array("q", [0]), None
        self.names: set[str] = set()  # every field name seen so far

    def add(self, feature: Feature) -> None:
        fields = feature.fields
        names = self.names if fields.keys() == self.names else self.names | fields.keys()
        for name in names:
            value = fields.get(name, _MISSING)
            if name in self.scalars or (name not in self.tokens and not isinstance(value, list)):
                self._add_scalar(name, value)
            else:
                self._add_tokens(name, value)
        self._add_meta(feature.meta)
        self.names = names
        self.size += 1

    def _add_tokens(self, name: str, value: Any) -> None:
        column = self.tokens.get(name)
        if column is None:
            column = self.tokens[name] = [array("i"), array("q", [0])] if self.size == 0 else \
                [_MISSING] * self.size
        if isinstance(column, list) and isinstance(column[0], array) and _appended(column, value):
            column[1].append(len(column[0]))
            return
        if isinstance(column, list) and isinstance(column[0], array):  # not an int list: keep rows as they are
            values, offsets = column
            column = self.tokens[name] = [values[offsets[i]:offsets[i + 1]].tolist() for i in range(self.size)]
        column.append(value)

    def _add_scalar(self, name: str, value: Any) -> None:
        column = self.scalars.get(name)
        if column is None:
            column = self.scalars[name] = array("q") if self.size == 0 else [_MISSING] * self.size
        if isinstance(column, array) and type(value) is int and -2 ** 63 <= value < 2 ** 63:
            column.append(value)
            return
        if isinstance(column, array):
            column = self.scalars[name] = column.tolist()
        column.append(value)

    def _add_meta(self, meta: dict) -> None:
        if self.meta_list is None:
            try:
                if _json_exact(meta):
                    text = json.dumps(meta, ensure_ascii=False)
                    self.meta_bytes += text.encode("utf-8")  # a lone surrogate cannot be encoded
                    self.meta_offsets.append(len(self.meta_bytes))
                    return
            except UnicodeEncodeError:
                pass
            self.meta_list = [self._meta(i) for i in range(self.size)]
        self.meta_list.append(meta)

    def _meta(self, row: int) -> dict:
        return json.loads(bytes(self.meta_bytes[self.meta_offsets[row]:self.meta_offsets[row + 1]]))

    def finish(self) -> FeatureTable:
        tokens, scalars = {}, {}
        for name, column in self.tokens.items():
            if isinstance(column[0], array):
                values, offsets = _packed(column[0]), np.frombuffer(column[1], dtype=np.int64).copy()
                tokens[name] = (ZEROS if values.size and not values.any() else values, offsets)
            else:
                tokens[name] = column
        for name, column in self.scalars.items():
            scalars[name] = _packed(column) if isinstance(column, array) else column
        meta = self.meta_list if self.meta_list is not None else (
            np.frombuffer(bytes(self.meta_bytes), dtype=np.uint8),
            np.frombuffer(self.meta_offsets, dtype=np.int64).copy())
        return FeatureTable(self.size, tokens, scalars, meta)


def _json_exact(value: Any) -> bool:
    """Whether JSON gives `value` back equal and of the same types: no tuples, no keys other than str, no NaN
    or infinity, no subclass (numpy ints, enums). Cheaper than a round trip through json.loads and a
    comparison: the types of a dict's or list's items are gathered at C speed, and only containers recurse."""
    kind = type(value)
    if kind is dict:
        if not set(map(type, value)) <= _STR:
            return False
        items = value.values()
    elif kind is list:
        items = value
    else:
        return kind in _PLAIN or (kind is float and math.isfinite(value))
    return set(map(type, items)) <= _PLAIN or all(type(item) in _PLAIN or _json_exact(item) for item in items)


def _appended(column: list, value: Any) -> bool:
    """Append int list `value` to the column's values at C speed; False (values unchanged) when it is not one.
    Values are gathered as int32 (half the memory of int64 while a file is read) and the column turns to
    int64 when a value needs it."""
    values = column[0]
    if not isinstance(value, list):
        return False
    size = len(values)
    try:
        values.extend(value)  # refuses floats, strings and ints beyond the type
        return True
    except (TypeError, OverflowError) as error:
        del values[size:]
        if isinstance(error, TypeError) or values.typecode == "q":
            return False
    column[0] = array("q", values)
    return _appended(column, value)


def _packed(values: array) -> np.ndarray:
    """The smallest of uint8, int16, uint16, int32 and int64 that holds every value exactly."""
    data = np.frombuffer(values, dtype=values.typecode) if len(values) else np.zeros(0, dtype=np.int64)
    low, high = (int(data.min()), int(data.max())) if data.size else (0, 0)
    for dtype in (np.uint8, np.int16, np.uint16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return data.astype(dtype)
    return data.copy()
