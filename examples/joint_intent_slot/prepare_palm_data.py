"""Convert an ATIS/SNIPS folder (seq.in, seq.out, label) into PALM's TSV files, as PALM's ATIS example had.

Writes, under OUT: {train,dev,test}_slot.tsv (`text_a<TAB>label`, tokens and tags joined by \\x02),
{train,dev,test}_intent.tsv (`label<TAB>text_a`, integer intent ids), and label maps
slot_label_map.json / intent_label_map.json built from the training split.

    python examples/joint_intent_slot/prepare_palm_data.py ../shared/data/atis outputs/palm_atis
"""
import json
import sys
from pathlib import Path


def read_split(folder: Path) -> list[tuple[str, str, str]]:
    files = [(folder / name).read_text(encoding="utf-8").splitlines() for name in ("seq.in", "seq.out", "label")]
    return list(zip(*files))


def convert(source: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    train = read_split(source / "train")
    intents = sorted({intent for _, _, intent in train})
    slots = ["O"] + sorted({tag for _, tags, _ in train for tag in tags.split()} - {"O"})
    intent_map, slot_map = {n: i for i, n in enumerate(intents)}, {n: i for i, n in enumerate(slots)}
    (out / "intent_label_map.json").write_text(json.dumps(intent_map, indent=1), encoding="utf-8")
    (out / "slot_label_map.json").write_text(json.dumps(slot_map, indent=1), encoding="utf-8")
    for split in ("train", "dev", "test"):
        rows = read_split(source / split)
        # PALM's classify reader takes integer ids; intents never seen in training (test only) are dropped
        # from the intent file and counted, so the two files stay honest about what was removed.
        kept = [(text, intent_map[intent]) for text, _, intent in rows if intent in intent_map]
        with open(out / f"{split}_intent.tsv", "w", encoding="utf-8") as handle:
            handle.write("label\ttext_a\n" + "".join(f"{label}\t{text}\n" for text, label in kept))
        with open(out / f"{split}_slot.tsv", "w", encoding="utf-8") as handle:
            handle.write("text_a\tlabel\n" + "".join(
                "\x02".join(text.split()) + "\t" + "\x02".join(tags.split()) + "\n" for text, tags, _ in rows))
        print(f"{split}: {len(rows)} utterances, {len(rows) - len(kept)} with an intent unseen in training")


if __name__ == "__main__":
    convert(Path(sys.argv[1]), Path(sys.argv[2]))
