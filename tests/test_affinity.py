"""Task affinity: the lookahead (TAG) and gradient-cosine estimates touch nothing of the run; grouping advice
searches every partition and writes configs `mtl train` accepts."""
import pytest
import torch
import yaml

from conftest import UTTERANCES, write_intent_slot
from mtl.errors import MtlError
from mtl.trainers.affinity import AffinityEstimator
from mtl.trainers.task_groups import best_grouping, group_configs, grouping_score, partitions
from tiny_runs import tiny_config, two_task_trainer


@pytest.fixture
def two_tasks(vocab_file, tmp_path):
    write_intent_slot(tmp_path / "train", UTTERANCES * 2)
    write_intent_slot(tmp_path / "dev", UTTERANCES)
    trainer = two_task_trainer(vocab_file, tmp_path, num_epochs=1)
    trainer.train(print_steps=0)  # a model and an optimizer state that have moved
    for group in trainer.optimizer.param_groups:
        group["lr"] = 1e-3  # the schedule ended at 0: a step of 0 would change no loss
    return trainer


def batches_of(trainer) -> dict:
    return {task.name: next(task.reader.iter_once()) for task in trainer.tasks}


def test_an_estimate_leaves_weights_gradients_and_random_streams_as_they_were(two_tasks):
    model = two_tasks.model
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    rng = torch.get_rng_state()
    optimizer_state = {id(p): {k: v.clone() for k, v in s.items()} for p, s in two_tasks.optimizer.state.items()}
    record = AffinityEstimator(every=1).estimate(model, batches_of(two_tasks), two_tasks.optimizer)
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(optimizer_state[id(p)][k], v) for p, s in two_tasks.optimizer.state.items()
               for k, v in s.items())
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))
    assert torch.equal(rng, torch.get_rng_state())
    assert set(record["tag"]) == {"slot", "intent"} and set(record["tag"]["slot"]) == {"slot", "intent"}


def test_a_step_on_a_tasks_own_gradient_lowers_its_loss(two_tasks):
    estimator = AffinityEstimator(every=1)
    for _ in range(2):
        estimator.estimate(two_tasks.model, batches_of(two_tasks), two_tasks.optimizer)
    assert len(estimator.history) == 2
    assert two_tasks.model.training  # dropout is off during an estimate only
    for task in ("slot", "intent"):
        assert estimator.tag[task][task] > 0  # the same network before and after, but for the step
        assert estimator.cosine[task][task] == pytest.approx(1.0, abs=1e-5)
    assert estimator.cosine["slot"]["intent"] == pytest.approx(estimator.cosine["intent"]["slot"])


def test_without_a_step_nothing_changes_though_the_model_has_dropout(two_tasks):
    for group in two_tasks.optimizer.param_groups:
        group["lr"] = 0.0
    record = AffinityEstimator(every=1, exact_every=1).estimate(two_tasks.model, batches_of(two_tasks),
                                                                 two_tasks.optimizer)
    assert all(z == 0.0 for row in record["tag_exact"].values() for z in row.values())  # the same masks, or none


def test_the_first_order_lookahead_agrees_with_the_exact_one_at_a_fine_tuning_step(two_tasks):
    for group in two_tasks.optimizer.param_groups:
        group["lr"] = 1e-4
    estimator = AffinityEstimator(every=1, exact_every=1)
    estimator.estimate(two_tasks.model, batches_of(two_tasks), two_tasks.optimizer)
    first, exact = estimator.tag, estimator.tag_exact
    for i in first:
        for j in first:
            assert first[i][j] == pytest.approx(exact[i][j], rel=0.05, abs=1e-6)
    assert first["slot"]["slot"] > 0 and first["intent"]["intent"] > 0


