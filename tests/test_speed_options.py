"""Speed switches: token-budget batches, padding to a multiple, torch.compile of the backbone; each from
Python and from a run config."""
import os
import shutil

import numpy as np
import pytest

import mtl
from conftest import joint_trainer
from mtl.config import build_run, load_config
from tiny_runs import tiny_config, write_yaml


def _reader(vocab, data, **options):
    return mtl.reader.IntentSlotReader(vocab, 32, seed=5).load_data(data / "train", batch_size=4, **options)


def _padded(reader, indices) -> int:
    return reader.collate([reader.features[i] for i in indices])["input_ids"].numel()


def test_token_budget_batches_stay_within_the_budget_and_cover_each_example_once(vocab_file, intent_slot_dir):
    reader = _reader(vocab_file, intent_slot_dir, max_tokens=40)
    longest = max(len(f.fields["input_ids"]) for f in reader.features)
    for epoch in range(3):
        batches = reader._epoch_batches(epoch)
        assert sorted(np.concatenate(batches).tolist()) == list(range(reader.num_examples))
        assert all(_padded(reader, b) <= max(40, longest) for b in batches)
        assert any(len(b) != 4 for b in batches)  # the budget, not batch_size, decides the rows
    # a pure function of (seed, epoch): a second reader gives the same batches
    again = _reader(vocab_file, intent_slot_dir, max_tokens=40)
    assert all(np.array_equal(a, b) for a, b in zip(reader._epoch_batches(1), again._epoch_batches(1)))
    assert reader.steps_per_epoch == len(reader._epoch_batches(0))


def test_token_budget_without_grouping_cuts_in_order(vocab_file, intent_slot_dir):
    reader = _reader(vocab_file, intent_slot_dir, max_tokens=30, group_by_length=False, shuffle=False)
    batches = reader._epoch_batches(0)
    assert np.concatenate(batches).tolist() == list(range(reader.num_examples))
    assert all(_padded(reader, b) <= 30 for b in batches if len(b) > 1)


def test_token_budget_batches_resume_at_their_position(vocab_file, intent_slot_dir):
    reader = _reader(vocab_file, intent_slot_dir, max_tokens=40)
    stream = reader.batches()
    drawn = [next(stream)["input_ids"] for _ in range(reader.steps_per_epoch + 3)]
    other = _reader(vocab_file, intent_slot_dir, max_tokens=40)
    other.load_state_dict({"epoch": 1, "position": 1})
    rest = other.batches()
    for expected in drawn[reader.steps_per_epoch + 1:]:
        assert next(rest)["input_ids"].equal(expected)


def test_budget_counts_real_batches_per_epoch(vocab_file, intent_slot_dir):
    trainer = joint_trainer(vocab_file, intent_slot_dir, num_epochs=2)
    reader = trainer.tasks[0].reader
    reader.load_data(intent_slot_dir / "train", batch_size=8, max_tokens=30)
    trainer._plan()
    assert reader.steps_per_epoch > reader.num_examples // 8
    assert trainer.tasks[0].budget == 2 * reader.steps_per_epoch


def test_pad_to_multiple_of_rounds_widths_and_eval_reader_keeps_it(vocab_file, intent_slot_dir):
    reader = _reader(vocab_file, intent_slot_dir, pad_to_multiple_of=8)
    batch = next(reader.batches())
    assert batch["input_ids"].shape[1] % 8 == 0
    assert batch["slot_ids"].shape == batch["attention_mask"].shape == batch["input_ids"].shape
    plain = next(_reader(vocab_file, intent_slot_dir).batches())
    assert batch["attention_mask"].sum() == plain["attention_mask"].sum()
    dev = reader.eval_reader(intent_slot_dir / "dev")
    assert next(dev.iter_once())["input_ids"].shape[1] % 8 == 0
    with pytest.raises(ValueError, match="max_tokens"):
        _reader(vocab_file, intent_slot_dir, max_tokens=0)


def test_config_sections_reach_load_data_and_the_trainer(vocab_file, intent_slot_dir, tmp_path):
    config = tiny_config(vocab_file, intent_slot_dir, str(tmp_path / "out"))
    config["tasks"][0].update(max_tokens=64, pad_to_multiple_of=16, cache_dir="features")
    config["trainer"]["compile"] = False
    run = build_run(load_config(write_yaml(tmp_path / "run.yaml", config)))
    reader = run.trainer.tasks[0].reader
    assert (reader.max_tokens, reader.pad_to_multiple_of, run.trainer.compile) == (64, 16, False)
    assert len(_entries(tmp_path / "features")) == 2  # train and dev, beside the config


@pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None,
                    reason="torch.compile (inductor) needs a C compiler")
def test_compiled_backbone_trains_and_keeps_parameter_names(vocab_file, intent_slot_dir):
    trainer = joint_trainer(vocab_file, intent_slot_dir, compile=True)
    trainer.tasks[0].reader.pad_to_multiple_of = 8
    names = sorted(trainer._ready_model().state_dict())
    assert not any("_orig_mod" in name for name in names)  # checkpoints stay those of the eager model
    result = trainer.train(print_steps=0, max_steps=3)
    assert result["steps"] == 3
    assert sorted(trainer.model.state_dict()) == names
    scores = trainer.evaluate()["joint"]  # the compiled backbone under inference_mode
    assert 0 <= scores["intent.accuracy"] <= 100


# ---- tokenized features cached per data file -----------------------------------------------------------
def _entries(cache):
    """The complete cache entries (folders with their entry.json) under `cache`."""
    return sorted(p.parent for p in cache.glob("*/entry.json"))


def _features(reader):
    return [(f.fields, f.meta) for f in reader.features]


def test_second_load_reads_the_cache_and_gives_the_same_features(vocab_file, intent_slot_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = mtl.reader.IntentSlotReader(vocab_file, 32).load_data(intent_slot_dir / "train", cache_dir=cache)
    entries = _entries(cache)
    assert len(entries) == 1
    reader = mtl.reader.IntentSlotReader(vocab_file, 32)
    monkeypatch.setattr(reader, "_featurize", lambda examples: pytest.fail("tokenized again despite the cache"))
    reader.load_data(intent_slot_dir / "train", cache_dir=cache)
    assert _features(reader) == _features(first)
    assert reader.label_names == first.label_names  # label maps built from the data are restored
    assert list(reader.tag_map.items()) == list(first.tag_map.items())  # in their order
    monkeypatch.undo()
    dev = reader.eval_reader(intent_slot_dir / "dev")  # its own entry, tokenized with the restored maps
    assert len(_entries(cache)) == 2 and dev.num_examples == 12


def test_a_changed_file_or_setting_never_reads_a_stale_entry(vocab_file, intent_slot_dir, tmp_path):
    cache = tmp_path / "cache"
    mtl.reader.IntentSlotReader(vocab_file, 32).load_data(intent_slot_dir / "train", cache_dir=cache)
    seq_in = intent_slot_dir / "train" / "seq.in"
    lines = seq_in.read_text(encoding="utf-8").splitlines()
    lines[0] = "book a flight from denver to boston"  # same length, same size: only the content differs
    seq_in.write_text("\n".join(lines) + "\n", encoding="utf-8")
    reader = mtl.reader.IntentSlotReader(vocab_file, 32).load_data(intent_slot_dir / "train", cache_dir=cache)
    assert "from denver to boston" in str(reader.features[0].meta)
    assert len(_entries(cache)) == 2
    stat = seq_in.stat()
    os.utime(seq_in, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: a new entry
    mtl.reader.IntentSlotReader(vocab_file, 32).load_data(intent_slot_dir / "train", cache_dir=cache)
    assert len(_entries(cache)) == 3
    mtl.reader.IntentSlotReader(vocab_file, 16).load_data(intent_slot_dir / "train", cache_dir=cache)
    assert len(_entries(cache)) == 4  # another max_seqlen: another entry


def test_a_corrupt_entry_is_ignored(vocab_file, intent_slot_dir, tmp_path):
    cache = tmp_path / "cache"
    first = mtl.reader.IntentSlotReader(vocab_file, 32).load_data(intent_slot_dir / "train", cache_dir=cache)
    entry = _entries(cache)[0]
    (entry / "entry.json").write_text("{not json", encoding="utf-8")
    again = mtl.reader.IntentSlotReader(vocab_file, 32).load_data(intent_slot_dir / "train", cache_dir=cache)
    assert _features(again) == _features(first)


def test_a_reader_json_cannot_describe_is_not_cached(vocab_file, intent_slot_dir, tmp_path):
    reader = mtl.reader.IntentSlotReader(vocab_file, 32)
    reader.extra_setting = (1, 2)  # a tuple: JSON would give back a list
    reader.load_data(intent_slot_dir / "train", cache_dir=tmp_path / "cache")
    assert reader.num_examples == 24 and not _entries(tmp_path / "cache")
