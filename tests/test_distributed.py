"""torch.distributed: 2 CPU processes (gloo) under torchrun train exactly what one process trains with the same
global batch, rank 0 alone writes, distributed evaluation equals single-process evaluation on a data set whose
size is not a multiple of the world size, a resumed 2-process run ends where an uninterrupted one does, DDP
searches for unused parameters only in runs whose steps leave some out, and learnt loss weights train as in
one process. The 2-process runs live in tests/ddp_child.py, launched once for the module."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mtl
from mtl import distributed
from conftest import UTTERANCES, write_intent_slot
from ddp_child import build, solo_trainer
from mtl.components.readers.batch_drawing import shard_bounds
from mtl.trainers.batches import split_rows
from tiny_runs import same_records

CHILD = Path(__file__).resolve().parent / "ddp_child.py"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """21 training utterances (batches of 5 end on 1 example, of 7 on 7) and 13 dev utterances."""
    root = tmp_path_factory.mktemp("ddp-data")
    write_intent_slot(root / "train", UTTERANCES + UTTERANCES[:9])
    write_intent_slot(root / "dev", UTTERANCES + UTTERANCES[:1])
    return root


@pytest.fixture(scope="module")
def launched(vocab_file: Path, data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp-out")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(CHILD), str(vocab_file), str(data), str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (out / "output.txt").write_text(done.stdout + done.stderr, encoding="utf-8")
    return out


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def test_two_processes_train_the_single_process_weights_and_only_rank_0_writes(launched, vocab_file, data):
    reports = [json.loads((launched / f"plain-rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in reports] == [2, 2]
    single = build(vocab_file, data)  # one process, no accumulation: the same global batches of 5 and 7
    result = single.train(print_steps=0)
    assert reports[0]["steps"] == result["steps"] == single.total_steps > 8
    ours = weights(launched / "plain-rank0.safetensors")
    assert all(torch.equal(ours[k], v) for k, v in weights(launched / "plain-rank1.safetensors").items())
    reference = single.model.state_dict()
    assert ours.keys() == reference.keys()
    initial = build(vocab_file, data).build_forward().state_dict()
    moved = max(float((reference[k] - initial[k]).abs().max()) for k in ours)
    assert moved > 1e-3  # training changed the weights, so matching them means something
    gaps = {k: float((ours[k] - reference[k]).abs().max()) for k in ours}
    assert max(gaps.values()) < 1e-5, sorted(gaps.items(), key=lambda kv: -kv[1])[:3]
    # one checkpoint set, written by rank 0 alone; one log
    assert reports[1]["writes"] == [] and len(reports[0]["writes"]) > 4
    names = {p.name for p in (launched / "plain").iterdir()}
    steps = {f"step-{s}" for s in range(3, single.total_steps + 1, 3)[-3:]}  # the last 3 kept
    assert names == {"best", "best-joint", "best-tagger", "final", "metrics.jsonl", "tensorboard"} | steps
    assert "NaN" in reports[0]["refused"] and "rank 0 could not save" in reports[1]["refused"]
    assert not (launched / "refused" / "model").exists()
    log = [json.loads(line) for line in (launched / "plain" / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in log].count("end") == 1
    evaluated = [s for s in range(1, single.total_steps + 1) if s % 4 == 0 or s == single.total_steps]
    assert [r["step"] for r in log if r["kind"] == "eval"] == evaluated


def test_a_lone_trainer_trains_on_two_processes_as_on_one(launched, vocab_file, data):
    single = solo_trainer(vocab_file, data, grad_accum_steps=1)
    single.train(print_steps=0)
    reference = single.solo.model.state_dict()
    for rank in (0, 1):
        ours = weights(launched / f"solo-rank{rank}.safetensors")
        assert max(float((ours[k] - reference[k]).abs().max()) for k in reference) < 1e-5


def test_ddp_searches_for_unused_parameters_only_where_a_step_skips_some(launched, vocab_file, data):
    """Two tasks: each step leaves the other task's head without a gradient, so DDP must search every step.
    One task: every step trains the same parameters, learnt once (static_graph), with accumulation too; with
    every parameter used, PyTorch's warning that the search found nothing never comes."""
    chosen = json.loads((launched / "plain-rank0.json").read_text())["ddp"]
    searching = {"static_graph": False, "find_unused_parameters": True}
    static = {"static_graph": True, "find_unused_parameters": False}
    assert chosen == {"plain": searching, "balanced": searching, "solo": static, "pooled": static,
                      "adapters": searching}
    assert "find_unused_parameters" not in (launched / "output.txt").read_text(encoding="utf-8")
    single = solo_trainer(vocab_file, data, sentence_vector="pooled_output", grad_accum_steps=1)
    single.train(print_steps=0)
    reference = single.solo.model.state_dict()
    for rank in (0, 1):
        ours = weights(launched / f"pooled-rank{rank}.safetensors")
        assert max(float((ours[k] - reference[k]).abs().max()) for k in reference) < 1e-5


def test_a_distilled_student_trains_on_two_processes_as_on_one(launched, vocab_file, data, tmp_path):
    from mtl.distill import Teacher, distill_into
    single = build(vocab_file, data)
    teacher = Teacher(launched / "plain" / "final", task="joint", cache_dir=tmp_path, precision="fp32")
    distill_into(single, {"joint": teacher})
    single.train(print_steps=0)
    reference = single.model.state_dict()
    assert len(list((launched / "targets").iterdir())) == 1  # both ranks' targets, one cache entry
    for rank in (0, 1):
        ours = weights(launched / f"student-rank{rank}.safetensors")
        assert max(float((ours[k] - reference[k]).abs().max()) for k in reference) < 1e-5