def test_the_lookahead_is_a_tasks_share_of_the_step_adam_would_take():
    from mtl.trainers.affinity import lookahead_steps
    weight = torch.nn.Parameter(torch.tensor([1.0, 1.0, 1.0]))
    adam = torch.optim.AdamW([weight], lr=0.1, betas=(0.9, 0.99), eps=1e-8)
    weight.grad = torch.tensor([2.0, 2.0, 2.0])
    adam.step()  # a second moment that has seen one gradient
    before = {k: v.clone() for k, v in adam.state[weight].items()}
    g = torch.tensor([[2.0, 0.2, -4.0], [0.0, 1.0, 0.0]])  # two tasks' gradients, one row each
    steps = lookahead_steps({"w": weight}, g, adam, lr=0.0)
    for row, task in zip(steps, g):
        second = (0.99 * before["exp_avg_sq"] + 0.01 * task * task) / (1 - 0.99 ** 2)
        assert torch.allclose(row, 0.1 * 0.1 * task / (second.sqrt() + 1e-8))  # (1 - beta1) of the step
    assert all(torch.equal(before[k], v) for k, v in adam.state[weight].items())  # read, never written
    sgd = torch.optim.SGD([weight], lr=0.5)
    assert torch.allclose(lookahead_steps({"w": weight}, g, sgd, lr=0.0), 0.5 * g)
    assert torch.allclose(lookahead_steps({"w": weight}, g, None, lr=0.01), 0.01 * g)


def test_the_token_embedding_table_is_left_out(two_tasks):
    from mtl.trainers.affinity import shared_parameters
    shared = shared_parameters(two_tasks.model)
    assert all(p is not two_tasks.model.backbone.word_embeddings for p in shared.values())
    assert any("position_embeddings" in name for name in shared) and any("layer.0." in name for name in shared)


