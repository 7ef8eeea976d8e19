"""CPU dropout with cheaper masks: the drop rate, torch's scaling and gradient, seeded masks, eval untouched,
the attention-probability dropout (same arithmetic as SDPA otherwise), its threshold as an argument, and the
trainer's switch."""
import pytest
import torch
from torch import nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward

import mtl
from conftest import joint_trainer
from mtl.speed.dropout import (ATTENTION, HAND_WRITTEN_MAX_KEYS, FastDropout, attention, attention_name,
                               install_fast_dropout, keep_mask)
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
    undo = install_fast_dropout(model)
    assert type(model[1]) is FastDropout and model[1].p == 0.2 and type(model[2][0]) is FastDropout
    undo()
    assert type(model[1]) is nn.Dropout and type(model[2][0]) is nn.Dropout


@pytest.mark.parametrize("on", [True, False])
def test_the_trainer_uses_it_during_train_on_the_cpu_unless_told_not_to(vocab_file, intent_slot_dir, on):
    trainer = joint_trainer(vocab_file, intent_slot_dir, fast_dropout=on)
    seen = []
    trainer.backbone.register_forward_hook(lambda module, *_: seen.append(
        ({type(m) for m in module.modules() if isinstance(m, nn.Dropout)},
         module.model.config._attn_implementation)))
    trainer.train(print_steps=0, max_steps=2)
    assert seen == [({FastDropout}, ATTENTION) if on else ({nn.Dropout}, "sdpa")] * 2
    assert {type(m) for m in trainer.model.modules() if isinstance(m, nn.Dropout)} == {nn.Dropout}  # undone
    assert trainer.backbone.model.config._attn_implementation == "sdpa"


def test_the_config_key_reaches_the_trainer(vocab_file, intent_slot_dir, tmp_path):
    config = tiny_config(vocab_file, intent_slot_dir, str(tmp_path / "out"))
    config["trainer"]["fast_dropout"] = False
    assert build_run(load_config(write_yaml(tmp_path / "run.yaml", config))).trainer.fast_dropout is False


def _attention_inputs(heads: int = 2, length: int = 5) -> tuple[torch.Tensor, ...]:
    q, k, v = (torch.randn(3, heads, length, 8, requires_grad=True) for _ in range(3))
    mask = torch.ones(3, 1, length, length, dtype=torch.bool)
    mask[1, :, :, 3:] = False  # the second sequence has two padding positions
    return q, k, v, mask


def test_training_attention_is_softmax_attention_with_a_keep_mask_dropout():
    module = nn.Module()  # transformers passes the attention module; only .training and .is_causal are read
    module.is_causal = False
    q, k, v, mask = _attention_inputs()
    torch.manual_seed(5)
    out, _ = attention(module, q, k, v, mask, dropout=0.2, scaling=0.3)
    torch.manual_seed(5)
    scores = (q @ k.transpose(2, 3) * 0.3).masked_fill(~mask, torch.finfo(torch.float32).min)
    probs = torch.softmax(scores, -1) * keep_mask(torch.Size([3, 2, 5, 5]), 0.2) / 0.8
    torch.testing.assert_close(out, (probs @ v).transpose(1, 2))
    assert out.shape == (3, 5, 2, 8) and out.is_contiguous()


def test_with_nothing_dropped_it_matches_sdpa_values_and_gradients():
    """p = 1e-9 rounds to a drop rate of 0: the hand-written path must then equal SDPA, padding included."""
    module = nn.Module()
    module.is_causal = False
    q, k, v, mask = _attention_inputs()
    ours, _ = attention(module, q, k, v, mask, dropout=1e-9)
    grads = torch.autograd.grad(ours.square().sum(), (q, k, v))
    theirs, _ = sdpa_attention_forward(module, q, k, v, mask, dropout=0.0)
    torch.testing.assert_close(ours, theirs)
    for mine, reference in zip(grads, torch.autograd.grad(theirs.square().sum(), (q, k, v))):
        torch.testing.assert_close(mine, reference)


def _typed_attention_inputs(length: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    q, k, v, mask = _attention_inputs(length=length)
    return *(t.detach().to(dtype).requires_grad_() for t in (q, k, v)), mask


def test_bf16_training_without_dropout_is_hand_written_up_to_the_key_limit():
    """Without dropout the hand-written path is taken in bf16 over at most HAND_WRITTEN_MAX_KEYS keys (where it
    is faster than SDPA's CPU kernel), and agrees with SDPA up to bf16 rounding, padding included."""
    module = nn.Module()
    module.is_causal = False
    q, k, v, mask = _typed_attention_inputs(HAND_WRITTEN_MAX_KEYS[torch.bfloat16], torch.bfloat16)
    ours, _ = attention(module, q, k, v, mask, dropout=0.0)
    scores = (q @ k.transpose(2, 3) * 8 ** -0.5).masked_fill(~mask, torch.finfo(torch.bfloat16).min)
    assert torch.equal(ours, (torch.softmax(scores, -1) @ v).transpose(1, 2).contiguous())
    theirs, _ = sdpa_attention_forward(module, q, k, v, mask, dropout=0.0)
    torch.testing.assert_close(ours, theirs, atol=5e-2, rtol=5e-2)
    for mine, reference in zip(torch.autograd.grad(ours.float().square().sum(), (q, k, v)),
                               torch.autograd.grad(theirs.float().square().sum(), (q, k, v))):
        torch.testing.assert_close(mine, reference, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float16])
