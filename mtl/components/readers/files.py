"""Reading text files with errors that name the file and the line (`path, line N: problem (fix)`)."""
import json
import logging
import sys
from pathlib import Path
from typing import Any, Iterator

from mtl.errors import DataError

log = logging.getLogger(__name__)

HEADER_NAMES = {"label", "text_a", "text_b"}  # PALM's column names: a first line made of them is a header


def check_file(path: str | Path, what: str = "data file") -> Path:
    """The path as a Path when it is a readable file; else a DataError saying what is there instead."""
    path = Path(path)
    if path_kind(path) == "folder":
        raise DataError(str(path), None, "is a folder, not a file", f"give the {what} itself")
    if path_kind(path) != "file":
        raise DataError(str(path), None, "no such file", f"check the path of the {what}")
    return path


def path_kind(path: Path) -> str:
    """'file', 'folder', 'other' or 'missing'; a path the OS refuses (too long, NUL byte) is 'missing'."""
    try:
        return "folder" if path.is_dir() else "file" if path.is_file() else "other" if path.exists() else "missing"
    except (OSError, ValueError):
        return "missing"


def read_lines(path: str | Path, what: str = "data file") -> list[str]:
    """All lines of a UTF-8 file, BOM and CRLF tolerated, invalid bytes reported with their line.

    Lines are split on '\\n' only: other Unicode line breaks (U+2028, \\x85, \\x0b...) stay inside a line.
    """
    return [text for _, text in iter_lines(path, what)]


def iter_lines(path: str | Path, what: str = "data file") -> Iterator[tuple[int, str]]:
    """(line number, text) of each line of a UTF-8 file, read one line at a time (a large file is never held
    whole); the rules of `read_lines`."""
    path = check_file(path, what)
    try:
        handle = open(path, "rb")
    except OSError as error:
        raise DataError(str(path), None, f"cannot be read: {error.strerror or error}",
                        "check the file's permissions") from None
    with handle:
        utf16 = False
        for number, raw in enumerate(handle, start=1):
            if number == 1:
                utf16, raw = raw[:2] in (b"\xff\xfe", b"\xfe\xff"), raw.removeprefix(b"\xef\xbb\xbf")
            yield number, decode_line(raw[:-1] if raw.endswith(b"\n") else raw, str(path), number, utf16)


def read_utterances(source: str, what: str = "input file") -> list[str]:
    """The texts of a one-utterance-a-line UTF-8 file (`-`: standard input), stripped. A blank line holds no
    utterance: it is skipped, with one warning naming the blank lines (each record of the output holds its
    text, so records still match their lines); a source with no utterance at all is a DataError."""
    name = "<stdin>" if source == "-" else source
    lines = decode_lines(sys.stdin.buffer.read(), name) if source == "-" else read_lines(source, what)
    blank = [number for number, line in enumerate(lines, start=1) if not line.strip()]
    if len(blank) == len(lines):
        raise DataError(name, None, "no utterance: every line is blank" if lines else "is empty",
                        "write one utterance per line")
    if blank:
        shown = ", ".join(map(str, blank[:10])) + (", ..." if len(blank) > 10 else "")
        log.warning("%s: %d blank line%s skipped (line %s): one prediction per non-blank line", name, len(blank),
                    "" if len(blank) == 1 else "s", shown)
    return [line.strip() for line in lines if line.strip()]


