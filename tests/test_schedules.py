"""Learning-rate schedules: PALM's triangular form, the linear-from-warmup variant, binding T to real steps."""
import pytest

import mtl
from conftest import joint_trainer
from mtl.lr_sched import (ConstantScheduler, CosineScheduler, LinearWarmupDecay, TriangularSchedualer,
                          TriangularScheduler)


def test_palm_spelling_is_an_alias():
    assert TriangularSchedualer is TriangularScheduler


@pytest.mark.parametrize("step, factor", [
    (0, 0.0), (5, 0.5), (9, 0.9),       # warmup: t / W
    (10, 0.9), (50, 0.5), (90, 0.1),    # decay counted from step 0: 1 - t / T (not from the peak)
    (100, 0.0), (101, 0.0), (250, 0.0),  # never negative
])
def test_triangular_palm_exact_form(step, factor):
    assert TriangularScheduler(10, 100).factor(step) == pytest.approx(factor)


@pytest.mark.parametrize("step, factor", [(0, 0.0), (5, 0.5), (10, 1.0), (55, 0.5), (100, 0.0), (130, 0.0)])
def test_linear_warmup_decay(step, factor):
    assert LinearWarmupDecay(10, 100).factor(step) == pytest.approx(factor)  # (T - t) / (T - W) after warmup


def test_constant_and_cosine():
    assert ConstantScheduler(4).factor(2) == pytest.approx(0.5)
    assert ConstantScheduler(4).factor(1000) == 1.0
    cosine = CosineScheduler(10, 110)
    assert cosine.factor(10) == pytest.approx(1.0)
    assert cosine.factor(60) == pytest.approx(0.5)
    assert cosine.factor(110) == pytest.approx(0.0, abs=1e-12)


def test_no_warmup_starts_at_full_rate():
    assert TriangularScheduler(0, 10).factor(0) == 1.0


def test_bind_fills_total_only_when_unset():
    unset = TriangularScheduler(10)
    with pytest.raises(RuntimeError):
        unset.factor(20)
    unset.bind(40)
    assert unset.num_train_steps == 40 and unset.factor(20) == pytest.approx(0.5)
    given = TriangularScheduler(10, 100)
    given.bind(40)
    assert given.num_train_steps == 100


def test_invalid_arguments():
    with pytest.raises(ValueError):
        TriangularScheduler(-1, 10)
    with pytest.raises(ValueError):
        TriangularScheduler(1, 0)


def test_trainer_binds_total_to_the_real_number_of_steps(vocab_file, intent_slot_dir):
    mh = joint_trainer(vocab_file, intent_slot_dir, num_epochs=2, lr=1e-3)
    schedule = TriangularSchedualer(2)  # T left to the trainer
    mh.build_backward(mtl.optimizer.Adam(None, 1e-3, schedule))
    mh.train(print_steps=0)
    assert mh.total_steps == mh.global_step == 6  # 24 examples // 8 * 2 epochs
    assert schedule.num_train_steps == mh.total_steps
    assert mh.scheduler.get_last_lr()[0] == pytest.approx(1e-3 * schedule.factor(mh.total_steps)) == 0.0
    assert all(group["lr"] == 0.0 for group in mh.optimizer.param_groups)


def test_trainer_keeps_a_total_the_user_gave(vocab_file, intent_slot_dir):
    """PALM's examples over- or under-counted T; a given T is the user's choice and is kept."""
    mh = joint_trainer(vocab_file, intent_slot_dir, num_epochs=2, lr=1e-3)
    schedule = TriangularSchedualer(2, 24)
    mh.build_backward(mtl.optimizer.Adam(None, 1e-3, schedule))
    mh.train(print_steps=0)
    assert schedule.num_train_steps == 24
    assert mh.scheduler.get_last_lr()[0] == pytest.approx(1e-3 * (1 - 6 / 24))


def test_default_schedule_is_triangular_ending_at_zero(vocab_file, intent_slot_dir):
    mh = joint_trainer(vocab_file, intent_slot_dir, num_epochs=2, lr=1e-3)
    mh.train(print_steps=0)
    assert mh.global_step == 6
    assert mh.scheduler.get_last_lr()[0] == 0.0


def test_step_t_runs_at_base_times_factor_t(vocab_file, intent_slot_dir, monkeypatch):
    """The lr each optimizer step actually used: base * factor(t) for t = 0 .. T-1 (no off-by-one)."""
    import torch
    used, original = [], torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        used.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    mh = joint_trainer(vocab_file, intent_slot_dir, num_epochs=3, lr=2e-3)
    schedule = TriangularScheduler(3)
    mh.build_backward(mtl.optimizer.Adam(None, 2e-3, schedule))
    mh.train(print_steps=0)
    assert len(used) == mh.total_steps == 9
    assert used == pytest.approx([2e-3 * f for f in (0, 1 / 3, 2 / 3, 1 - 3 / 9, 1 - 4 / 9, 1 - 5 / 9, 1 - 6 / 9,
                                                     1 - 7 / 9, 1 - 8 / 9)])
