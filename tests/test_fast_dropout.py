"""CPU dropout with cheaper masks: the drop rate, torch's scaling and gradient, seeded masks, eval untouched,
and the trainer's switch."""
import pytest
import torch
from torch import nn

from conftest import joint_trainer
from mtl.components.backbones.dropout import FastDropout, keep_mask, use_fast_dropout
from mtl.config import build_run, load_config
from tiny_runs import tiny_config, write_yaml


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_masks_drop_at_rate_p_and_look_independent(p):
    mask = keep_mask(torch.Size([1000, 1000]), p)
    assert mask.shape == (1000, 1000) and mask.dtype == torch.bool
    assert abs(mask.float().mean().item() - (1 - p)) < 0.003  # std of the mean is below 0.0005
    # neighbours (the four 16-bit numbers of one 64-bit draw) are not correlated
    kept = mask.flatten().float()
    both = (kept[:-1] * kept[1:]).mean().item()
    assert abs(both - (1 - p) ** 2) < 0.003


def test_kept_values_are_scaled_and_the_gradient_follows_the_mask():
    dropout = FastDropout(0.25)
    x = torch.randn(64, 33, requires_grad=True)
    y = dropout(x)
    kept = y != 0
    assert 0.6 < kept.float().mean() < 0.9
    torch.testing.assert_close(y[kept], x[kept] / 0.75)
    y.backward(torch.full_like(y, 2.0))
    torch.testing.assert_close(x.grad, kept.float() * 2.0 / 0.75)


def test_masks_follow_the_seed_and_eval_is_the_identity():
    dropout, x = FastDropout(0.3), torch.ones(8, 100, dtype=torch.bfloat16)
    torch.manual_seed(3)
    first = dropout(x)
    torch.manual_seed(3)
    assert torch.equal(first, dropout(x)) and first.dtype == torch.bfloat16
    assert not torch.equal(first, dropout(x))
    dropout.eval()
    assert dropout(x) is x
    assert torch.equal(FastDropout(1.0)(x), torch.zeros_like(x))


def test_the_switch_swaps_plain_dropouts_in_place_and_back():
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.2), nn.Sequential(nn.Dropout(0.1)))
    assert use_fast_dropout(model, True) == 2
    assert type(model[1]) is FastDropout and model[1].p == 0.2
    assert use_fast_dropout(model, False) == 0 and type(model[2][0]) is nn.Dropout


@pytest.mark.parametrize("on", [True, False])
def test_the_trainer_uses_it_on_the_cpu_unless_told_not_to(vocab_file, intent_slot_dir, on):
    trainer = joint_trainer(vocab_file, intent_slot_dir, fast_dropout=on)
    trainer.train(print_steps=0, max_steps=2)
    kinds = {type(m) for m in trainer.model.modules() if isinstance(m, nn.Dropout)}
    assert kinds == ({FastDropout} if on else {nn.Dropout})


def test_the_config_key_reaches_the_trainer(vocab_file, intent_slot_dir, tmp_path):
    config = tiny_config(vocab_file, intent_slot_dir, str(tmp_path / "out"))
    config["trainer"]["fast_dropout"] = False
    assert build_run(load_config(write_yaml(tmp_path / "run.yaml", config))).trainer.fast_dropout is False
