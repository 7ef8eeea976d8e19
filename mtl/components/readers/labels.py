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
            known = ", ".join(list(self.label_map)[:8])
            raise DataError(self.path, line, f"{self.what} {label!r} is not in the label map",
                            f"add it to the label map or fix the label; known: {known}, ...")
        self.unknown[label] = self.unknown.get(label, 0) + 1
        return IGNORE

    def report(self) -> None:
        if self.unknown:
            count = sum(self.unknown.values())
            log.warning("%s: %d %s labels not in the training label map (%s); they count as errors in the "
                        "metrics and are skipped in the loss", self.path, count, self.what,
                        ", ".join(sorted(self.unknown)[:10]))