def test_probe_batches_draw_every_example_in_an_order_of_their_own(two_tasks):
    from mtl.trainers.loop import probe_batches
    reader = two_tasks.tasks[0].reader
    rng, position = torch.get_rng_state(), (reader.epoch, reader.position)
    stream = probe_batches(reader, size=3)
    count = -(-reader.num_examples // 3)
    batches = [next(stream) for _ in range(count + 1)]
    assert [len(b["input_ids"]) for b in batches[:count]] == [3] * (count - 1) + [reader.num_examples - 3 * (count - 1)]
    assert torch.equal(batches[count]["input_ids"], batches[0]["input_ids"])  # then over again
    assert torch.equal(rng, torch.get_rng_state()) and (reader.epoch, reader.position) == position
    with pytest.raises(ValueError, match="probe_size"):
        AffinityEstimator(every=5, probe_size=0)
    with pytest.raises(ValueError, match="multiple of every=5"):
        AffinityEstimator(every=5, exact_every=7)


def test_partitions_are_all_there_once():
    tasks = ["a", "b", "c", "d"]
    every = [sorted(sorted(g) for g in p) for p in partitions(tasks, 4)]
    assert len(every) == 15 and len({str(p) for p in every}) == 15  # Bell(4)
    assert len(list(partitions(tasks, 2))) == 8  # S(4,1) + S(4,2)


def test_best_grouping_keeps_helpers_together_and_a_hurt_task_apart():
    z = {"a": {"a": 0.1, "b": 0.3, "c": -0.2}, "b": {"a": 0.2, "b": 0.1, "c": -0.3},
         "c": {"a": 0.0, "b": -0.1, "c": 0.1}}
    groups, score = best_grouping(z, max_groups=3)
    assert sorted(sorted(g) for g in groups) == [["a", "b"], ["c"]]
    assert score == pytest.approx(grouping_score([["a", "b"], ["c"]], z)) == pytest.approx(0.5)
    together, _ = best_grouping(z, max_groups=1)
    assert together == [["a", "b", "c"]]
    with pytest.raises(MtlError, match="at most"):
        best_grouping({str(i): {str(j): 0.0 for j in range(11)} for i in range(11)}, 2)


def test_group_configs_are_runs_mtl_train_accepts(vocab_file, tmp_path):
    from mtl.config import validate_config
    write_intent_slot(tmp_path / "train", UTTERANCES)
    write_intent_slot(tmp_path / "dev", UTTERANCES)
    config = tiny_config(vocab_file, tmp_path, str(tmp_path / "run"))
    second = dict(config["tasks"][0], name="other")
    config["tasks"].append(second)
    config["trainer"]["sampling_reference"] = "other"
    paths = group_configs(config, [["joint"], ["other"]], tmp_path / "groups")
    first = yaml.safe_load(paths[0].read_text())
    assert [t["name"] for t in first["tasks"]] == ["joint"] and "sampling_reference" not in first["trainer"]
    assert first["saver"]["save_path"].endswith("run-group1")
    for path in paths:
        validate_config(yaml.safe_load(path.read_text()), tmp_path)


def test_the_matrix_prints_as_a_table_and_draws_as_a_heat_map(tmp_path):
    from mtl.plots import heatmap
    from mtl.trainers.task_groups import format_matrix
    z = {"intent": {"intent": 0.02, "slots": -0.01}, "slots": {"intent": 0.005, "slots": 0.03}}
    table = format_matrix(z, "lookahead affinity")
    assert "-> slots" in table and "-0.0100" in table.splitlines()[2]
    png = heatmap(z, tmp_path / "affinity.png", "lookahead affinity")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000


def test_a_run_with_the_estimate_on_ends_with_the_weights_of_one_with_it_off(vocab_file, tmp_path):
    write_intent_slot(tmp_path / "train", UTTERANCES * 2)
    write_intent_slot(tmp_path / "dev", UTTERANCES)
    runs = {}
    for every in (None, 3):
        trainer = two_task_trainer(vocab_file, tmp_path, num_epochs=2, affinity_every=every)
        trainer.set_saver(tmp_path / f"run-{every}")
        result = trainer.train(print_steps=0)
        runs[every] = (trainer, result)
    plain, estimated = runs[None][0], runs[3][0]
    assert all(torch.equal(v, estimated.model.state_dict()[k]) for k, v in plain.model.state_dict().items())
    records = [r for r in map(yaml.safe_load, (tmp_path / "run-3" / "metrics.jsonl").read_text().splitlines())
               if "affinity" in r]
    assert len(records) == plain.global_step // 3 == len(estimated.affinity.history)
    assert set(records[0]["affinity"]["tag"]) == {"slot", "intent"}
    assert runs[3][1]["affinity_seconds"] > 0 and "affinity_seconds" not in runs[None][1]


def test_mtl_affinity_trains_then_prints_the_matrices_and_writes_the_advice(vocab_file, tmp_path, caplog):
    import logging
    from mtl.cli import main
    from tiny_runs import write_yaml
    write_intent_slot(tmp_path / "train", UTTERANCES * 2)
    write_intent_slot(tmp_path / "dev", UTTERANCES)
    config = tiny_config(vocab_file, tmp_path, str(tmp_path / "run"))
    config["tasks"].append(dict(config["tasks"][0], name="other"))
    path = write_yaml(tmp_path / "run.yaml", config)
    with caplog.at_level(logging.INFO, logger="mtl"):
        assert main(["affinity", str(path), "--every", "2", "--groups", "2", "--threads", "1",
                     "--exact-every", "4"]) == 0
    out = tmp_path / "run" / "affinity"
    report = yaml.safe_load((out / "affinity.json").read_text())
    assert set(report["tag"]) == {"joint", "other"} and report["estimates"] >= 2
    assert set(report["tag_exact"]) == {"joint", "other"}
    assert all((out / f"{kind}.png").is_file() for kind in ("tag", "tag_exact", "grad_cosine"))
    assert [p for p in report["configs"]] == [f"group{i}.yaml" for i in range(1, len(report["groups"]) + 1)]
    assert "suggested grouping" in caplog.text and "lookahead affinity" in caplog.text
    assert (tmp_path / "run" / "final").is_dir()  # an ordinary run besides

    single = write_yaml(tmp_path / "one.yaml", tiny_config(vocab_file, tmp_path, str(tmp_path / "one")))
    assert main(["affinity", str(single)]) == 2
