"""Task samplers (pure, seeded) and PALM's budgets / stop rule."""
from collections import Counter

import numpy as np
import pytest
import torch

import mtl
from conftest import UTTERANCES, tiny_bert, write_classify_tsv, write_intent_slot
from mtl.trainers.sampling import (AnnealedSampler, MixRatioSampler, ProportionalSampler, TemperatureSampler,
                                   UniformSampler, plan_total_steps)


def draws(sampler, n: int, start: int = 0) -> list[int]:
    return [sampler.draw(step) for step in range(start, start + n)]


@pytest.fixture
def global_rng_restored():
    """Tests here reseed numpy's and torch's global generators; put them back afterwards."""
    state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        yield
    np.random.set_state(state)


# ---- MixRatioSampler ---------------------------------------------------------------------------------------
def test_same_seed_same_sequence_different_seed_different():
    assert draws(MixRatioSampler([1.0, 0.5, 2.0], seed=3), 300) == draws(MixRatioSampler([1.0, 0.5, 2.0], seed=3), 300)
    assert draws(MixRatioSampler([1.0, 0.5, 2.0], seed=3), 300) != draws(MixRatioSampler([1.0, 0.5, 2.0], seed=4), 300)


def test_empirical_frequencies_follow_mix_ratios():
    ratios, n = [1.0, 0.5, 2.5], 20000
    counts = Counter(draws(MixRatioSampler(ratios, seed=11), n))
    for index, ratio in enumerate(ratios):
        # binomial std <= 0.0035 at n=20000: 0.015 is more than 4 sigma
        assert abs(counts[index] / n - ratio / sum(ratios)) < 0.015


def test_independent_of_global_rng_state(global_rng_restored):
    np.random.seed(1)
    torch.manual_seed(1)
    first = draws(MixRatioSampler([1.0, 1.0, 1.0], seed=5), 200)
    np.random.seed(2)
    torch.manual_seed(2)
    expected_global = np.random.random()
    np.random.seed(2)
    second = draws(MixRatioSampler([1.0, 1.0, 1.0], seed=5), 200)
    assert first == second
    assert np.random.random() == expected_global  # drawing tasks consumed nothing from the global generator


def test_state_dict_resumes_the_sequence():
    sampler = MixRatioSampler([1.0, 2.0], seed=9)
    draws(sampler, 17)
    state = sampler.state_dict()
    rest = draws(sampler, 50, start=17)
    resumed = MixRatioSampler([1.0, 2.0], seed=0)
    resumed.load_state_dict(state)
    assert draws(resumed, 50, start=17) == rest


def test_invalid_weights_rejected():
    with pytest.raises(ValueError):
        MixRatioSampler([0.0, 0.0])
    with pytest.raises(ValueError):
        MixRatioSampler([1.0, -0.5])


# ---- the other samplers -------------------------------------------------------------------------------------
def assert_distribution(probs) -> np.ndarray:
    probs = np.asarray(probs)
    assert (probs >= 0).all() and probs.sum() == pytest.approx(1.0)
    return probs


def test_proportional_sampler():
    probs = assert_distribution(ProportionalSampler([10, 30, 60]).probabilities(0))
    assert probs == pytest.approx([0.1, 0.3, 0.6])


def test_temperature_sampler_lies_between_proportional_and_uniform():
    sizes = [10, 30, 60]
    proportional = ProportionalSampler(sizes).probabilities(0)
    assert TemperatureSampler(sizes, temperature=1.0).probabilities(0) == pytest.approx(proportional)
    warm = assert_distribution(TemperatureSampler(sizes, temperature=2.0).probabilities(0))
    hot = assert_distribution(TemperatureSampler(sizes, temperature=100.0).probabilities(0))
    assert warm[0] < warm[1] < warm[2]  # order of sizes kept
    assert warm[2] < proportional[2] and warm[0] > proportional[0]  # flatter than proportional
    assert hot[2] < warm[2] and hot == pytest.approx([1 / 3] * 3, abs=0.01)
    assert warm == pytest.approx(np.sqrt(sizes) / np.sqrt(sizes).sum())  # size ** (1/T), T=2


def test_uniform_sampler():
    assert assert_distribution(UniformSampler(4).probabilities(0)) == pytest.approx([0.25] * 4)


