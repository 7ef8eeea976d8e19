"""Streaming readers (Reader.load_stream): every line once per pass, a bounded buffer, seeded shuffles, exact
resume (mid-pass and across passes, MLM masks included), per-rank lines, the trainer's step budgets, errors."""
import pytest
import torch

import mtl
from conftest import INTENTS, SLOT_TAGS, UTTERANCES, tiny_bert, write_classify_tsv, write_sequence_tsv
from mtl.components.readers.stream import shard_files

WORDS = ["book", "a", "flight", "to", "boston", "play", "some", "music", "from", "denver"]


def corpus_lines(count: int) -> list[str]:
    return [" ".join(WORDS[(i + k) % len(WORDS)] for k in range(1 + i % 7)) for i in range(count)]


@pytest.fixture
def shards(tmp_path):
    """Three shards of 40 lines each, with blank lines and a BOM at the start of one."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    lines = corpus_lines(120)
    for shard in range(3):
        part = lines[40 * shard:40 * (shard + 1)]
        text = "\n".join(part[:10] + [""] + part[10:]) + "\n"
        (folder / f"part-{shard}.txt").write_bytes((b"\xef\xbb\xbf" if shard == 1 else b"") + text.encode())
    return folder, lines


def mlm(vocab_file, path, batch_size=8, buffer=32, chunk=16, seed=3):
    reader = mtl.reader.MaskLMReader(vocab_file, max_seqlen=16, seed=seed)
    return reader.load_stream(path, steps_per_epoch=10, batch_size=batch_size, shuffle_buffer=buffer,
                              chunk_lines=chunk)


def draw(reader, count):
    stream = reader.batches()
    return [next(stream) for _ in range(count)]


def texts_of(batches):
    return [meta["text"] for batch in batches for meta in batch["meta"]]


def test_a_pass_reads_every_line_once_in_shuffled_batches_within_a_bounded_buffer(vocab_file, shards):
    folder, lines = shards
    reader = mlm(vocab_file, folder)
    seen, sizes, buffered = [], [], []
    for batch in reader.batches():
        if reader.epoch > 0:
            break
        seen += [meta["text"] for meta in batch["meta"]]
        sizes.append(len(batch["meta"]))
        buffered.append(len(reader._stream.buffer))
    assert sorted(seen) == sorted(lines)  # blank lines skipped, the BOM dropped, nothing twice
    assert seen != lines  # shuffled
    assert set(sizes[:-1]) == {8} and max(buffered) <= 32 + 16
    again = texts_of(draw(mlm(vocab_file, folder), 15))  # same seed, same batches
    assert again == seen
    assert texts_of(draw(mlm(vocab_file, folder, seed=4), 15)) != seen


@pytest.mark.parametrize("stop", [3, 15, 17])  # inside the first pass, at its last batch, inside the second
def test_resume_gives_the_batches_and_masks_of_the_run_that_never_stopped(vocab_file, shards, stop):
    folder, _ = shards
    reference = draw(mlm(vocab_file, folder), stop + 6)
    first = mlm(vocab_file, folder)
    draw(first, stop)
    state = first.state_dict()
    buffer = state["stream"]["buffer"]  # a checkpoint holds positions, not text
    assert buffer.dtype == torch.long and buffer.shape[1] == 5
    resumed = mlm(vocab_file, folder)
    resumed.load_state_dict(state)
    for expected, got in zip(reference[stop:], draw(resumed, 6)):
        assert expected.keys() == got.keys()
        for key in expected:
            if isinstance(expected[key], torch.Tensor):
                assert torch.equal(expected[key], got[key]), key
        assert [m["text"] for m in expected["meta"]] == [m["text"] for m in got["meta"]]


def test_resume_refuses_a_changed_file_and_another_kind_of_reader(vocab_file, tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(corpus_lines(50)) + "\n", encoding="utf-8")
    first = mlm(vocab_file, path)
    draw(first, 2)
    state = first.state_dict()
    path.write_text("\n".join(reversed(corpus_lines(50))) + "\n", encoding="utf-8")
    with pytest.raises(mtl.MtlError, match="changed since the checkpoint"):
        mlm(vocab_file, path).load_state_dict(state)
    loaded = mtl.reader.MaskLMReader(vocab_file, max_seqlen=16).load_data(path)
    with pytest.raises(mtl.MtlError, match="streamed"):
        loaded.load_state_dict(state)


def test_each_rank_reads_its_own_lines(vocab_file, shards):
    folder, lines = shards
    per_rank = []
    for rank in (0, 1):
        reader = mlm(vocab_file, folder, batch_size=8)
        texts = []
        for parts in reader.sharded_batches(rank, 2, micro_batches=2):
            if reader.epoch > 0:
                break
            assert len(parts) == 2 and sum(len(p.batch["meta"]) for p in parts) <= 4  # its half of 8 rows
            texts += [m["text"] for p in parts for m in p.batch["meta"]]
        per_rank.append(texts)
    assert sorted(per_rank[0] + per_rank[1]) == sorted(lines) and not set(per_rank[0]) & set(per_rank[1]) - \
        {t for t in lines if lines.count(t) > 1}


def test_a_streamed_task_trains_for_its_step_budget_and_resumes_to_the_same_weights(vocab_file, classify_rows,
                                                                                      tmp_path):
    data = write_classify_tsv(tmp_path / "train.tsv", classify_rows * 5)

    def trainer(init_seed=0):
        torch.manual_seed(init_seed)
        reader = mtl.reader.ClassifyReader(vocab_file, 32, label_map=[str(i) for i in range(len(INTENTS))])
        reader.load_stream(data, steps_per_epoch=6, batch_size=4, shuffle_buffer=10, chunk_lines=7)
        encoder = tiny_bert()
        task = mtl.Trainer("cls", reader=reader, head=mtl.head.Classify(len(INTENTS), encoder.hidden_size, 0.0))
        return mtl.MultiHeadTrainer([task], backbone=encoder, lr=5e-3, num_epochs=2, precision="fp32", seed=1)

    full = trainer()
    full.train(print_steps=0)
    assert full.global_step == full.total_steps == 12  # 2 epochs of 6 steps: the size is never counted
    first = trainer()
    first.set_saver(tmp_path / "run")
    first.train(print_steps=0, max_steps=5)
    resumed = trainer(init_seed=7)
    resumed.set_saver(tmp_path / "run")
    resumed.train(print_steps=0, resume_from=tmp_path / "run" / "step-5")
    full_state, resumed_state = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(full_state[k], resumed_state[k]) for k in full_state)


def test_stream_errors_name_the_file_and_line(vocab_file, tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("label\ttext_a\n0\tbook a flight\n1 play music\n", encoding="utf-8")
    reader = mtl.reader.ClassifyReader(vocab_file, 32, label_map=["a", "b"])
    with pytest.raises(mtl.DataError, match=r"bad\.tsv, line 3: expected 2 tab-separated columns"):
        draw(reader.load_stream(bad, steps_per_epoch=1, batch_size=2), 1)
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"book a flight\ncaf\xe9 to boston\n")
    with pytest.raises(mtl.DataError, match=r"latin\.txt, line 2: invalid UTF-8"):
        draw(mlm(vocab_file, latin), 1)
    with pytest.raises(mtl.MtlError, match="label_map='auto'"):
        draw(mtl.reader.ClassifyReader(vocab_file, 32, label_map="auto").load_stream(bad, 1), 1)
    with pytest.raises(mtl.MtlError, match="cannot stream"):
        draw(mtl.reader.MRCReader(vocab_file, 128).load_stream(bad, 1), 1)
    header_only = tmp_path / "header.tsv"
    header_only.write_text("label\ttext_a\n\n", encoding="utf-8")
    with pytest.raises(mtl.DataError, match=r"header\.tsv: no example in the data"):
        draw(mtl.reader.ClassifyReader(vocab_file, 32, label_map=["a"]).load_stream(header_only, 1), 1)
    with pytest.raises(mtl.DataError, match="no such file or folder"):
        shard_files(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(mtl.DataError, match="holds no file"):
        shard_files(tmp_path / "empty")


def test_out_of_range_label_ids_are_caught_as_the_stream_reads(vocab_file, tmp_path):
    data = write_classify_tsv(tmp_path / "train.tsv", [(0, "book a flight"), (7, "play music")])
    reader = mtl.reader.ClassifyReader(vocab_file, 32).load_stream(data, steps_per_epoch=1, batch_size=2)
    reader.check_num_classes("label_ids", 2)
    with pytest.raises(mtl.DataError, match=r"train\.tsv, line 3: label_ids 7 is out of range"):
        draw(reader, 1)


def test_a_config_streams_its_training_data(vocab_file, classify_rows, tmp_path):
    from mtl.config import build_run, validate_config
    from mtl.errors import ConfigError
    from tiny_runs import TINY_CONFIG
    data = write_classify_tsv(tmp_path / "train.tsv", classify_rows * 3)
    config = {
        "backbone": {"_component_": "mtl.backbone.BERT.from_config", "config": dict(TINY_CONFIG)},
        "tasks": [{"name": "cls", "train_data": str(data), "batch_size": 4,
                   "stream": {"steps_per_epoch": 3, "shuffle_buffer": 8, "chunk_lines": 5},
                   "reader": {"_component_": "mtl.reader.ClassifyReader", "vocab_path": str(vocab_file),
                              "max_seqlen": 32, "label_map": [str(i) for i in range(len(INTENTS))]},
                   "head": {"_component_": "mtl.head.Classify", "num_classes": "auto", "input_dim": "auto"}}],
        "trainer": {"lr": 3e-3, "num_epochs": 2, "precision": "fp32"},
        "saver": {"save_path": str(tmp_path / "out")},
    }
    run = build_run(validate_config(config, tmp_path))
    assert run.trainer.tasks[0].reader.streaming
    run.trainer.train(print_steps=0)
    assert run.trainer.global_step == 6
    config["tasks"][0]["stream"] = {"steps_per_epoch": 3, "bufer": 8, "batch_size": 2}
    with pytest.raises(ConfigError) as error:
        validate_config(config, tmp_path)
    assert "tasks[0].stream.bufer: unknown key" in str(error.value)
    assert "tasks[0].stream.batch_size: is not a config key" in str(error.value)


def test_tagging_and_matching_files_stream_too(vocab_file, tmp_path):
    """PALM's sequence-labelling and pointwise matching TSVs stream like classification (same features as
    load_data gives, in another order)."""
    tagged = write_sequence_tsv(tmp_path / "tags.tsv", [(text, tags) for text, tags, _ in UTTERANCES])
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("label\ttext_a\ttext_b\n" + "".join(f"{i % 2}\t{a}\t{b}\n" for i, (a, _, _) in
                                                          enumerate(UTTERANCES) for b in [UTTERANCES[-i][0]]))
    for make, path in ((lambda: mtl.reader.SequenceLabelReader(vocab_file, 32, label_map=SLOT_TAGS), tagged),
                       (lambda: mtl.reader.MatchReader(vocab_file, 32, label_map=["0", "1"]), pairs)):
        loaded = make().load_data(path, batch_size=len(UTTERANCES))
        streamed = make().load_stream(path, steps_per_epoch=1, batch_size=len(UTTERANCES))
        batch = next(streamed.batches())
        by_line = {m["line"]: i for i, m in enumerate(batch["meta"])}
        assert sorted(by_line) == [f.meta["line"] for f in loaded.features]
        for feature in loaded.features:
            row = by_line[feature.meta["line"]]
            assert batch["input_ids"][row][:len(feature.fields["input_ids"])].tolist() == feature.fields["input_ids"]
    with pytest.raises(mtl.MtlError, match="label_map='auto'"):
        draw(mtl.reader.SequenceLabelReader(vocab_file, 32, label_map="auto").load_stream(tagged, 1), 1)
