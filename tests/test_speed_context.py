"""The CPU speed kernels are scoped to a training call: installed on entry, undone on exit (after an error
too), nothing registered with transformers at import, and with both switches off the same training as with
them on (plain PyTorch, torch's clipping)."""
import subprocess
import sys

import pytest
import torch
from torch import nn

from conftest import joint_trainer, tiny_bert
from mtl.speed import FastDropout, GradBufferEmbedding, SpeedKernels
from mtl.speed.dropout import ATTENTION, attention_name


def _kernels(model: nn.Module) -> set[type]:
    return {type(m) for m in model.modules() if isinstance(m, (FastDropout, GradBufferEmbedding))}


def _plain(trainer) -> None:
    """No kernel module, no buffer, the attention implementation the encoder was built with."""
    assert not _kernels(trainer.model)
    embedding = trainer.backbone.model.get_input_embeddings()
    assert type(embedding) is nn.Embedding and "_grad_buffer" not in embedding.__dict__
    assert trainer.backbone.model.config._attn_implementation == "sdpa"


def test_train_leaves_the_model_as_it_found_it(vocab_file, intent_slot_dir):
    trainer = joint_trainer(vocab_file, intent_slot_dir)
    during = []
    trainer.backbone.register_forward_hook(lambda module, *_: during.append(
        (_kernels(module), module.model.config._attn_implementation)))
    trainer.train(print_steps=0, max_steps=2)
    assert during == [({FastDropout, GradBufferEmbedding}, ATTENTION)] * 2
    _plain(trainer)
    trainer.train(print_steps=0, max_steps=3)  # a second call installs them again, and undoes them again
    assert len(during) == 3 and during[-1] == during[0]
    _plain(trainer)


def test_train_undoes_them_when_it_raises(vocab_file, intent_slot_dir):
    trainer = joint_trainer(vocab_file, intent_slot_dir)
    calls = []

    def fail_on_the_second_step(module, *_):
        calls.append(_kernels(module))
        if len(calls) == 2:
            raise RuntimeError("boom")
    trainer.backbone.register_forward_hook(fail_on_the_second_step)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.train(print_steps=0)
    assert calls[0] == {FastDropout, GradBufferEmbedding}
    _plain(trainer)


def test_importing_mtl_registers_nothing_with_transformers():
    code = ("import mtl, mtl.speed, mtl.speed.dropout\n"
            "from transformers import AttentionInterface\n"
            "from transformers.masking_utils import AttentionMaskInterface\n"
            "names = set(AttentionInterface._global_mapping) | set(AttentionMaskInterface._global_mapping)\n"
            "print(sorted(n for n in names if n.startswith('mtl')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_context_puts_back_only_what_it_changed():
    backbone = tiny_bert()
    model = nn.ModuleDict({"encoder": backbone, "head": nn.Sequential(nn.Dropout(0.1), nn.Linear(32, 2))})
    config = backbone.model.config
    with SpeedKernels(model, fast_dropout=True, grad_buffer=True) as outer:
        assert outer.installed == ["grad_buffer", "fast_dropout"]
        assert type(model["head"][0]) is FastDropout and config._attn_implementation == ATTENTION
        with SpeedKernels(model, fast_dropout=True, grad_buffer=True) as inner:  # nothing left to change
            assert inner.installed == ["fast_dropout"]
        assert _kernels(model) == {FastDropout, GradBufferEmbedding}  # the inner block undid nothing of outer's
        assert config._attn_implementation == ATTENTION
        with pytest.raises(RuntimeError, match="already installed"):
            outer.install()
    assert not _kernels(model) and config._attn_implementation == "sdpa" and not outer.installed


def test_an_error_in_the_block_undoes_them_and_propagates():
    backbone = tiny_bert()
    with pytest.raises(ValueError, match="inside"):
        with SpeedKernels(backbone, fast_dropout=True, grad_buffer=True):
            backbone.model.get_input_embeddings()(torch.tensor([[1, 2]])).sum().backward()
            raise ValueError("inside")
    embedding = backbone.model.get_input_embeddings()
    assert not _kernels(backbone) and "_grad_buffer" not in embedding.__dict__
    assert backbone.model.config._attn_implementation == "sdpa"


def test_each_switch_alone_and_another_attention_left_alone():
    backbone = tiny_bert()
    backbone.model.config._attn_implementation = "eager"
    with SpeedKernels(backbone, fast_dropout=False, grad_buffer=True):
        assert _kernels(backbone) == {GradBufferEmbedding}
    with SpeedKernels(backbone, fast_dropout=True, grad_buffer=False):
        assert _kernels(backbone) == {FastDropout}
        assert backbone.model.config._attn_implementation == "eager"  # only SDPA is switched
    assert not _kernels(backbone) and backbone.model.config._attn_implementation == "eager"


def test_the_threshold_is_an_argument():
    backbone = tiny_bert()
    limits = {torch.float32: 64}
    with SpeedKernels(backbone, fast_dropout=True, grad_buffer=False, hand_written_max_keys=limits):
        assert backbone.model.config._attn_implementation == attention_name(limits) != ATTENTION
    assert backbone.model.config._attn_implementation == "sdpa"


def test_both_switches_off_train_to_the_same_weights(vocab_file, intent_slot_dir):
    """Dropout 0 and fp32 (the tiny runs' settings): the kernels change no number beyond float rounding (the
    clipping inside the fused step rounds differently from torch's multiplication)."""
    weights = {}
    for on in (True, False):
        torch.manual_seed(0)
        trainer = joint_trainer(vocab_file, intent_slot_dir, fast_dropout=on, embedding_grad_buffer=on)
        start = {name: tensor.clone() for name, tensor in trainer.backbone.state_dict().items()}
        assert trainer.train(print_steps=0)["steps"] > 1
        assert any(not torch.equal(t, start[n]) for n, t in trainer.backbone.state_dict().items())  # it trained
        weights[on] = trainer.model.state_dict()
    for name, tensor in weights[True].items():
        torch.testing.assert_close(tensor, weights[False][name], rtol=1e-5, atol=1e-6, msg=name)
