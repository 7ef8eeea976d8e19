"""The word-embedding gradient kept in one buffer across steps: the same gradients and weights as autograd's
fresh dense gradient, no new buffer per step, gone when train() returns, and off where it cannot be used."""
import copy
import pickle

import pytest
import torch
from torch import nn

from conftest import joint_trainer, tiny_bert
from mtl.speed.grad_buffer import GradBufferEmbedding, install_grad_buffer
from mtl.config import build_run, load_config
from tiny_runs import tiny_config, write_yaml


def _grads(embedding: nn.Embedding, ids: torch.Tensor, tied_first: bool) -> torch.Tensor:
    """The weight's gradient through a lookup and through a tied output layer (as a masked-LM head)."""
    embedding.weight.grad = None
    hidden = embedding(ids)
    logits = hidden @ embedding.weight.t()
    loss = (logits.logsumexp(-1) * torch.arange(ids.numel()).view(ids.shape)).sum() if tied_first else \
        (hidden * torch.linspace(-1, 1, hidden.shape[-1])).sum() + logits.mean()
    loss.backward()
    return embedding.weight.grad.clone()


@pytest.mark.parametrize("tied_first", [True, False])
def test_gradients_equal_autograds_with_padding_and_a_tied_layer(tied_first):
    plain = nn.Embedding(11, 6, padding_idx=0)
    buffered = copy.deepcopy(plain)
    buffered.__class__ = GradBufferEmbedding
    ids = torch.tensor([[0, 3, 3, 7], [5, 0, 10, 3]])
    for _ in range(2):  # the second pass reuses the buffer
        expected, got = _grads(plain, ids, tied_first), _grads(buffered, ids, tied_first)
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    assert got[0].abs().sum() > 0  # the tied layer reaches the padding row ...
    lookup_only = _grads_lookup_only(buffered, ids)
    assert lookup_only[0].abs().sum() == 0  # ... the lookup never does (padding_idx), as in nn.Embedding


def _grads_lookup_only(embedding: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
    embedding.weight.grad = None
    embedding(ids).sum().backward()
    return embedding.weight.grad.clone()


def test_it_knows_the_rows_it_wrote_and_clears_only_those():
    plain = nn.Embedding(50, 4, padding_idx=0)
    buffered = copy.deepcopy(plain)
    buffered.__class__ = GradBufferEmbedding
    for ids in (torch.tensor([[0, 3, 3, 7]]), torch.tensor([[9, 41], [3, 0]])):  # rows 7 and 3 must be cleared
        expected, got = _grads_lookup_only(plain, ids), _grads_lookup_only(buffered, ids)
        assert torch.equal(got, expected)
        assert buffered.written_rows().tolist() == sorted(set(ids.flatten().tolist()))
    buffered.weight.grad.add_(1.0)  # any other write: every row may be non-zero now
    assert buffered.written_rows() is None
    ids = torch.tensor([[5]])
    assert torch.equal(_grads_lookup_only(buffered, ids), _grads_lookup_only(plain, ids))  # zeroed whole
    assert buffered.written_rows().tolist() == [5]
    buffered.weight.grad = buffered.weight.grad.clone()  # not the buffer any more
    assert buffered.written_rows() is None
    _grads(buffered, ids, tied_first=True)  # a tied output layer adds to the buffer through autograd
    assert buffered.written_rows() is None


@pytest.mark.parametrize("accum", [1, 2])
def test_training_gives_the_same_weights_and_keeps_one_buffer(vocab_file, intent_slot_dir, accum, monkeypatch):
    made = []
    original = GradBufferEmbedding._zeroed_buffer

    def counted(self):
        buffer = original(self)
        made.append(buffer)
        return buffer
    monkeypatch.setattr(GradBufferEmbedding, "_zeroed_buffer", counted)
    runs, steps = {}, {}
    for on in (True, False):
        torch.manual_seed(0)
        trainer = joint_trainer(vocab_file, intent_slot_dir, embedding_grad_buffer=on, grad_accum_steps=accum)
        embedding = trainer.backbone.model.get_input_embeddings()
        kinds = set()
        embedding.register_forward_hook(lambda module, *_: kinds.add(type(module)))
        steps[on] = trainer.train(print_steps=0)["steps"]
        assert kinds == {GradBufferEmbedding if on else nn.Embedding}  # during train() ...
        assert type(embedding) is nn.Embedding and not {"_grad_buffer", "_rows"} & embedding.__dict__.keys()
        runs[on] = trainer.model.state_dict()
    assert steps[True] > 1 and len(made) == steps[True]  # made or reused once a step ...
    assert all(b is made[0] for b in made)  # ... and always the same buffer, zeroed in place
    assert runs[True].keys() == runs[False].keys()
    for name, tensor in runs[True].items():
        torch.testing.assert_close(tensor, runs[False][name], rtol=1e-5, atol=1e-6, msg=name)


def test_copies_leave_the_buffer_and_it_can_be_switched_off():
    model = tiny_bert().model
    undo = install_grad_buffer(model)
    embedding = model.get_input_embeddings()
    assert undo is not None and type(embedding) is GradBufferEmbedding
    embedding(torch.tensor([[1, 2]])).sum().backward()
    assert embedding.__dict__["_grad_buffer"] is embedding.weight.grad
    assert "_grad_buffer" not in copy.deepcopy(embedding).__dict__
    assert "_grad_buffer" not in pickle.loads(pickle.dumps(embedding)).__dict__
    names = sorted(model.state_dict())
    undo()
    assert type(model.get_input_embeddings()) is nn.Embedding and sorted(model.state_dict()) == names
    assert "_grad_buffer" not in embedding.__dict__


def test_it_finds_the_encoders_embeddings_inside_a_larger_model():
    backbone = tiny_bert()
    model = nn.ModuleDict({"encoder": backbone, "head": nn.Linear(32, 3)})
    undo = install_grad_buffer(model)
    assert type(backbone.model.get_input_embeddings()) is GradBufferEmbedding
    undo()
    assert type(backbone.model.get_input_embeddings()) is nn.Embedding


def test_embeddings_it_cannot_reproduce_are_left_alone():
    model = tiny_bert().model
    model.get_input_embeddings().sparse = True
    assert install_grad_buffer(model) is None
    assert type(model.get_input_embeddings()) is nn.Embedding
    assert install_grad_buffer(nn.Linear(2, 2)) is None


def test_the_config_key_reaches_the_trainer(vocab_file, intent_slot_dir, tmp_path):
    config = tiny_config(vocab_file, intent_slot_dir, str(tmp_path / "out"))
    config["trainer"]["embedding_grad_buffer"] = False
    assert build_run(load_config(write_yaml(tmp_path / "run.yaml", config))).trainer.embedding_grad_buffer is False
