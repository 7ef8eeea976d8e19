"""Contracts are checked when components are joined, and the error names both components and the field."""
import pytest
import torch

import mtl
from conftest import tiny_bert, tiny_roberta, write_classify_tsv


class NoTypesReader(mtl.reader.ClassifyReader):
    """A reader that yields no token_type_ids (as a RoBERTa-only reader would)."""

    input_fields = ("input_ids", "attention_mask")


class NeedsMissingOutput(mtl.head.Head):
    """A custom head asking the backbone for an output it does not provide."""

    backbone_outputs = ("nonexistent",)

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(32, 2)


@pytest.fixture
def cls_reader(vocab_file, tmp_path, classify_rows):
    path = write_classify_tsv(tmp_path / "train.tsv", classify_rows)
    return mtl.reader.ClassifyReader(vocab_file, 16).load_data(path, batch_size=4)


def assert_names(error: pytest.ExceptionInfo, *names: str) -> None:
    message = str(error.value)
    for name in names:
        assert name in message, f"{name!r} missing from {message!r}"


def test_head_label_field_missing_from_reader_at_trainer_build_forward(cls_reader, backbone):
    task = mtl.Trainer("slots", reader=cls_reader, head=mtl.head.Classify(3, 32, label_field="slot_ids"))
    with pytest.raises(mtl.ContractError) as error:
        task.build_forward(backbone)
    assert_names(error, "Classify", "ClassifyReader", "slot_ids")


def test_sequence_label_head_on_classify_reader_names_every_missing_field(cls_reader, backbone):
    head = mtl.head.SequenceLabel(3, 32, label_field="slot_ids")
    task = mtl.Trainer("slots", reader=cls_reader, head=head)
    with pytest.raises(mtl.ContractError) as error:
        task.build_forward(backbone)
    assert_names(error, "SequenceLabel", "ClassifyReader", "slot_ids", "word_start_mask")


def test_contract_error_at_fit_reader_in_palm_order(cls_reader, backbone):
    """PALM's order: build_forward first (no reader yet), the reader joins at fit_readers_with_mixratio."""
    task = mtl.Trainer("slots")
    mh = mtl.MultiHeadTrainer([task])
    task.build_forward(backbone, mtl.head.Classify(3, 32, label_field="slot_ids"))
    mh.build_forward()
    with pytest.raises(mtl.ContractError) as error:
        mh.fit_readers_with_mixratio([cls_reader], "slots", 1)
    assert_names(error, "Classify", "ClassifyReader", "slot_ids")
    with pytest.raises(mtl.ContractError) as error:
        task.fit_reader(cls_reader)
    assert_names(error, "Classify", "ClassifyReader", "slot_ids")
    assert task.reader is None  # the bad reader was not attached


def test_contract_error_in_joint_mode_fails_before_any_step(cls_reader, backbone):
    heads = {"intent": mtl.head.Classify(4, 32, label_field="label_ids"),
             "slots": mtl.head.Classify(3, 32, label_field="slot_ids")}
    mh = mtl.MultiHeadTrainer([mtl.Trainer("joint", reader=cls_reader, head=heads)], backbone=backbone,
                              num_epochs=1, precision="fp32")
    with pytest.raises(mtl.ContractError) as error:
        mh.train(print_steps=0)
    assert_names(error, "ClassifyReader", "slot_ids")
    assert mh.global_step == 0  # failed up front, before any step


def test_matching_reader_and_head_pass(cls_reader, backbone):
    task = mtl.Trainer("intent", reader=cls_reader, head=mtl.head.Classify(4, 32))
    head = task.build_forward(backbone)
    assert isinstance(head, mtl.head.Classify)
    task.fit_reader(cls_reader.eval_reader(cls_reader.input_file), phase="eval")


def test_predict_reader_needs_no_labels_but_eval_reader_does(cls_reader, backbone):
    task = mtl.Trainer("intent", head=mtl.head.Classify(4, 32, label_field="slot_ids"))
    task.build_forward(backbone)
    task.check_reader(cls_reader.from_texts(["play some jazz"]))  # predict phase: labels not needed
    with pytest.raises(mtl.ContractError):
        task.check_reader(cls_reader.eval_reader(cls_reader.input_file))


def test_reader_without_token_types_against_bert_at_register_with(vocab_file, tmp_path, classify_rows):
    reader = NoTypesReader(vocab_file, 16).load_data(write_classify_tsv(tmp_path / "t.tsv", classify_rows))
    bert = tiny_bert()
    assert bert.config.type_vocab_size == 2
    with pytest.raises(mtl.ContractError) as error:
        reader.register_with(bert)
    assert_names(error, "NoTypesReader", "BERT", "token_type_ids")
    with pytest.raises(mtl.ContractError):
        mtl.Trainer("intent", reader=reader, head=mtl.head.Classify(4, 32)).build_forward(bert)


def test_reader_without_token_types_is_fine_for_roberta(vocab_file, tmp_path, classify_rows):
    reader = NoTypesReader(vocab_file, 16).load_data(write_classify_tsv(tmp_path / "t.tsv", classify_rows))
    roberta = tiny_roberta()
    reader.register_with(roberta)
    assert "token_type_ids" not in roberta.input_fields


def test_head_needing_missing_backbone_output(backbone):
    with pytest.raises(mtl.ContractError) as error:
        mtl.Trainer("custom", head=NeedsMissingOutput()).build_forward(backbone)
    assert_names(error, "NeedsMissingOutput", "BERT", "nonexistent")


def test_head_needing_missing_backbone_output_through_multi_head_trainer(backbone):
    mh = mtl.MultiHeadTrainer([mtl.Trainer("custom", head=NeedsMissingOutput())], backbone=backbone)
    with pytest.raises(mtl.ContractError) as error:
        mh.build_forward()
    assert_names(error, "NeedsMissingOutput", "nonexistent")


def test_head_with_too_few_classes_for_the_readers_labels_fails_up_front(vocab_file, intent_slot_dir):
    reader = mtl.reader.IntentSlotReader(vocab_file, 32).load_data(intent_slot_dir / "train", batch_size=4)
    too_small = len(reader.label_names["intent_ids"]) - 1
    task = mtl.Trainer("intent", reader=reader, head=mtl.head.Classify(too_small, 32, label_field="intent_ids"))
    with pytest.raises(mtl.ContractError, match=r"IntentSlotReader has \d+ labels for intent_ids but Classify"):
        task.build_forward(tiny_bert())


def test_integer_label_beyond_num_classes_names_file_and_line(vocab_file, tmp_path):
    path = tmp_path / "cls.tsv"
    path.write_text("label\ttext_a\n0\tplay some jazz\n5\tbook a flight\n", encoding="utf-8")
    reader = mtl.reader.ClassifyReader(vocab_file, 32).load_data(path, batch_size=2)
    task = mtl.Trainer("cls", reader=reader, head=mtl.head.Classify(3, 32))
    with pytest.raises(mtl.DataError, match=r"cls\.tsv, line 3: label_ids 5 is out of range"):
        task.build_forward(tiny_bert())
