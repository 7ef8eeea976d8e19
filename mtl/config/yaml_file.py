"""Reading a run config's YAML: errors name the file, the line that is really wrong and the likely fix.

PyYAML alone reports `"<unicode string>"` for text it was handed, fails on a Latin-1 comment with a bare
UnicodeDecodeError, and reports a missing colon on the line *after* it (`lr 1e-4` followed by
`num_epochs: 6` reads as one scalar `lr 1e-4 num_epochs` until the second colon). Here the bytes are decoded
line by line (mtl.components.readers.files), the text is parsed from a stream named after the file, and each
kind of syntax error is traced back to its line with what to change.
"""
import io
import re
from pathlib import Path
from typing import Any

import yaml

from mtl.components.readers.files import decode_lines
from mtl.errors import ConfigError, DataError

SYNTAX = "check the YAML syntax here: `key: value`, nested keys indented by spaces"


class Loader(yaml.SafeLoader):
    """Safe YAML with two traps removed: `1e-4` is a float (YAML 1.1 reads it as a string), and a key
    written twice in one mapping is an error (YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key != "<<" and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(
    r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"), list("-+0123456789."))


def read_yaml(path: Path) -> Any:
    """The parsed YAML of `path`, or one ConfigError `path, line N: problem (fix)`."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (check the config's path)") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read: {error.strerror or error}") from None
    try:
        lines = decode_lines(raw, str(path))
    except DataError as error:
        raise ConfigError(str(error)) from None
    stream = io.StringIO("\n".join(lines) + "\n")
    stream.name = str(path)  # what PyYAML's marks would name, instead of "<unicode string>"
    try:
        return yaml.load(stream, Loader=Loader)
    except yaml.MarkedYAMLError as error:
        line, problem, fix = explain(error, lines)
        raise ConfigError(f"{path}, line {line}: {problem} ({fix})") from None
    except yaml.reader.ReaderError as error:  # a control character: PyYAML gives a position, not a line
        line = "\n".join(lines)[:error.position].count("\n") + 1
        character = chr(error.character) if isinstance(error.character, int) else error.character
        raise ConfigError(f"{path}, line {line}: character {character!r} is not allowed in YAML "
                          "(remove it; a config holds printable text)") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: {error}") from None


def explain(error: yaml.MarkedYAMLError, lines: list[str]) -> tuple[int, str, str]:
    """(1-based line, problem, fix) for a PyYAML error, its line moved to where the mistake really is."""
    problem = error.problem or error.context or "not valid YAML"
    line = error.problem_mark.line + 1 if error.problem_mark else 1
    context = error.context_mark.line + 1 if error.context_mark else line
    if problem == "mapping values are not allowed here":
        return _stray_colon(lines, line, error.problem_mark.column)
    if problem == "could not find expected ':'":
        return context, f"`{_text(lines, context)}` has no colon after its key", "write `key: value`, a space " \
            "after the colon"
    if problem.startswith("found character '\\t'"):
        return line, "a tab where YAML expects spaces", "indent with spaces, never tabs"
    if problem.startswith("expected <block end>") or problem.startswith("did not find expected key"):
        return line, f"`{_text(lines, line)}` is not lined up with the keys or list items above it", \
            "indent each key like the other keys of its mapping; a new list item starts with `- `"
    if "while scanning a quoted scalar" in (error.context or ""):
        return context, "a quote opened on this line is never closed", "close the quote on the same line"
    if problem.startswith("found undefined alias"):
        name = problem.rsplit(" ", 1)[-1].strip("'")
        return line, f"`*{name}` refers to no anchor", f"write `&{name}` on the value it stands for, earlier " \
            "in the file"
    if problem.endswith("appears twice"):
        return line, problem, "give each key once: YAML would silently keep the last"
    if error.context and error.context.startswith("while parsing a flow"):
        return context, f"a bracket opened on this line is not closed: {problem}", "close it on the same line, " \
            "or write the list or mapping as indented lines"
    return line, problem + (f" ({error.context} on line {context})" if error.context else ""), SYNTAX


def _stray_colon(lines: list[str], line: int, column: int) -> tuple[int, str, str]:
    """`mapping values are not allowed here`: a value holding `: `, a key line without a colon before this
    one (the usual case, so PyYAML's line is one too late), or a key indented further than its neighbours."""
    here = lines[line - 1] if line <= len(lines) else ""
    before = here[:column]
    if ": " in before.strip():
        return line, f"`{here.strip()}`: the value holds a `: `", "quote the value: key: \"a: b\""
    previous = next((n for n in range(line - 1, 0, -1) if _content(lines[n - 1])), None)
    if previous is not None and ":" not in _content(lines[previous - 1]).removeprefix("- "):
        return previous, f"`{_text(lines, previous)}` has no colon, so the next line's key reads as part of it", \
            "write `key: value`, a space after the colon"
    return line, f"`{here.strip()}` is indented further than the keys above it", \
        "indent each key like the other keys of its mapping"


def _content(text: str) -> str:
    """A line without its comment and surrounding spaces (empty for blank and comment lines)."""
    return re.sub(r"(^|\s)#.*$", "", text).strip()


def _text(lines: list[str], line: int) -> str:
    return _content(lines[line - 1]) if 0 < line <= len(lines) else ""
