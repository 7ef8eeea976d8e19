"""The Chinese pretraining corpus and the LCQMC splits, from ../shared/data (training texts only).

    python examples/chinese/make_corpus.py [--data DIR] [--out examples/chinese/outputs]

Writes, under --out:
  corpus.txt          one text per line: ChnSentiCorp train reviews, MSRA NER train sentences, CMRC2018 train
                      contexts, and the questions of LCQMC's training part (below); never a dev or test text
  lcqmc/train.tsv     LCQMC (PALM's `label<TAB>text_a<TAB>text_b`) has no train split here: its dev set is split
  lcqmc/dev.tsv       80/20 (seeded, by question pair) into train and dev; its test set stays the test set
  lcqmc/test.tsv
  msra/train.tsv      MSRA NER in PALM's sequence-labelling TSV (characters and tags \\x02-joined), its train
  msra/dev.tsv        split 90/10 (seeded) into train and dev; msra/test.tsv from its test file
  msra/test.tsv
  cmrc/train.json     CMRC 2018 in SQuAD form: its train set (an answer_start that misses its text moved to the
  cmrc/dev.json       nearest place the text occurs), its trial set as dev, its dev set as test (the three share
  cmrc/test.json      no context; a question with an empty text is dropped); cmrc/split.json counts them
  corpus.json         what went in: lines and characters per source
"""
import argparse
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent.parent / "shared" / "data"
SEED = 1


def chnsenticorp(data: Path) -> list[str]:
    lines = (data / "chnsenticorp" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t", 1)[1].strip() for line in lines if "\t" in line and line.split("\t", 1)[1].strip()]


def msra_sentences(path: Path) -> list[list[tuple[str, str]]]:
    """(character, tag) rows of each sentence of an MSRA BIO file (blank line between sentences)."""
    sentences, current = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if current:
                sentences.append(current)
            current = []
            continue
        char, tag = line.split("\t") if "\t" in line else line.split()
        current.append((char, tag))
    return sentences + ([current] if current else [])


def cmrc_contexts(data: Path) -> list[str]:
    root = json.loads((data / "cmrc2018" / "cmrc2018_train.json").read_text(encoding="utf-8"))
    seen, out = set(), []
    for article in root["data"]:
        for paragraph in article["paragraphs"]:
            context = " ".join(paragraph["context"].split())
            if context and context not in seen:
                seen.add(context)
                out.append(context)
    return out


def lcqmc_split(data: Path, out: Path) -> list[str]:
    """LCQMC dev split 80/20 into train/dev, test kept; returns the training questions (for the corpus)."""
    rows = [line.split("\t") for line in (data / "lcqmc" / "dev.txt").read_text(encoding="utf-8").splitlines()
            if line.count("\t") == 2]
    random.Random(SEED).shuffle(rows)
    cut = int(0.8 * len(rows))
    test = [line.split("\t") for line in (data / "lcqmc" / "test.txt").read_text(encoding="utf-8").splitlines()
            if line.count("\t") == 2]
    for name, part in (("train", rows[:cut]), ("dev", rows[cut:]), ("test", test)):
        write_tsv(out / "lcqmc" / f"{name}.tsv", ["label\ttext_a\ttext_b"] + [f"{r[2]}\t{r[0]}\t{r[1]}" for r in part])
    return [q for r in rows[:cut] for q in r[:2]]


def msra_split(data: Path, out: Path) -> list[str]:
    """MSRA train split 90/10 into train/dev, test kept, as PALM's TSV; returns the training sentences."""
    train = msra_sentences(data / "msra_ner" / "msra_train_bio")
    random.Random(SEED).shuffle(train)
    cut = int(0.9 * len(train))
    test = msra_sentences(data / "msra_ner" / "msra_test_bio")
    for name, part in (("train", train[:cut]), ("dev", train[cut:]), ("test", test)):
        write_tsv(out / "msra" / f"{name}.tsv", ["text_a\tlabel"] + [
            "\x02".join(c for c, _ in s) + "\t" + "\x02".join(t for _, t in s) for s in part])
    return ["".join(c for c, _ in s) for s in train[:cut]]


def cmrc_split(data: Path, out: Path) -> dict:
    """CMRC 2018 train (answers placed where their text is) / trial as dev / dev as test, as SQuAD JSON."""
    counts = {}
    for name, source in (("train", "train"), ("dev", "trial"), ("test", "dev")):
        root = json.loads((data / "cmrc2018" / f"cmrc2018_{source}.json").read_text(encoding="utf-8"))
        paragraphs = [paragraph for article in root["data"] for paragraph in article["paragraphs"]]
        moved = sum(place_answers(paragraph) for paragraph in paragraphs) if name == "train" else 0
        dropped = sum(drop_empty_questions(paragraph) for paragraph in paragraphs)
        (out / "cmrc").mkdir(parents=True, exist_ok=True)
        (out / "cmrc" / f"{name}.json").write_text(json.dumps(root, ensure_ascii=False), encoding="utf-8")
        counts[name] = {"from": f"cmrc2018_{source}.json", "answer_starts_moved": moved,
                        "empty_questions_dropped": dropped, "questions": sum(len(p["qas"]) for p in paragraphs)}
    (out / "cmrc" / "split.json").write_text(json.dumps(counts, indent=1), encoding="utf-8")
    return counts


def place_answers(paragraph: dict) -> int:
    """Moves each answer_start that misses its text to the text's nearest occurrence; returns how many moved.
    (CMRC 2018's train set has a few off by a character; a training label must point at its text.)"""
    context, moved = paragraph["context"], 0
    for qa in paragraph["qas"]:
        for answer in qa["answers"]:
            text, start = answer["text"], answer["answer_start"]
            if context[start:start + len(text)] == text:
                continue
            places = [i for i in range(len(context)) if context.startswith(text, i)]
            if not places:
                raise ValueError(f"CMRC 2018 question {qa['id']}: the answer {text!r} is not in its context")
            answer["answer_start"], moved = min(places, key=lambda i: abs(i - start)), moved + 1
    return moved


def drop_empty_questions(paragraph: dict) -> int:
    """Removes the questions whose text is empty (two in CMRC 2018's trial set); returns how many."""
    kept = [qa for qa in paragraph["qas"] if qa["question"].strip()]
    dropped, paragraph["qas"] = len(paragraph["qas"]) - len(kept), kept
    return dropped


def write_tsv(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=HERE / "outputs")
    args = parser.parse_args()
    sources = {"chnsenticorp_train": chnsenticorp(args.data), "msra_ner_train": msra_split(args.data, args.out),
               "cmrc2018_train_contexts": cmrc_contexts(args.data),
               "lcqmc_train_questions": lcqmc_split(args.data, args.out)}
    cmrc_split(args.data, args.out)
    texts = [" ".join(text.split()) for part in sources.values() for text in part]
    write_tsv(args.out / "corpus.txt", [t for t in texts if t])
    summary = {name: {"lines": len(part), "characters": sum(len(t) for t in part)} for name, part in sources.items()}
    summary["total"] = {"lines": len(texts), "characters": sum(len(t) for t in texts)}
    (args.out / "corpus.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False), encoding="utf-8")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