def test_annealed_sampler_goes_from_proportional_towards_uniform():
    sizes = [10, 30, 60]
    sampler = AnnealedSampler(sizes, total_steps=100)
    start = assert_distribution(sampler.probabilities(0))
    middle = assert_distribution(sampler.probabilities(50))
    end = assert_distribution(sampler.probabilities(100))
    assert start == pytest.approx([0.1, 0.3, 0.6])
    assert start[2] > middle[2] > end[2] > 1 / 3  # flattens monotonically, never past uniform
    assert end[0] < end[1] < end[2]
    assert sampler.probabilities(1000) == pytest.approx(end)  # constant after total_steps


# ---- plan_total_steps: PALM's stop rule -----------------------------------------------------------------------
def test_plan_stops_exactly_when_every_task_used_its_budget():
    budgets = [6, 3, 4]
    total = plan_total_steps(MixRatioSampler([1.0, 0.5, 0.8], seed=7), budgets, [False, False, False])
    sequence = draws(MixRatioSampler([1.0, 0.5, 0.8], seed=7), total)
    counts = Counter(sequence)
    assert all(counts[i] >= budget for i, budget in enumerate(budgets))
    before_last = Counter(sequence[:-1])
    last = sequence[-1]
    assert before_last[last] == budgets[last] - 1  # the last step finished the last task's budget
    assert any(before_last[i] < budget for i, budget in enumerate(budgets))


def test_plan_does_not_advance_the_sampler():
    sampler = MixRatioSampler([1.0, 1.0], seed=2)
    plan_total_steps(sampler, [5, 5], [False, False])
    assert draws(sampler, 30) == draws(MixRatioSampler([1.0, 1.0], seed=2), 30)


def test_aux_tasks_never_hold_training_open():
    sampler = MixRatioSampler([1.0, 1.0], seed=4)
    without_aux_budget = plan_total_steps(sampler, [6, 0], [False, False])
    assert plan_total_steps(sampler, [6, 10 ** 6], [False, True]) == without_aux_budget
    assert plan_total_steps(sampler, [6, 40], [False, False]) > without_aux_budget


def test_task_with_budget_but_zero_probability_is_an_error():
    with pytest.raises(ValueError, match=r"\[1\]"):
        plan_total_steps(MixRatioSampler([1.0, 0.0], seed=0), [2, 1], [False, False])
    # the same task as auxiliary holds nothing open
    assert plan_total_steps(MixRatioSampler([1.0, 0.0], seed=0), [2, 1], [False, True]) == 2


# ---- budgets in MultiHeadTrainer ------------------------------------------------------------------------------
def test_budgets_and_total_steps_in_multi_head_trainer(vocab_file, tmp_path, classify_rows):
    """Reference task 'slot': N=24 examples, batch 5 -> base 4; 2.5 epochs; mix 1.0 and 0.5."""
    slot_reader = mtl.reader.IntentSlotReader(vocab_file, 32).load_data(
        write_intent_slot(tmp_path / "slot", UTTERANCES * 2), batch_size=5)
    cls_reader = mtl.reader.ClassifyReader(vocab_file, 32).load_data(
        write_classify_tsv(tmp_path / "cls.tsv", classify_rows), batch_size=2)  # 12 // 2 = 6: a wrong base
    names = slot_reader.label_names
    slot = mtl.Trainer("slot", reader=slot_reader, mix_ratio=1.0,
                       head=mtl.head.SequenceLabel(len(names["slot_ids"]), 32, 0.0, label_field="slot_ids"))
    intent = mtl.Trainer("intent", reader=cls_reader, head=mtl.head.Classify(4, 32, 0.0), mix_ratio=0.5)
    epochs, seed = 2.5, 3
    mh = mtl.MultiHeadTrainer([intent, slot], backbone=tiny_bert(), num_epochs=epochs, sampling_reference="slot",
                              seed=seed, precision="fp32")
    mh.train(print_steps=0)
    base = 24 // 5
    assert slot.budget == int(epochs * 1.0 * base) == 10
    assert intent.budget == int(epochs * 0.5 * base) == 5
    expected_total = plan_total_steps(MixRatioSampler([0.5, 1.0], seed), [5, 10], [False, False])
    assert mh.global_step == mh.total_steps == expected_total
    assert slot.cur_train_step >= slot.budget and intent.cur_train_step >= intent.budget
    assert slot.cur_train_step + intent.cur_train_step == mh.global_step