def decode_lines(raw: bytes, source: str) -> list[str]:
    """The lines of UTF-8 bytes (a leading BOM and CRs dropped); bytes that are not UTF-8 (a Latin-1 or
    cp1252 file) are a DataError naming `source`, the line and the byte, not a UnicodeDecodeError later."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    utf16 = raw[:2] in (b"\xff\xfe", b"\xfe\xff")
    return [decode_line(line, source, number, utf16) for number, line in enumerate(lines, start=1)]


def decode_line(line: bytes, source: str, number: int, utf16: bool = False) -> str:
    """One line's UTF-8 bytes as text (a trailing CR dropped); invalid bytes are a DataError naming `source`,
    the line and the byte. `utf16`: the file began with a UTF-16 byte-order mark (said in the fix)."""
    try:
        return line.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError as error:
        encoding = "utf-16" if utf16 else "latin1"
        raise DataError(source, number, f"invalid UTF-8 at byte {error.start} of the line (0x"
                        f"{line[error.start]:02x}: {'UTF-16' if utf16 else 'Latin-1 or cp1252'} "
                        f"text?)", f"save the file as UTF-8, e.g. iconv -f {encoding} -t utf-8") from None


def read_tsv(path: str | Path, header: tuple[str, ...]) -> list[tuple[int, list[str]]]:
    """(line number, columns) of a PALM TSV file; the header line, when present, must match `header`.

    Blank and whitespace-only lines are skipped (logged at INFO with their numbers).
    """
    return list(iter_tsv(path, header))


def iter_tsv(path: str | Path, header: tuple[str, ...]) -> Iterator[tuple[int, list[str]]]:
    """`read_tsv` one row at a time (a large file is never held whole); a file without a row is a DataError
    when the iteration reaches its end."""
    rows, blank, lines = 0, [], 0
    for number, line in iter_lines(path):
        lines = number
        if not line.strip():
            blank.append(number)
            continue
        columns = tsv_columns(str(path), number, line, header)
        if columns is not None:
            rows += 1
            yield number, columns
    if blank:
        log.info("%s: skipped %d blank or whitespace-only lines (line %s)", path, len(blank),
                 ", ".join(map(str, blank[:10])) + (", ..." if len(blank) > 10 else ""))
    if not rows:
        problem = ("empty file" if not lines else "only blank lines" if len(blank) == lines
                   else "only a header, no examples")
        raise DataError(str(path), None, problem, f"each example is one line: {'<TAB>'.join(header)}")


def tsv_columns(path: str, number: int, line: str, header: tuple[str, ...]) -> list[str] | None:
    """The columns of one non-blank TSV line; None for the header (line 1 equal to `header`). A header in
    another order, or a line with another number of columns, is a DataError naming the file and line."""
    layout = "<TAB>".join(header)
    columns = line.split("\t")
    names = tuple(c.strip() for c in columns)
    if number == 1 and names == header:
        return None
    if number == 1 and set(names) <= HEADER_NAMES and len(set(names)) == len(names):
        raise DataError(path, 1, f"the header is {'<TAB>'.join(names)} but this reader reads {layout}",
                        f"write the header as {layout} and put the columns in that order")
    if len(columns) != len(header):
        fix = (f"a tab inside the text? replace it with a space; each line is {layout}"
               if len(columns) > len(header) else f"each line is {layout}, separated by one tab")
        raise DataError(path, number, f"expected {len(header)} tab-separated columns "
                        f"({', '.join(header)}), found {len(columns)}", fix)
    return columns


# ---- label maps ------------------------------------------------------------------------------------------
LABEL_MAP_FIX = 'write {"label": id, ...} with ids 0..n-1, or ["label", ...]'


class _DuplicateKey(Exception):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


def _line_of(text: str | None, needle: str, occurrence: int = 1) -> int | None:
    """The line of the n-th occurrence of `needle` in `text` (for messages about JSON files)."""
    if text is None:
        return None
    position = -1
    for _ in range(occurrence):
        position = text.find(needle, position + 1)
        if position < 0:
            return None
    return text.count("\n", 0, position) + 1


def load_label_map(label_map: str | Path | dict | list | None) -> dict[str, int] | None:
    """A label map from a JSON file ({label: id} or [label, ...]), a dict or a list; ids must be 0..n-1.

    Every problem (bad JSON, duplicate labels or ids, gaps, non-string labels) is a DataError naming the
    file (and the line where one applies); a map given in Python is named `label_map`.
    """
    if label_map is None:
        return None
    source, text = "label_map", None
    if isinstance(label_map, (str, Path)):
        source = str(label_map)
        text = "\n".join(read_lines(label_map, "JSON label map"))
        try:
            label_map = json.loads(text, object_pairs_hook=_no_duplicate_keys)
        except json.JSONDecodeError as error:
            raise DataError(source, error.lineno, f"not valid JSON: {error.msg} at column {error.colno}",
                            LABEL_MAP_FIX) from None
        except _DuplicateKey as error:
            key = str(error.args[0])
            raise DataError(source, _line_of(text, json.dumps(key, ensure_ascii=False), 2),
                            f"label {key!r} appears twice", "give each label once") from None
    if isinstance(label_map, (list, tuple)):
        return _from_list(list(label_map), source, text)
    if isinstance(label_map, dict):
        return _from_dict(label_map, source, text)
    raise DataError(source, None, f"a label map is a JSON object or list, got {type(label_map).__name__}",
                    LABEL_MAP_FIX)


def _check_name(label: Any, source: str, text: str | None, where: str) -> None:
    quoted = json.dumps(label, ensure_ascii=False) if isinstance(label, str) else None
    line = _line_of(text, quoted) if quoted else None
    if not isinstance(label, str):
        raise DataError(source, line, f"{where}: label {label!r} is not a string but {type(label).__name__}",
                        "write label names as strings")
    if not label.strip():
        raise DataError(source, line, f"{where}: empty label name", "remove it or give it a name")
    if label != label.strip():
        raise DataError(source, line, f"{where}: label {label!r} has leading or trailing spaces",
                        "remove the spaces: data labels are compared without them")


def _from_list(labels: list, source: str, text: str | None) -> dict[str, int]:
    if not labels:
        raise DataError(source, None, "empty label map", LABEL_MAP_FIX)
    out: dict[str, int] = {}
    for index, label in enumerate(labels):
        _check_name(label, source, text, f"item {index}")
        if label in out:
            raise DataError(source, _line_of(text, json.dumps(label, ensure_ascii=False), 2),
                            f"label {label!r} appears twice (items {out[label]} and {index})",
                            "give each label once")
        out[label] = index
    return out


def _from_dict(mapping: dict, source: str, text: str | None) -> dict[str, int]:
    if not mapping:
        raise DataError(source, None, "empty label map", LABEL_MAP_FIX)
    by_id: dict[int, str] = {}
    for label, index in mapping.items():
        _check_name(label, source, text, f"label {label!r}")
        line = _line_of(text, json.dumps(label, ensure_ascii=False)) if isinstance(label, str) else None
        if isinstance(index, bool) or not isinstance(index, int):
            raise DataError(source, line, f"the id of {label!r} is {index!r}, not an integer",
                            "ids are integers 0..n-1")
        if index in by_id:
            raise DataError(source, line, f"id {index} is given to both {by_id[index]!r} and {label!r}",
                            "give each label its own id, 0..n-1")
        by_id[index] = label
    missing = sorted(set(range(len(mapping))) - set(by_id))
    if missing:
        extra = sorted(set(by_id) - set(range(len(mapping))))
        raise DataError(source, None, f"ids must be 0..{len(mapping) - 1} without gaps: {missing[:10]} missing, "
                        f"{extra[:10]} out of range", "renumber the labels 0..n-1")
    return dict(mapping)


def names_of(label_map: dict[str, int]) -> list[str]:
    """Label names ordered by id."""
    return [name for name, _ in sorted(label_map.items(), key=lambda item: item[1])]
