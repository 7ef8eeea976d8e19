"""Metrics on hand-checked cases (0-100 scale)."""
import pytest

from mtl.metrics import accuracy, entity_spans, frame_accuracy, macro_f1, seqeval_scores


def test_seqeval_entity_f1_two_of_three():
    # gold entities: PER(0-1), LOC(3) in sentence 1; ORG(0) in sentence 2       -> 3
    # predicted:     PER(0-1), ORG(3) in sentence 1; ORG(0) in sentence 2       -> 3, of which 2 right
    # P = 2/3, R = 2/3, F1 = 2/3
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    predicted = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"]]
    scores = seqeval_scores(predicted, gold)
    assert scores["precision"] == pytest.approx(66.6667, abs=1e-3)
    assert scores["recall"] == pytest.approx(66.6667, abs=1e-3)
    assert scores["f1"] == pytest.approx(66.6667, abs=1e-3)


def test_seqeval_partial_span_is_wrong_and_precision_differs_from_recall():
    # gold: LOC(0-1), PER(3); predicted: LOC(0) only (a partial span: wrong), PER(3) right
    # P = 1/2, R = 1/2 ... add a missed entity: gold also DATE(4) -> R = 1/3, F1 = 2*(1/2*1/3)/(1/2+1/3) = 0.4
    gold = [["B-LOC", "I-LOC", "O", "B-PER", "B-DATE"]]
    predicted = [["B-LOC", "O", "O", "B-PER", "O"]]
    scores = seqeval_scores(predicted, gold)
    assert scores["precision"] == pytest.approx(50.0)
    assert scores["recall"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(40.0)


def test_seqeval_no_predictions_is_zero_not_an_error():
    scores = seqeval_scores([["O", "O"]], [["B-X", "O"]])
    assert scores == {"f1": 0.0, "precision": 0.0, "recall": 0.0}
    assert all(type(value) is float for value in scores.values())


def test_accuracy():
    assert accuracy(["a", "b", "c", "a"], ["a", "b", "b", "b"]) == pytest.approx(50.0)
    assert accuracy([], []) == 0.0


def test_macro_f1_by_hand():
    # gold [a a b c], predicted [a b b a]
    # a: tp 1, fp 1, fn 1 -> 2/4 = 0.5;  b: tp 1, fp 1, fn 0 -> 2/3;  c: tp 0 -> 0
    # mean over {a, b, c} = (0.5 + 0.6667 + 0) / 3 = 38.89
    assert macro_f1(["a", "b", "b", "a"], ["a", "a", "b", "c"]) == pytest.approx(100 * (0.5 + 2 / 3) / 3)


def test_macro_f1_counts_classes_only_predicted():
    # gold [a a], predicted [a z]: a: tp 1, fn 1 -> 2/3; z: only predicted -> 0; mean 1/3
    assert macro_f1(["a", "z"], ["a", "a"]) == pytest.approx(100 / 3)


def test_entity_spans():
    words = ["fly", "to", "new", "york", "monday"]
    tags = ["O", "O", "B-to", "I-to", "B-date"]
    assert entity_spans(words, tags) == [{"text": "new york", "type": "to", "start": 2, "end": 4},
                                         {"text": "monday", "type": "date", "start": 4, "end": 5}]
    assert entity_spans(["a", "b"], ["O", "O"]) == []


def test_entity_spans_with_the_source_text_give_character_offsets():
    text = "fly to  new   york\tmonday"
    spans = entity_spans(text.split(), ["O", "O", "B-to", "I-to", "B-date"], text)
    assert spans == [{"text": "new   york", "type": "to", "start": 2, "end": 4, "char_start": 8, "char_end": 18},
                     {"text": "monday", "type": "date", "start": 4, "end": 5, "char_start": 19, "char_end": 25}]
    assert entity_spans(["New", "York"], ["B-x", "I-x"], "new york")[0].keys() == {"text", "type", "start", "end"}


def test_frame_accuracy():
    # example 0 right for both heads; example 1 wrong slots; example 2 wrong intent and slots
    assert frame_accuracy([[True, True, False], [True, False, False]]) == pytest.approx(100 / 3)
    assert frame_accuracy([[True, True]]) == 100.0
