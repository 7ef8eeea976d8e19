"""Sub-word alignment: labels on first sub-tokens, -100 elsewhere; predictions read back per original word."""
import logging

import pytest
import torch

import mtl
from conftest import UTTERANCES, joint_trainer, write_intent_slot
from mtl.text import words_from_token_predictions

# words the conftest vocab splits: book ##ing, cheap ##er, book ##ing ##s
SPLIT_ROWS = [
    ("booking cheaper flights to boston", "B-act B-price O O B-to", "book_flight"),
    ("play jazz", "O B-genre", "play_music"),
    ("bookings", "B-act", "book_flight"),
]


@pytest.fixture
def split_reader(vocab_file, tmp_path):
    folder = write_intent_slot(tmp_path / "split", SPLIT_ROWS)
    reader = mtl.reader.IntentSlotReader(vocab_file, 32)
    return reader.load_data(folder, batch_size=8, shuffle=False)


def expected_alignment(tokenizer, words, tags, tag_ids):
    """An independent statement of the rule: [CLS], then each word's pieces, the tag on the first one."""
    labels, starts = [-100], [0]
    for word, tag in zip(words, tags):
        pieces = tokenizer.tokenize(word)
        labels += [tag_ids[tag]] + [-100] * (len(pieces) - 1)
        starts += [1] + [0] * (len(pieces) - 1)
    return labels + [-100], starts + [0]


def test_vocab_splits_words_into_several_pieces(split_reader):
    tokenize = split_reader.tokenizer.tokenize
    assert tokenize("booking") == ["book", "##ing"]
    assert tokenize("cheaper") == ["cheap", "##er"]
    assert tokenize("bookings") == ["book", "##ing", "##s"]
    assert tokenize("flights") == ["flights"]


def test_labels_on_first_sub_token_and_ignored_elsewhere(split_reader):
    batch = next(split_reader.iter_once())
    tag_ids = {name: i for i, name in enumerate(split_reader.label_names["slot_ids"])}
    for row, (text, tags, _) in enumerate(SPLIT_ROWS):
        labels, starts = expected_alignment(split_reader.tokenizer, text.split(), tags.split(), tag_ids)
        n = len(labels)
        assert batch["slot_ids"][row, :n].tolist() == labels
        assert batch["word_start_mask"][row, :n].tolist() == starts
        # padding: ignored in the loss, never a word start, masked out of attention, [PAD] ids
        assert (batch["slot_ids"][row, n:] == -100).all()
        assert (batch["word_start_mask"][row, n:] == 0).all()
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (batch["input_ids"].shape[1] - n)
        assert (batch["input_ids"][row, n:] == split_reader.tokenizer.pad_token_id).all()
    # one hand-checked row: [CLS] book ##ing cheap ##er flights to boston [SEP]
    o, act, price, to = (tag_ids[t] for t in ("O", "B-act", "B-price", "B-to"))
    assert batch["slot_ids"][0].tolist() == [-100, act, -100, price, -100, o, o, to, -100]
    assert batch["word_start_mask"][0].tolist() == [0, 1, 0, 1, 0, 1, 1, 1, 0]


def test_words_from_token_predictions():
    assert words_from_token_predictions([1, 3, 4], ["B-a", "I-a", "O"], "O") == ["B-a", "I-a", "O"]
    assert words_from_token_predictions([1, -1, 3, -1], ["B-a", "B-b"], "O") == ["B-a", "O", "B-b", "O"]
    assert words_from_token_predictions([-1, -1], [], "X") == ["X", "X"]


def test_sequence_label_decodes_one_tag_per_word_from_sub_tokens(split_reader):
    """A head whose per-token argmax is known: gold tags come back per word, whatever the sub-tokens say."""
    batch = next(split_reader.iter_once())
    names = split_reader.label_names["slot_ids"]
    head = mtl.head.SequenceLabel(len(names), 32, 0.0, label_field="slot_ids").eval()
    gold = batch["slot_ids"]
    logits = torch.full((*gold.shape, len(names)), -5.0)
    logits[..., 0] = 0.0  # 'O' on non-start sub-tokens: must not leak into word predictions
    rows, cols = torch.nonzero(gold >= 0, as_tuple=True)
    logits[rows, cols, gold[rows, cols]] = 5.0
    predictions = head.predict({"logits": logits}, batch)
    for row, meta in enumerate(batch["meta"]):
        decoded = head.decode(predictions[row], names, meta)
        assert decoded["tags"] == SPLIT_ROWS[row][1].split()
    first = head.decode(predictions[0], names, batch["meta"][0])
    assert first["spans"][:2] == [{"text": "booking", "type": "act", "start": 0, "end": 1, "char_start": 0, "char_end": 7},
                                  {"text": "cheaper", "type": "price", "start": 1, "end": 2, "char_start": 8,
                                   "char_end": 15}]


