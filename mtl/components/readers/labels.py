"""Label lookup shared by readers: strict in training, counted and logged in evaluation."""
import logging

from mtl.errors import DataError

log = logging.getLogger(__name__)

IGNORE = -100  # label id the losses skip


class LabelLookup:
    """Maps label names to ids for one file; in eval, unknown gold labels are kept as text and counted.

    An unknown gold label in dev/test data cannot be predicted, so it counts as an error in the metrics
    (the honest choice; JointBERT mapped it to UNK) and is skipped in the loss.
    """

    def __init__(self, label_map: dict[str, int], path: str, phase: str, what: str) -> None:
        self.label_map, self.path, self.phase, self.what = label_map, path, phase, what
        self.unknown: dict[str, int] = {}

    def __call__(self, label: str, line: int) -> int:
        if label in self.label_map:
            return self.label_map[label]
        if self.phase == "train":
            raise DataError(self.path, line, f"{self.what} {label!r} is not in the label map", self._fix(label))
        self.unknown[label] = self.unknown.get(label, 0) + 1
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
        """One warning per file for the unknown gold labels of an eval/test set."""
        if self.unknown:
            count = sum(self.unknown.values())
            names = sorted(self.unknown)
            log.warning("%s: %d gold %s%s not in the training label map (%s); kept as gold text, they count as "
                        "errors in the metrics and are skipped in the loss", self.path, count, self.what,
                        "" if count == 1 else "s", ", ".join(names[:10]) + (", ..." if len(names) > 10 else ""))
