"""mtl's defaults vs PaddlePALM's choices on ATIS joint training, in one process run, alternating rounds.

PALM's choices: every batch padded to max_seqlen (128), batches in plain shuffled order, fp32, Adam without
fused kernels. mtl's defaults: padding to each batch's longest, length-grouped batches, precision 'auto'
(bf16 autocast on CPUs with fast bf16), fused AdamW. Same model (MiniLM), heads, batch 32, lr, schedule.
Both sides train through `MultiHeadTrainer.train(max_steps=...)`; round 0 of each side is warm-up.

    python benchmarks/vs_palm_style.py --rounds 6 --palm-steps 4 --mtl-steps 20 --threads 1
"""
import argparse
import statistics
import time

import torch

import mtl
from common import DATA, load_average, minilm_dir, parse_speed_args, write_result
from overhead import MODEL, TokenCount, atis_reader, joint_trainer


class FixedPadReader(mtl.reader.IntentSlotReader):
    """PALM's batches: every token field padded to max_seqlen, not to the batch's longest."""

    def collate(self, features: list) -> dict:
        batch = super().collate(features)
        width = self.max_seqlen
        for name, value in batch.items():
            if isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape[1] < width:
                pad = 0 if name == "attention_mask" else self._pad_value(name)
                extra = torch.full((value.shape[0], width - value.shape[1]), pad, dtype=value.dtype)
                batch[name] = torch.cat([value, extra], dim=1)
        return batch


def palm_reader(seed: int) -> FixedPadReader:
    reader = FixedPadReader(minilm_dir(), 128, seed=seed)
    return reader.load_data(DATA / "atis" / "train", batch_size=32, group_by_length=False)


def run_round(trainer: mtl.MultiHeadTrainer, count: TokenCount, steps: int) -> dict:
    before = count.snapshot()
    started = time.perf_counter()
    trainer.train(print_steps=0, max_steps=trainer.global_step + steps)
    seconds = time.perf_counter() - started
    real, padded, examples = (a - b for a, b in zip(count.snapshot(), before))
    return {"examples_per_s": examples / seconds, "real_tokens_per_s": real / seconds,
            "padded_tokens_per_s": padded / seconds, "seconds": seconds, "examples": examples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="timed rounds per side, after one warm-up round")
    parser.add_argument("--palm-steps", type=int, default=4)
    parser.add_argument("--mtl-steps", type=int, default=20)
    args = parse_speed_args(parser)
    counts = {"palm_style": TokenCount(), "mtl": TokenCount()}
    sides = {"palm_style": joint_trainer(counts["palm_style"].wrap(palm_reader(args.seed)), args.seed, 10,
                                         precision="fp32", adam=mtl.optimizer.Adam(lr=1e-4, fused=False)),
             "mtl": joint_trainer(counts["mtl"].wrap(atis_reader(args.seed, 32)), args.seed, 10)}
    steps = {"palm_style": args.palm_steps, "mtl": args.mtl_steps}
    rounds = {name: [] for name in sides}
    for r in range(args.rounds + 1):
        for name, trainer in sides.items():
            result = run_round(trainer, counts[name], steps[name])
            if r > 0:
                rounds[name].append(result)
            print(f"round {r}{' (warm-up)' if r == 0 else ''} {name:<11} {result['examples_per_s']:8.2f} ex/s "
                  f"{result['real_tokens_per_s']:9.1f} real tok/s {result['padded_tokens_per_s']:9.1f} padded tok/s",
                  flush=True)
    keys = ("examples_per_s", "real_tokens_per_s", "padded_tokens_per_s")
    median = {name: {k: statistics.median(x[k] for x in rs) for k in keys} for name, rs in rounds.items()}
    paired = [m["examples_per_s"] / p["examples_per_s"] for p, m in zip(rounds["palm_style"], rounds["mtl"])]
    ratio = statistics.median(paired)
    print(f"{'side':<12}{'examples/s':>12}{'real tok/s':>12}{'padded tok/s':>14}")
    for name, m in median.items():
        print(f"{name:<12}{m['examples_per_s']:>12.2f}{m['real_tokens_per_s']:>12.1f}{m['padded_tokens_per_s']:>14.1f}")
    print(f"ratio mtl / palm-style examples/s: {ratio:.2f} (median of paired rounds; goal >= 6)")
    path = write_result("vs_palm_style", {
        "model": MODEL, "data": "atis train, joint intent + slots, batch 32",
        "settings": {**vars(args), "palm_style": "fixed padding to 128, shuffled order, precision fp32, "
                     "Adam(fused=False)", "mtl": f"defaults: precision {sides['mtl'].precision}, fused AdamW, "
                     "padding to the batch's longest, group_by_length"},
        "metrics": median["mtl"], "baseline": median["palm_style"],
        "per_round": rounds,
        "ratio": {"examples_per_s_median_of_paired_rounds": ratio,
                  "examples_per_s_of_medians": median["mtl"]["examples_per_s"] / median["palm_style"]["examples_per_s"]},
        "goal": {"ratio": 6.0, "met": ratio >= 6.0}, "load_average": load_average(),
        "notes": "rounds alternate palm-style / mtl; round 0 of each is warm-up and not counted; "
                 "real tokens are non-pad tokens; padded tokens are rows x padded width"})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