def test_adapter_tasks_train_on_two_processes_as_on_one(launched, vocab_file, data):
    """Each task's step trains its own LoRA adapter (and head) over the frozen encoder."""
    initial = build(vocab_file, data, adapters=True).build_forward().state_dict()
    single = build(vocab_file, data, adapters=True, lr=1e-2)
    single.train(print_steps=0)
    reference = single.model.state_dict()
    assert any(".lora_B.tagger." in k and float(reference[k].abs().max()) > 1e-4 for k in reference)
    assert all(torch.equal(reference[k], initial[k]) for k in reference if "base_layer" in k)  # frozen
    for rank in (0, 1):
        ours = weights(launched / f"adapters-rank{rank}.safetensors")
        assert ours.keys() == reference.keys()
        assert max(float((ours[k] - reference[k]).abs().max()) for k in reference) < 1e-5


def test_learnt_loss_weights_train_on_two_processes_as_on_one(launched, vocab_file, data):
    """Uncertainty weighting's log-variances are used after the forward; DDP once failed on them ("marked
    ready twice"); now the step averages their gradients itself."""
    single = build(vocab_file, data, balancer=mtl.balancer.UncertaintyWeighting())
    single.train(print_steps=0)
    reference = {k: v for k, v in single.model.state_dict().items() if isinstance(v, torch.Tensor)}
    assert float(reference["balancer.log_vars"].abs().max()) > 1e-3  # they moved
    for rank in (0, 1):
        ours = weights(launched / f"balanced-rank{rank}.safetensors")
        assert ours.keys() == reference.keys()
        assert max(float((ours[k] - reference[k]).abs().max()) for k in reference) < 1e-5


def test_ddp_options_follow_what_a_step_trains(vocab_file, data):
    class Other(torch.nn.Module):
        pass
    assert distributed.ddp_options(Other()) == {"find_unused_parameters": True}
    two_tasks = build(vocab_file, data).build_forward()
    assert distributed.ddp_options(two_tasks) == {"find_unused_parameters": True}
    shared = build(vocab_file, data).build_forward()
    shared.heads["tagger"] = shared.heads["joint"]  # tasks that share their heads train the same set
    assert distributed.ddp_options(shared) == {"static_graph": True}
    shared.balancer = mtl.balancer.PCGrad()  # its step averages gradients itself, under no_sync
    assert distributed.ddp_options(shared) == {}


def test_distributed_evaluation_equals_single_process_evaluation(launched, vocab_file, data):
    reports = [json.loads((launched / f"plain-rank{r}.json").read_text()) for r in (0, 1)]
    assert reports[0]["metrics"] == reports[1]["metrics"]  # every rank scores the gathered records
    single = build(vocab_file, data)
    single.load_checkpoint(launched / "plain" / "final")
    assert reports[0]["metrics"] == single.evaluate()  # exactly, on 13 dev examples shared 7 + 6
    records = reports[0]["records"]
    assert [r["text"] for r in records] == [u[0] for u in UTTERANCES + UTTERANCES[:1]]  # each once, in order
    assert same_records(records, single.predict("joint", single.tasks[0].dev_reader))


def test_a_resumed_two_process_run_ends_with_the_uninterrupted_weights(launched):
    for rank in (0, 1):
        whole = weights(launched / f"whole-rank{rank}.safetensors")
        resumed = weights(launched / f"resumed-rank{rank}.safetensors")
        different = [k for k in whole if not torch.equal(whole[k], resumed[k])]
        assert not different, different


def test_gradient_accumulation_in_one_process_matches_whole_batches(vocab_file, data):
    whole, accumulated = build(vocab_file, data), build(vocab_file, data, grad_accum_steps=3)
    whole.train(print_steps=0, max_steps=6)
    accumulated.train(print_steps=0, max_steps=6)
    a, b = whole.model.state_dict(), accumulated.model.state_dict()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5


def test_shares_partition_every_global_batch(vocab_file, data):
    def reader() -> "mtl.reader.IntentSlotReader":
        return mtl.reader.IntentSlotReader(vocab_file, 32, seed=3).load_data(data / "train", num_epochs=1, batch_size=5)
    whole = [b["meta"] for b in reader().batches()]
    ranks = []
    for rank in (0, 1):  # each process has its own reader, drawn alike
        own = reader()
        ranks.append(list(own.sharded_batches(rank, 2, 2)))
        assert (own.epoch, own.position) == (1, 0)
    assert len(ranks[0]) == len(ranks[1]) == len(whole) == 5
    for index, metas in enumerate(whole):
        shares = [[m for part in ranks[r][index] if part.real for m in part.batch["meta"]] for r in (0, 1)]
        assert shares[0] + shares[1] == metas and 0 <= len(shares[0]) - len(shares[1]) <= 1
        for r in (0, 1):  # each share cut into at most 2 micro-batches of sizes that differ by at most one
            sizes = [len(part.batch["meta"]) for part in ranks[r][index] if part.real]
            assert len(sizes) <= 2 and max(sizes, default=0) - min(sizes, default=0) <= 1
    single = [len(metas) for metas in whole].index(1)  # 21 = 4 x 5 + 1
    assert [p.real for p in ranks[1][single]] == [False]  # rank 1 runs a stand-in (weight 0)
    assert ranks[1][single][0].batch["meta"] == whole[single]
    assert [shard_bounds(13, i, 2) for i in (0, 1)] == [(0, 7), (7, 13)]
    assert [reader().shard(i, 3).num_examples for i in range(3)] == [7, 7, 7]
    batch = reader().collate(reader().features[:5])
    rows = split_rows(batch, 1, 2, 2)  # rows 3 and 4 of 5, one per micro-batch
    assert [len(p.batch["meta"]) for p in rows] == [1, 1]
    assert torch.equal(rows[1].batch["input_ids"][0], batch["input_ids"][4])
