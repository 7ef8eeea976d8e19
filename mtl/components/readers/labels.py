"""Label lookup shared by readers: strict in training, counted and logged in evaluation; label maps built
from the training data (`label_map="auto"`)."""
import logging
import re
from typing import Any

from mtl.errors import DataError

log = logging.getLogger(__name__)

IGNORE = -100  # label id the losses skip
AUTO = "auto"  # label_map="auto": built from the training data the reader loads first
SHOWN_LINES = 5  # lines named in the warning about unseen labels
_ASCII_DIGITS = re.compile(r"[0-9]+")


def is_auto(label_map: Any) -> bool:
    return isinstance(label_map, str) and label_map == AUTO


def label_map_from(labels: list[str], path: str, phase: str, reader: str, layout: str) -> dict[str, int]:
    """`label_map="auto"`: the labels seen in training data, integer labels in numeric order (PALM's `0`, `1`
    keep their ids), names sorted. Eval readers share the training reader's map (`eval_reader`); one with
    nothing to share is refused. A label column holding mostly distinct values is a text column: refused."""
    if phase != "train":
        raise ValueError(f"{reader}(label_map='auto'): load the training data first (phase 'train'); eval readers "
                         "share its label map")
    names = sorted(set(labels), key=lambda name: (0, int(name), "") if _ASCII_DIGITS.fullmatch(name) else (1, 0, name))
    if len(names) > 100 and len(names) * 2 > len(labels):
        shown = ", ".join(repr(name[:30]) for name in names[:3])
        raise DataError(path, None, f"{len(names)} distinct labels in {len(labels)} examples (e.g. {shown}): the "
                        "label column holds texts; the columns look swapped", f"each line is {layout}")
    log.info("%s: label map built from the data: %d labels", path, len(names))
    return {name: index for index, name in enumerate(names)}


def labels_of(examples: list[dict], key: str, path: str, reader: str, keys: str) -> list[str]:
    """Each example's label under `key`, what `label_map="auto"` is built from. An example (from an overridden
    `_read_examples`, say) without a string there is a DataError naming its line and the keys `reader` reads,
    not a lookup failure later."""
    labels = []
    for index, example in enumerate(examples):
        label = example.get(key) if isinstance(example, dict) else None
        if not isinstance(label, str):
            line = example.get("line") if isinstance(example, dict) else None
            found = f"{key!r} is {label!r}" if isinstance(example, dict) and key in example else \
                f"no {key!r} key" if isinstance(example, dict) else f"a {type(example).__name__}, not a dict"
            raise DataError(path, line if isinstance(line, int) else None,
                            f"example {index + 1} from _read_examples has {found}",
                            f"{reader} examples are dicts {keys}, the label a string; label_map='auto' is "
                            "built from them")
        labels.append(label)
    return labels


class LabelLookup:
    """Maps label names to ids for one file; in eval, unknown gold labels are kept as text and counted.

    An unknown gold label in dev/test data cannot be predicted, so it counts as an error in the metrics
    (the honest choice; JointBERT mapped it to UNK) and is skipped in the loss.
    """

    def __init__(self, label_map: dict[str, int], path: str, phase: str, what: str) -> None:
        self.label_map, self.path, self.phase, self.what = label_map, path, phase, what
        self.unknown: dict[str, int] = {}
        self.unknown_lines: list[int] = []  # the first few lines holding one

    def __call__(self, label: str, line: int) -> int:
        if label in self.label_map:
            return self.label_map[label]
        if self.phase == "train":
            raise DataError(self.path, line, f"{self.what} {label!r} is not in the label map", self._fix(label))
        self.unknown[label] = self.unknown.get(label, 0) + 1
        if len(self.unknown_lines) < SHOWN_LINES and line not in self.unknown_lines:
            self.unknown_lines.append(line)
        return IGNORE

    def _fix(self, label: str) -> str:
        if not self.label_map:
            return "give the reader a label map"
        if label.isdigit() and not any(name.isdigit() for name in self.label_map):
            return ("the data has integer ids but the label map has names: write names in the data, "
                    "or drop the label map")
        if self.what == "tag" and any(c.isspace() for c in label):
            return "a tag cannot hold spaces: tokens and tags are separated by \\x02 in PALM's TSV"
        known = list(self.label_map)
        return f"add it to the label map or fix the label; known: {', '.join(known[:8])}" + \
            (", ..." if len(known) > 8 else "")

    def report(self) -> None:
        """One warning per file for the unknown gold labels of an eval/test set, naming the first lines."""
        if self.unknown:
            count = sum(self.unknown.values())
            names = sorted(self.unknown)
            where = ", ".join(f"{self.path}:{line}" for line in self.unknown_lines)
            log.warning("%s: %d gold %s%s not in the training label map (%s), first at %s%s; kept as gold text, they "
                        "count as errors in the metrics and are skipped in the loss", self.path, count, self.what,
                        "" if count == 1 else "s", ", ".join(names[:10]) + (", ..." if len(names) > 10 else ""),
                        where, ", ..." if count > len(self.unknown_lines) else "")
