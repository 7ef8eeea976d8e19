"""Reading text files with errors that name the file and the line."""
import json
from pathlib import Path

from mtl.errors import DataError


def read_lines(path: str | Path) -> list[str]:
    """All lines of a UTF-8 file, BOM and CRLF tolerated, invalid bytes reported with their line."""
    raw = Path(path).read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    decoded = []
    for number, line in enumerate(lines, start=1):
        try:
            decoded.append(line.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as error:
            raise DataError(str(path), number, f"invalid UTF-8 at byte {error.start}", "save the file as UTF-8") from None
    return decoded


def read_tsv(path: str | Path, header: tuple[str, ...]) -> list[tuple[int, list[str]]]:
    """(line number, columns) of a PALM TSV file; the header line, when present, must match `header`."""
    rows = []
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        columns = line.split("\t")
        if number == 1 and tuple(c.strip() for c in columns) == header:
            continue
        if len(columns) != len(header):
            raise DataError(str(path), number, f"expected {len(header)} tab-separated columns "
                            f"({', '.join(header)}), found {len(columns)}")
        rows.append((number, columns))
    if not rows:
        raise DataError(str(path), None, "no examples", "the file is empty or has only a header")
    return rows


def load_label_map(label_map: str | Path | dict | list | None) -> dict[str, int] | None:
    """A label map from a JSON file ({label: id} or [label, ...]), a dict or a list; ids must be 0..n-1."""
    if label_map is None:
        return None
    if isinstance(label_map, (str, Path)):
        with open(label_map, encoding="utf-8") as handle:
            label_map = json.load(handle)
    if isinstance(label_map, list):
        label_map = {label: index for index, label in enumerate(label_map)}
    ids = sorted(label_map.values())
    if ids != list(range(len(ids))):
        raise ValueError(f"label map ids must be 0..{len(ids) - 1} without gaps, got {ids}")
    return dict(label_map)


def names_of(label_map: dict[str, int]) -> list[str]:
    """Label names ordered by id."""
    return [name for name, _ in sorted(label_map.items(), key=lambda item: item[1])]
