"""Linear-chain CRF: Viterbi vs argmax, partition function and best path checked by brute force."""
import itertools

import pytest
import torch

from conftest import joint_trainer
from mtl.head import CRF

O, B, I = 0, 1, 2


def path_score(crf: CRF, emissions: torch.Tensor, path: list[int]) -> torch.Tensor:
    score = crf.start[path[0]] + crf.end[path[-1]]
    score = score + sum(emissions[t, tag] for t, tag in enumerate(path))
    return score + sum(crf.transitions[a, b] for a, b in zip(path, path[1:]))


def random_crf(num_tags: int, generator: torch.Generator) -> CRF:
    crf = CRF(num_tags)
    with torch.no_grad():
        for param in crf.parameters():
            param.copy_(torch.randn(param.shape, generator=generator))
    return crf


def test_viterbi_beats_argmax_when_transitions_forbid_o_to_i():
    crf = CRF(3)
    with torch.no_grad():
        crf.transitions[O, I] = -100.0  # O -> I-x forbidden
        crf.start[I] = -100.0           # a sentence cannot start inside an entity
    emissions = torch.tensor([[[1.0, 0.9, 0.0],     # argmax O (B-x close behind)
                               [0.0, 0.0, 1.0]]])   # argmax I-x
    mask = torch.ones(1, 2, dtype=torch.bool)
    assert emissions.argmax(-1)[0].tolist() == [O, I]
    # paths: O I = 2 - 100; B I = 1.9; O O = 1; B O = 0.9  -> B I
    assert crf.viterbi(emissions, mask) == [[B, I]]


def test_log_partition_and_viterbi_match_brute_force_with_ragged_masks():
    generator = torch.Generator().manual_seed(3)
    num_tags, width = 3, 3
    crf = random_crf(num_tags, generator)
    emissions = torch.randn(4, width, num_tags, generator=generator)
    lengths = [3, 2, 1, 3]
    mask = torch.tensor([[i < n for i in range(width)] for n in lengths])
    tags = torch.randint(0, num_tags, (4, width), generator=generator)
    best_paths = crf.viterbi(emissions, mask)
    log_z = crf._log_partition(emissions, mask)
    gold = []
    for row, n in enumerate(lengths):
        paths = [list(p) for p in itertools.product(range(num_tags), repeat=n)]
        assert len(paths) == num_tags ** n  # 27 for full length
        scores = torch.stack([path_score(crf, emissions[row], p) for p in paths])
        assert log_z[row].item() == pytest.approx(torch.logsumexp(scores, 0).item(), abs=1e-5)
        assert best_paths[row] == paths[int(scores.argmax())]
        gold.append(log_z[row] - path_score(crf, emissions[row], tags[row, :n].tolist()))
    nll = crf.nll(emissions, tags, mask)
    assert nll.item() == pytest.approx(torch.stack(gold).mean().item(), abs=1e-5)


def test_nll_ignores_sequences_without_words():
    generator = torch.Generator().manual_seed(5)
    crf = random_crf(3, generator)
    emissions = torch.randn(2, 3, 3, generator=generator)
    tags = torch.randint(0, 3, (2, 3), generator=generator)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    assert crf.nll(emissions, tags, mask).item() == pytest.approx(crf.nll(emissions[:1], tags[:1], mask[:1]).item())
    assert crf.viterbi(emissions, mask)[1] == []


def test_nll_non_negative_and_decreases_with_training():
    generator = torch.Generator().manual_seed(7)
    crf = CRF(4)
    emissions = torch.nn.Parameter(torch.randn(3, 5, 4, generator=generator))
    tags = torch.randint(0, 4, (3, 5), generator=generator)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2, [True] * 4 + [False]])
    optimizer = torch.optim.Adam([*crf.parameters(), emissions], lr=0.1)
    losses = []
    for _ in range(30):
        loss = crf.nll(emissions, tags, mask)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert min(losses) >= 0.0
    assert losses[-1] < 0.2 * losses[0]
    assert crf.viterbi(emissions.detach(), mask) == [tags[r, :n].tolist() for r, n in enumerate([5, 3, 4])]


def test_sequence_label_with_crf_trains_through_multi_head_trainer(vocab_file, intent_slot_dir):
    mh = joint_trainer(vocab_file, intent_slot_dir, use_crf=True, num_epochs=20, lr=3e-3)
    model = mh.build_forward()
    batch = next(mh.tasks[0].reader.eval_reader(intent_slot_dir / "train", batch_size=24).iter_once())
    before = model("joint", batch)["slots"]["loss"].item()
    mh.train(print_steps=0)
    model.train()
    after = model("joint", batch)["slots"]["loss"].item()
    assert mh.tasks[0].heads["slots"].crf is not None
    assert after < 0.5 * before
    assert mh.evaluate()["joint"]["slots.f1"] > 50.0


def test_marginals_match_brute_force_with_ragged_masks():
    """The probability a decoded tag is reported with: P(tag at t | sentence), summed over every path."""
    generator = torch.Generator().manual_seed(11)
    crf = random_crf(3, generator)
    emissions = torch.randn(3, 4, 3, generator=generator)
    lengths = [4, 2, 1]
    mask = torch.tensor([[i < n for i in range(4)] for n in lengths])
    marginals = crf.marginals(emissions, mask)
    for row, n in enumerate(lengths):
        paths = list(itertools.product(range(3), repeat=n))
        scores = torch.stack([path_score(crf, emissions[row], list(p)) for p in paths])
        probs = (scores - torch.logsumexp(scores, 0)).exp()
        expected = torch.zeros(n, 3)
        for path, prob in zip(paths, probs):
            for t, tag in enumerate(path):
                expected[t, tag] += prob
        assert torch.allclose(marginals[row, :n], expected, atol=1e-5)


def test_crf_predictions_carry_marginal_probabilities(vocab_file, intent_slot_dir):
    mh = joint_trainer(vocab_file, intent_slot_dir, use_crf=True, num_epochs=2)
    mh.train(print_steps=0)
    record = mh.predict("joint", ["book a flight from boston to denver"])[0]["slots"]
    assert len(record["probs"]) == 7 and all(0.0 < p <= 1.0 for p in record["probs"])
