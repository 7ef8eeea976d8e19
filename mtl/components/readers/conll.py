"""CoNLL column files (CoNLL-2003 NER and its kin): one token per line, columns separated by spaces or tabs,
a blank line between sentences, `-DOCSTART-` lines between documents.

    EU NNP B-NP B-ORG
    rejects VBZ B-VP O

The word is the first column; the tag is `tag_column` (default: the last). Every line of a file must have
the same number of columns: a line with a word but no tag, or with a column too many or too few, is a
DataError naming the file and the line, never a silent shift of columns.
"""
import logging
from pathlib import Path

from mtl.components.readers.files import read_lines
from mtl.errors import DataError

log = logging.getLogger(__name__)

DOCSTART = "-DOCSTART-"
LAYOUT = "one token per line: `word ... tag`, columns separated by spaces, a blank line between sentences"


def read_conll(path: str | Path, tag_column: int = -1) -> list[dict]:
    """Sentences of a CoNLL file as {"words", "tags", "line", "tag_lines"} dicts.

    `line` is the line of the sentence's first token (what messages about the sentence name);
    `tag_lines[i]` is the line of token i, so a bad tag can be reported exactly. `-DOCSTART-` lines are
    skipped and end the sentence they interrupt.
    """
    path = str(path)
    sentences: list[dict] = []
    current: dict | None = None
    width, docstarts = None, 0
    for number, line in enumerate(read_lines(path), start=1):
        columns = line.split()
        if not columns:
            current = None
            continue
        if columns[0] == DOCSTART:
            docstarts, current = docstarts + 1, None
            continue
        width = width or _check_width(path, number, columns, tag_column)
        _check_columns(path, number, columns, width)
        if current is None:
            current = {"words": [], "tags": [], "line": number, "tag_lines": []}
            sentences.append(current)
        current["words"].append(columns[0])
        current["tags"].append(columns[tag_column])
        current["tag_lines"].append(number)
    if not sentences:
        raise DataError(path, None, "no sentences (the file is empty or holds only -DOCSTART- and blank lines)",
                        LAYOUT)
    log.info("%s: %d sentences, %d -DOCSTART- lines skipped", path, len(sentences), docstarts)
    return sentences


def _check_width(path: str, number: int, columns: list[str], tag_column: int) -> int:
    """The number of columns of the file, from its first non-blank line; `tag_column` must point inside it."""
    width = len(columns)
    if width < 2:
        raise DataError(path, number, f"a word but no tag ({columns[0]!r} is the only column)",
                        f"the first line sets the layout; {LAYOUT}")
    if not -width <= tag_column < width or tag_column in (0, -width):
        raise DataError(path, number, f"tag_column={tag_column} but the lines have {width} columns "
                        "(column 0 is the word)", f"give tag_column between 1 and {width - 1}, or -1 for the last")
    return width


def _check_columns(path: str, number: int, columns: list[str], width: int) -> None:
    if len(columns) == width:
        return
    if len(columns) == 1:
        raise DataError(path, number, f"a word but no tag ({columns[0]!r} is the only column)",
                        f"add its tag; every line has {width} columns")
    raise DataError(path, number, f"expected {width} columns like the first line, found {len(columns)}",
                    "a space inside a word? CoNLL words hold no spaces; " + LAYOUT)


def check_known_tags(sentences: list[dict], tag_map: dict[str, int], path: str) -> None:
    """In training data every tag must be in the label map: fail on the exact line of the first that is not."""
    for sentence in sentences:
        for tag, number in zip(sentence["tags"], sentence["tag_lines"]):
            if tag not in tag_map:
                known = sorted(tag_map)
                raise DataError(path, number, f"tag {tag!r} is not in the label map",
                                "add it to the label map, fix the tag, or check tag_column; known: "
                                + ", ".join(known[:10]) + (", ..." if len(known) > 10 else ""))


def tag_map_from(sentences: list[dict]) -> dict[str, int]:
    """A label map from the tags seen: 'O' first (id 0), then the rest sorted, so the ids are stable."""
    tags = sorted({tag for sentence in sentences for tag in sentence["tags"]} - {"O"})
    return {name: index for index, name in enumerate(["O"] + tags)}


def conll_label_map(path: str | Path, tag_column: int = -1) -> dict[str, int]:
    """The label map of a CoNLL training file ('O' first, then sorted): PALM's readers take a label map;
    this builds one to pass, or to save as JSON beside a model."""
    return tag_map_from(read_conll(path, tag_column))