def test_longer_or_fp32_training_without_dropout_stays_on_sdpa(dtype):
    """Past the bf16 limit, and at any length (5 keys here) for a dtype without one, SDPA computes it."""
    module = nn.Module()
    module.is_causal = False
    length = HAND_WRITTEN_MAX_KEYS[dtype] + 1 if dtype in HAND_WRITTEN_MAX_KEYS else 5
    q, k, v, mask = _typed_attention_inputs(length, dtype)
    assert torch.equal(attention(module, q, k, v, mask, dropout=0.0)[0],
                       sdpa_attention_forward(module, q, k, v, mask, dropout=0.0)[0])


def test_evaluation_causal_and_grouped_query_attention_go_to_sdpa():
    module = nn.Module()
    module.is_causal = True
    q, k, v, mask = _attention_inputs()
    grouped = nn.Module()
    grouped.is_causal, grouped.num_key_value_groups = False, 2
    one_head = [t[:, :1] for t in (k, v)]
    calls = [(module, (q, k, v, None)),  # no mask on a causal module: SDPA's is_causal path
             (grouped, (q, *one_head, mask))]  # fewer key heads than query heads
    for owner, inputs in calls:
        torch.manual_seed(1)
        ours = attention(owner, *inputs, dropout=0.1)[0]
        torch.manual_seed(1)
        assert torch.equal(ours, sdpa_attention_forward(owner, *inputs, dropout=0.1)[0])
    module.eval()
    torch.manual_seed(1)
    ours = attention(module, q, k, v, mask, dropout=0.1)[0]
    torch.manual_seed(1)
    assert torch.equal(ours, sdpa_attention_forward(module, q, k, v, mask, dropout=0.1)[0])


ENCODERS = {"bert": {}, "roberta": {"pad_token_id": 1}, "electra": {"embedding_size": 16},
            "albert": {"embedding_size": 16}, "distilbert": {"dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 37}}


@pytest.mark.parametrize("model_type", list(ENCODERS))
def test_the_switch_moves_an_encoder_off_sdpa_and_back_and_padding_stays_masked(model_type):
    dropouts = {"hidden_dropout_prob": 0.0, "dropout": 0.0, "attention_probs_dropout_prob": 1e-9,
                "attention_dropout": 1e-9}
    config = {"model_type": model_type, "vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 2,
              "num_attention_heads": 4, "intermediate_size": 37, "max_position_embeddings": 70,
              **ENCODERS[model_type], **dropouts}
    backbone = mtl.backbone.Encoder.from_config(config)
    hf_config = backbone.model.config
    assert hf_config._attn_implementation == "sdpa"
    batch = {"input_ids": torch.tensor([[2, 7, 8, 9, 3], [2, 7, 3, 1, 1]]),
             "token_type_ids": torch.zeros(2, 5, dtype=torch.long),
             "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])}
    backbone.train()
    reference = backbone(batch)["sequence_output"]
    undo = install_fast_dropout(backbone)
    assert hf_config._attn_implementation == ATTENTION
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(backbone(batch)["sequence_output"][real], reference[real])
    undo()
    assert hf_config._attn_implementation == "sdpa"


def test_the_threshold_is_an_argument_with_its_own_registered_name():
    """Another threshold is passed, not written into the module: it gets its own name, so a model trained with
    it and one with the default never share an attention function; the default constant cannot be edited."""
    module = nn.Module()
    module.is_causal = False
    q, k, v, mask = _typed_attention_inputs(8, torch.float32)
    every = {torch.float32: 1 << 30}
    scores = (q @ k.transpose(2, 3) * 8 ** -0.5).masked_fill(~mask, torch.finfo(torch.float32).min)
    assert torch.equal(attention(module, q, k, v, mask, hand_written_max_keys=every)[0],
                       (torch.softmax(scores, -1) @ v).transpose(1, 2).contiguous())
    with pytest.raises(TypeError):
        HAND_WRITTEN_MAX_KEYS[torch.float32] = 1  # type: ignore[index]
    assert attention_name() == attention_name({torch.bfloat16: 256}) == ATTENTION
    assert len({ATTENTION, attention_name({}), attention_name(every)}) == 3
    backbone = mtl.backbone.Encoder.from_config({"model_type": "bert", "vocab_size": 99, "hidden_size": 32,
                                                 "num_hidden_layers": 1, "num_attention_heads": 4,
                                                 "intermediate_size": 37})
    undo = install_fast_dropout(backbone, every)
    assert backbone.model.config._attn_implementation == attention_name(every)
    undo()
    assert backbone.model.config._attn_implementation == "sdpa"
