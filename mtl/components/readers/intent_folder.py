"""The ATIS/SNIPS folder format, line by line: `seq.in` (the words), `seq.out` (one slot tag per word) and
`label` (the intent), one utterance per line in each. Many intent data sets ship without `seq.out`: such a
folder holds intents only, and is read as such (`with_slots=False`)."""
import logging
from pathlib import Path

from mtl.components.readers.files import path_kind, read_lines
from mtl.errors import DataError

log = logging.getLogger(__name__)

LAYOUT = ("an intent/slot folder holds seq.in, seq.out and label, one line per utterance (an intent-only folder: "
          "seq.in and label)")


def has_seq_out(path: str | Path) -> bool:
    return path_kind(Path(path) / "seq.out") == "file"


def check_tags(path: str, line: int, words: list[str], tags: list[str], separator: str = "space") -> None:
    """One tag per word, or a DataError naming the line."""
    if len(words) != len(tags):
        raise DataError(path, line, f"{len(words)} tokens but {len(tags)} labels",
                        f"give exactly one label per token, separated by a {separator}")


def read_intent_folder(path: str | Path, with_slots: bool) -> list[dict]:
    """Examples {"words", "tags" (None without slots), "intent", "line"}; every mismatch between the files
    is a DataError naming the file and the line."""
    folder = Path(path)
    kind = path_kind(folder)
    if kind != "folder":
        raise DataError(str(folder), None, "no such folder" if kind == "missing" else "not a folder", LAYOUT)
    names = ("seq.in", "seq.out", "label") if with_slots else ("seq.in", "label")
    files = {name: folder / name for name in names}
    for name, file in files.items():
        if path_kind(file) != "file":
            why = " (this reader reads slots: its training folder had seq.out, or slot_labels were given)" \
                if name == "seq.out" else ""
            raise DataError(str(folder), None, f"missing {name}{why}", LAYOUT)
    columns = dict(zip(names, _trim_ends({name: read_lines(file) for name, file in files.items()}, folder)))
    counts = {name: len(lines) for name, lines in columns.items()}
    if len(set(counts.values())) > 1:
        empty = [name for name, count in counts.items() if count == 0]
        if empty:
            raise DataError(str(files[empty[0]]), None, "empty file", LAYOUT)
        first, *rest = counts.items()
        raise DataError(str(folder), None, f"{first[0]} has {first[1]} lines, "
                        + ", ".join(f"{name} {count}" for name, count in rest), LAYOUT)
    every = "all three files" if with_slots else "both files"
    tags = columns.get("seq.out", [None] * counts["seq.in"])
    examples = []
    for line, (text, tag_line, intent) in enumerate(zip(columns["seq.in"], tags, columns["label"]), start=1):
        words = text.split()
        if not words:
            raise DataError(str(files["seq.in"]), line, "empty utterance", f"remove the line from {every}")
        word_tags = None if tag_line is None else tag_line.split()
        if word_tags is not None:
            check_tags(str(files["seq.out"]), line, words, word_tags)
        if not intent.strip():
            raise DataError(str(files["label"]), line, "empty intent", "write the utterance's intent")
        examples.append({"words": words, "tags": word_tags, "intent": intent.strip(), "line": line})
    if not examples:
        raise DataError(str(folder), None, f"no examples: the {'three' if with_slots else 'two'} files are empty",
                        LAYOUT)
    return examples


def _trim_ends(lines: dict[str, list[str]], folder: Path) -> list[list[str]]:
    """The files' lines, without blank lines at their ends (an editor's extra newlines) when that leaves
    them one line per utterance; otherwise as they are, so the mismatch is reported."""
    trimmed = {}
    for name, values in lines.items():
        kept = len(values)
        while kept and not values[kept - 1].strip():
            kept -= 1
        trimmed[name] = values[:kept]
    if len({len(values) for values in trimmed.values()}) > 1:
        return list(lines.values())
    dropped = {name: len(lines[name]) - len(trimmed[name]) for name in lines if len(lines[name]) > len(trimmed[name])}
    if dropped:
        log.info("%s: ignored blank lines at the end of %s", folder,
                 ", ".join(f"{name} ({count})" for name, count in dropped.items()))
    return list(trimmed.values())
