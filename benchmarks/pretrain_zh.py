"""A small Chinese BERT pretrained here (examples/chinese/pretrain.yaml), in sittings: each invocation trains
at most `--max-steps` more steps from the last checkpoint, so a long run can be done in parts; when the run's
budget is used, the model is exported as a pretrained folder (mtl export --pretrained).

Corpus: examples/chinese/make_corpus.py (training texts of ChnSentiCorp, MSRA NER, CMRC2018, LCQMC's training
part; never a dev or test text); vocabulary: `mtl vocab` at the config's size. Writes results/pretrain_zh.json
(corpus size in characters, steps done, seconds per sitting, loss curve) after every sitting.

    python benchmarks/pretrain_zh.py --max-steps 3000        # again until it says the run is finished
"""
import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import torch

from common import RESULTS, command, write_result
from mtl.components.savers.checkpoint import latest_checkpoint
from mtl.components.savers.pretrained import export_masked_lm
from mtl.config import build_run, load_config
from mtl.serving.engine import folder_checksum
from mtl.vocabulary import train_wordpiece

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "chinese"
OUTPUTS = EXAMPLE / "outputs"
SITTINGS = RESULTS / "runs" / "pretrain_zh" / "sittings.json"
ENCODER = EXAMPLE / "zh-bert"  # git-ignored (26 MB): made again by this script where it is missing


def encoder_checksum() -> str | None:
    """The exported folder's checksum (weights, config and vocabulary; the one a server reports): each task run
    records it, so runs can be checked against the encoder that made them (the folder is made again where it is
    missing)."""
    return folder_checksum(ENCODER) if (ENCODER / "config.json").is_file() else None


def make_corpus() -> dict:
    """The corpus and the MSRA, LCQMC and CMRC splits (make_corpus.py, deterministic), made once (outputs/ is
    git-ignored)."""
    if not ((OUTPUTS / "corpus.json").is_file() and (OUTPUTS / "cmrc" / "split.json").is_file()):
        subprocess.run([sys.executable, str(EXAMPLE / "make_corpus.py")], check=True, stdout=subprocess.DEVNULL)
    return json.loads((OUTPUTS / "corpus.json").read_text(encoding="utf-8"))


def prepare(vocab_size: int) -> dict:
    """Corpus and vocabulary, made once."""
    corpus = make_corpus()
    if not (OUTPUTS / "vocab" / "tokenizer.json").is_file():
        train_wordpiece([OUTPUTS / "corpus.txt"], OUTPUTS / "vocab", vocab_size=vocab_size)
    return corpus


def sitting(max_steps: int) -> dict:
    """Train up to `max_steps` more steps from the latest checkpoint; export when the run is finished."""
    size = load_config(EXAMPLE / "pretrain.yaml", check_resources=False).backbone["config"]["vocab_size"]
    corpus = prepare(size)  # before the config is checked: it names the corpus and the vocabulary
    run = build_run(load_config(EXAMPLE / "pretrain.yaml"))
    resume_from = latest_checkpoint(run.save_path)
    done = 0
    if resume_from is not None:
        done = json.loads((resume_from / "trainer_state.json").read_text(encoding="utf-8"))["global_step"]
    started = time.perf_counter()
    result = run.trainer.train(print_steps=100, resume_from=resume_from, max_steps=done + max_steps)
    seconds = time.perf_counter() - started
    task = run.trainer.tasks[0]
    if result["finished"] and (result["steps"] > done or encoder_checksum() is None):
        export_masked_lm(run.trainer.backbone, task.heads["mlm"], task.reader.tokenizer, ENCODER)
    return {"command": command(), "from_step": done, "to_step": result["steps"], "total_steps": run.trainer.total_steps,
            "seconds": round(seconds, 1), "finished": result["finished"], "corpus": corpus,
            "loss_curve": loss_curve(run.save_path, done, result["steps"]),
            "threads": torch.get_num_threads(), "precision": run.trainer.precision}


def loss_curve(save_path: Path, after: int, upto: int, every: int = 500) -> dict[str, float]:
    """Mean MLM loss of the 100 steps before every `every`-th step of this sitting (from metrics.jsonl, which
    stays in the git-ignored run folder), so the curve is kept with the results."""
    records = [json.loads(line) for line in (save_path / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return {str(r["step"]): round(r["loss"]["mlm"], 4) for r in records
            if r.get("kind") == "train" and after < r["step"] <= upto and (r["step"] % every == 0 or r["step"] == upto)
            and r["loss"].get("mlm") is not None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=3000, help="steps in this sitting")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    sittings = json.loads(SITTINGS.read_text(encoding="utf-8")) if SITTINGS.is_file() else []
    this = sitting(args.max_steps)
    if this["from_step"] == 0:  # a run begun afresh: the earlier sittings belong to another run
        sittings = []
    if this["to_step"] > this["from_step"] or not sittings:
        sittings.append(this)
    SITTINGS.parent.mkdir(parents=True, exist_ok=True)
    SITTINGS.write_text(json.dumps(sittings, indent=1) + "\n", encoding="utf-8")
    last = sittings[-1]
    path = write_result("pretrain_zh", {
        "model": "BERT from config: 4 layers, hidden 256, 4 heads, intermediate 1024 (examples/chinese/pretrain.yaml)",
        "data": "examples/chinese/make_corpus.py: training texts only", "corpus": last["corpus"],
        "settings": {"config": "examples/chinese/pretrain.yaml", "threads": args.threads},
        "metrics": {"steps": last["to_step"], "total_steps": last["total_steps"], "finished": last["finished"],
                    "train_seconds": round(sum(s["seconds"] for s in sittings), 1)},
        "encoder_checksum": encoder_checksum() if last["finished"] else None,
        "sittings": sittings, "notes": ["loss per step: the run's metrics.jsonl and TensorBoard logs in "
                                        "examples/chinese/outputs/pretrain"]})
    print(f"steps {last['from_step']} -> {last['to_step']} of {last['total_steps']}"
          f"{' (finished, exported to ' + str(ENCODER) + ')' if last['finished'] else ''}; wrote {path}")


if __name__ == "__main__":
    main()