def test_truncation_drops_words_and_predicts_them_o(vocab_file, intent_slot_dir, caplog):
    mh = joint_trainer(vocab_file, intent_slot_dir, max_seqlen=6)
    slots = mh.tasks[0].heads["slots"]
    with torch.no_grad():  # make every kept word predict a non-'O' tag
        slots.classifier.weight.zero_()
        slots.classifier.bias.fill_(0.0)
        slots.classifier.bias[0] = -100.0
    text = "book a flight from boston to denver"
    with caplog.at_level(logging.WARNING):
        reader = mh.tasks[0].reader.from_texts([text, "booking flights"])
    assert "max_seqlen=6" in caplog.text
    meta = reader.features[0].meta
    assert meta["word_starts"] == [1, 2, 3, 4, -1, -1, -1]  # [CLS] book a flight from [SEP]
    records = mh.predict("joint", reader)
    tags = records[0]["slots"]["tags"]
    assert len(tags) == 7
    assert all(tag != "O" for tag in tags[:4]) and tags[4:] == ["O", "O", "O"]
    assert len(records[1]["slots"]["tags"]) == 2


def test_word_split_across_the_truncation_boundary_keeps_its_first_piece(vocab_file, intent_slot_dir):
    reader = mtl.reader.IntentSlotReader(vocab_file, 4).load_data(intent_slot_dir / "train")
    predict = reader.from_texts(["a booking flights"])  # [CLS] a book [SEP]: ##ing and 'flights' are cut
    assert predict.features[0].meta["word_starts"] == [1, 2, -1]
    assert predict.features[0].fields["word_start_mask"] == [0, 1, 1, 0]


def test_batches_padded_to_longest_in_batch_not_max_seqlen(vocab_file, intent_slot_dir):
    reader = mtl.reader.IntentSlotReader(vocab_file, 60).load_data(intent_slot_dir / "train", batch_size=5)
    widths, training = [], reader.batches()
    for batch in (*reader.eval_reader(intent_slot_dir / "dev").iter_once(),
                  *(next(training) for _ in range(reader.steps_per_epoch))):
        lengths = [len(meta["word_starts"]) + 2 for meta in batch["meta"]]  # no word splits in this data
        assert batch["input_ids"].shape[1] == max(lengths) < 60
        widths.append(batch["input_ids"].shape[1])
    assert len(set(widths)) > 1


def epoch_lines(reader) -> list[list[int]]:
    batches = reader.batches()
    return [[meta["line"] for meta in next(batches)["meta"]] for _ in range(reader.steps_per_epoch)]


def padding(reader, batches: list[list[int]]) -> int:
    lengths = {f.meta["line"]: len(f.fields["input_ids"]) for f in reader.features}
    return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches)


def test_group_by_length_keeps_every_example_once_and_is_seeded(vocab_file, intent_slot_dir):
    def make(seed, group=True):
        return mtl.reader.IntentSlotReader(vocab_file, 32, seed=seed).load_data(
            intent_slot_dir / "train", batch_size=5, group_by_length=group)

    reader = make(1)
    first = epoch_lines(reader)
    assert sorted(line for batch in first for line in batch) == list(range(1, 2 * len(UTTERANCES) + 1))
    second = epoch_lines(reader)  # the generator resumes into epoch 1: a new order, still each once
    assert sorted(line for batch in second for line in batch) == list(range(1, 2 * len(UTTERANCES) + 1))
    assert second != first
    assert epoch_lines(make(1)) == first
    assert epoch_lines(make(2)) != first
    plain = make(1, group=False)
    assert padding(reader, first) <= padding(plain, epoch_lines(plain))


def test_eval_iterates_in_file_order(vocab_file, intent_slot_dir):
    reader = mtl.reader.IntentSlotReader(vocab_file, 32).load_data(intent_slot_dir / "train", batch_size=5)
    dev = reader.eval_reader(intent_slot_dir / "dev", batch_size=5)
    lines = [meta["line"] for batch in dev.iter_once() for meta in batch["meta"]]
    assert lines == list(range(1, len(UTTERANCES) + 1))
