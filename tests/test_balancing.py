"""Loss balancers, each on its own (synthetic problems, hand computations) and inside the trainer (static
weights reach the gradients, micro-batches give the whole batch's update, state survives save -> resume)."""
import math

import pytest
import torch

import mtl
from conftest import joint_trainer
from mtl.trainers.balancing import DynamicWeightAverage, LossBalancer, PCGrad, UncertaintyWeighting
from mtl.config import build_run, load_config
from tiny_runs import tiny_config, two_task_trainer, write_yaml


def test_uncertainty_weights_converge_to_the_inverse_loss_scale():
    """With fixed losses L_k, 0.5 exp(-s_k) L_k + 0.5 s_k is minimal at s_k = log L_k (Kendall et al.)."""
    balancer = UncertaintyWeighting(["a.x", "a.y"])
    losses = {"a.x": torch.tensor(4.0), "a.y": torch.tensor(0.25)}
    optimizer = torch.optim.Adam(balancer.parameters(), lr=0.05)
    for _ in range(2000):
        weights = balancer.weights(list(losses))
        total = sum(weights[k] * v for k, v in losses.items()) + balancer.extra(list(losses))
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    assert balancer.log_vars.detach().tolist() == pytest.approx([math.log(4.0), math.log(0.25)], abs=1e-3)
    assert balancer.current_weights() == pytest.approx({"a.x": 0.5 / 4.0, "a.y": 0.5 / 0.25}, rel=1e-3)


def test_uncertainty_by_default_weights_every_loss_of_the_run_and_refuses_unknown_keys():
    balancer = UncertaintyWeighting()
    balancer.bind(["t.intent", "t.slots"], 10)
    assert balancer.keys == ["t.intent", "t.slots"] and balancer.log_vars.shape == (2,)
    with pytest.raises(ValueError, match="no loss named"):
        UncertaintyWeighting(["t.nope"]).bind(["t.intent"], 10)


def test_dwa_weights_match_a_hand_computation():
    balancer = DynamicWeightAverage(temperature=2.0, period=2)
    assert balancer.weights(["t.a", "t.b"]) == {"t.a": 1.0, "t.b": 1.0}  # the first two periods
    for a, b in [(4.0, 1.0), (2.0, 1.0), (2.0, 0.5), (2.0, 0.7)]:  # period means: (3, 1) then (2, 0.6)
        balancer.observe({"t.a": a, "t.b": b})
    r_a, r_b = 2.0 / 3.0, 0.6 / 1.0
    e_a, e_b = math.exp(r_a / 2.0), math.exp(r_b / 2.0)
    expected = {"t.a": 2 * e_a / (e_a + e_b), "t.b": 2 * e_b / (e_a + e_b)}
    assert balancer.weights(["t.a", "t.b"]) == pytest.approx(expected, rel=1e-12)
    assert balancer.extra(["t.a"]) == 0.0


def test_dwa_state_round_trips_through_state_dict():
    balancer = DynamicWeightAverage(period=2)
    for a in (3.0, 2.0, 1.5, 1.0, 0.9):
        balancer.observe({"t.a": a, "t.b": 1.0})
    copy = DynamicWeightAverage()
    copy.load_state_dict(balancer.state_dict())
    assert copy.period == 2 and copy.weights(["t.a", "t.b"]) == balancer.weights(["t.a", "t.b"])
    for other in (balancer, copy):
        other.observe({"t.a": 0.5, "t.b": 1.0})
    assert copy.weights(["t.a", "t.b"]) == balancer.weights(["t.a", "t.b"])


def test_pcgrad_projects_conflicting_gradients_and_leaves_agreeing_ones():
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])  # dot -1 < 0: conflict
    combined = PCGrad(seed=0).combine_gradients([g1, g2])
    p1 = g1 - (g1 @ g2) / (g2 @ g2) * g2  # [0.5, 0.5]
    p2 = g2 - (g2 @ g1) / (g1 @ g1) * g1  # [0, 1]
    assert torch.allclose(combined, p1 + p2)
    agreeing = [torch.tensor([1.0, 0.5]), torch.tensor([0.5, 1.0])]
    assert torch.allclose(PCGrad().combine_gradients(agreeing), agreeing[0] + agreeing[1])


def test_plain_balancer_is_a_sum():
    balancer = LossBalancer()
    assert balancer.weights(["a", "b"]) == {"a": 1.0, "b": 1.0} and balancer.extra(["a"]) == 0.0
    assert not list(balancer.parameters()) and balancer.current_weights() == {}


def _one_step_gradients(vocab_file, intent_slot_dir, slot_weight: float) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    trainer = joint_trainer(vocab_file, intent_slot_dir)
    trainer.tasks[0].heads["slots"].loss_weight = slot_weight
    captured = {}
    real_zero = torch.optim.AdamW.zero_grad

    def capture(self, set_to_none=True):
        for name, param in trainer.model.named_parameters():
            if param.grad is not None and name not in captured:
                captured[name] = param.grad.clone()
        real_zero(self, set_to_none)
    torch.optim.AdamW.zero_grad = capture
    try:
        trainer.build_backward(mtl.optimizer.Adam(lr=3e-3, max_grad_norm=None))
        trainer.train(print_steps=0, max_steps=1)
    finally:
        torch.optim.AdamW.zero_grad = real_zero
    return captured


