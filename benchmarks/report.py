"""Print the README's results table (markdown) from benchmarks/results/{atis,snips}_joint.json.

    python benchmarks/report.py
"""
import json

from common import RESULTS

KEYS = ("intent.accuracy", "slots.f1", "frame_accuracy")


def row(label: str, mean: dict, std: dict | None) -> str:
    cells = [f"{mean[k]:.2f} ± {std[k]:.2f}" if std else f"{mean[k]:.2f}" for k in KEYS]
    return f"| {label} | " + " | ".join(cells) + " |"


def main() -> None:
    print("| data / model | intent acc | slot F1 | sentence acc |\n|---|---|---|---|")
    for name in ("atis", "snips"):
        path = RESULTS / f"{name}_joint.json"
        if not path.is_file():
            continue
        result = json.loads(path.read_text(encoding="utf-8"))
        epochs, seeds = result["settings"]["epochs"], len(result["seeds"])
        single = result["baseline"]["single_task"]
        print(row(f"{name.upper()}: mtl joint, MiniLM, {epochs:g} epochs, {seeds} seeds", result["metrics"],
                  result["std"]))
        print(row(f"{name.upper()}: two single-task MiniLM models, same budget", single["mean"], single["std"]))
        print(row(f"{name.upper()}: JointBERT, BERT-base (published)",
                  result["baseline"]["published_jointbert_bert_base"], None))


if __name__ == "__main__":
    main()