def test_a_heads_loss_weight_scales_its_gradient(vocab_file, intent_slot_dir):
    """Dropout off and the same seed: the slot head's gradient doubles with loss_weight 2, the intent head's
    stays (to float noise)."""
    one, two = (_one_step_gradients(vocab_file, intent_slot_dir, w) for w in (1.0, 2.0))
    slot = "heads.joint.slots.classifier.weight"
    intent = "heads.joint.intent.classifier.weight"
    assert torch.allclose(two[slot], 2 * one[slot], atol=1e-6)
    assert torch.allclose(two[intent], one[intent], atol=1e-6)


def test_a_balancers_learnable_weights_train_without_weight_decay(vocab_file, intent_slot_dir):
    trainer = joint_trainer(vocab_file, intent_slot_dir, balancer=UncertaintyWeighting(), weight_decay=0.5)
    trainer.train(print_steps=0)
    log_vars = trainer.balancer.log_vars
    assert log_vars.shape == (2,) and bool((log_vars.detach() != 0).all())  # it learned
    groups = trainer.optimizer.param_groups
    own = [g for g in groups if any(p is log_vars for p in g["params"])]
    assert len(own) == 1 and own[0]["weight_decay"] == 0.0 and own[0]["params"] == [log_vars]
    assert own[0]["initial_lr"] == 0.01  # their own lr (the schedule scales it like the others)


def test_uncertainty_log_variances_at_the_models_lr_barely_move(vocab_file, intent_slot_dir):
    """Why they get their own lr: Adam moves a parameter about lr per step."""
    moved = {}
    for lr in (None, 0.01):
        trainer = joint_trainer(vocab_file, intent_slot_dir, lr=1e-4, balancer=UncertaintyWeighting(lr=lr))
        trainer.train(print_steps=0)
        moved[lr] = float(trainer.balancer.log_vars.detach().abs().max())
    assert moved[None] < 1e-3 < moved[0.01]


@pytest.mark.parametrize("make", [UncertaintyWeighting, lambda: DynamicWeightAverage(period=3), PCGrad],
                         ids=["uncertainty", "dwa", "pcgrad"])
def test_micro_batches_give_the_whole_batch_update(make, vocab_file, intent_slot_dir):
    """grad_accum_steps splits each batch; every balancer's update stays the whole batch's (dropout off)."""
    runs = []
    for accum in (1, 2):
        torch.manual_seed(0)
        trainer = joint_trainer(vocab_file, intent_slot_dir, balancer=make(), grad_accum_steps=accum)
        trainer.train(print_steps=0)
        runs.append(trainer.model.state_dict())
    for key, value in runs[0].items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            assert torch.allclose(value, runs[1][key], atol=2e-5), key


@pytest.mark.parametrize("make", [UncertaintyWeighting, lambda: DynamicWeightAverage(period=2), PCGrad],
                         ids=["uncertainty", "dwa", "pcgrad"])
def test_balancer_state_survives_save_and_resume_bit_for_bit(make, vocab_file, intent_slot_dir, tmp_path):
    full = two_task_trainer(vocab_file, intent_slot_dir, balancer=make())
    full.train(print_steps=0)
    first = two_task_trainer(vocab_file, intent_slot_dir, balancer=make())
    first.set_saver(tmp_path / "run", save_steps=5)
    first.train(print_steps=0, max_steps=7)
    resumed = two_task_trainer(vocab_file, intent_slot_dir, init_seed=3, balancer=make())
    resumed.set_saver(tmp_path / "run", save_steps=5)
    resumed.train(print_steps=0, resume_from=tmp_path / "run" / "step-7")
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
    assert full.balancer.current_weights() == resumed.balancer.current_weights()


def test_a_config_names_the_balancer_and_the_static_weights(vocab_file, intent_slot_dir, tmp_path):
    config = tiny_config(vocab_file, intent_slot_dir, save_path=str(tmp_path / "out"))
    config["trainer"]["balancer"] = {"_component_": "mtl.balancer.DynamicWeightAverage", "temperature": 1.5}
    config["tasks"][0]["loss_weight"] = 0.5
    config["tasks"][0]["heads"]["slots"]["loss_weight"] = 3.0
    run = build_run(load_config(write_yaml(tmp_path / "run.yaml", config)))
    task = run.trainer.tasks[0]
    assert isinstance(run.trainer.balancer, DynamicWeightAverage) and run.trainer.balancer.temperature == 1.5
    assert task.loss_weight == 0.5 and task.heads["slots"].loss_weight == 3.0
    run.trainer.train(**run.train_options, selector=run.selector)
    assert run.trainer.balancer.steps == run.trainer.global_step  # it saw every step


@pytest.mark.parametrize("make", [UncertaintyWeighting, lambda: DynamicWeightAverage(period=2), PCGrad],
                         ids=["uncertainty", "dwa", "pcgrad"])
def test_the_best_model_is_kept_and_restored_with_any_balancer(make, vocab_file, intent_slot_dir, tmp_path):
    """In memory (no saver) and on disk: a balancer's extra state (DWA's history) does not break best-of."""
    for saved in (False, True):
        trainer = joint_trainer(vocab_file, intent_slot_dir, balancer=make(), num_epochs=2)
        if saved:
            trainer.set_saver(tmp_path / f"run-{type(trainer.balancer).__name__}")
        trainer.train(print_steps=0, eval_steps=2)
        trainer.load_best()
        assert trainer.best_score > -math.inf
