"""Fixtures: tiny random models with distinct odd sizes (vocab 99, hidden 32, 2 layers, 4 heads,
intermediate 37) so a wrong shape fails loudly, and a tiny intent/slot corpus written per test."""
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import mtl  # noqa: E402

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["book", "a", "flight", "from", "to", "boston", "denver", "new", "york", "tomorrow", "morning", "play",
         "some", "music", "by", "the", "beatles", "what", "is", "weather", "in", "today", "set", "an", "alarm",
         "for", "seven", "am", "show", "me", "flights", "on", "monday", "please", "song", "jazz", "rain",
         "will", "it", "at", "six", "pm", "cheap", "fly", "san", "francisco"]
PIECES = ["##ing", "##s", "##er", "##ed", "##y"]
TINY_CONFIG = {"model_type": "bert", "vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 2,
               "num_attention_heads": 4, "intermediate_size": 37, "max_position_embeddings": 64,
               "type_vocab_size": 2, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}

UTTERANCES = [
    ("book a flight from boston to denver", "O O O O B-from O B-to", "book_flight"),
    ("book a flight from new york to boston tomorrow", "O O O O B-from I-from O B-to B-date", "book_flight"),
    ("show me flights from denver to san francisco", "O O O O B-from O B-to I-to", "book_flight"),
    ("fly from san francisco to new york on monday", "O O B-from I-from O B-to I-to O B-date", "book_flight"),
    ("play some music by the beatles", "O O O O B-artist I-artist", "play_music"),
    ("play some jazz", "O O B-genre", "play_music"),
    ("play the song by the beatles please", "O O O O B-artist I-artist O", "play_music"),
    ("what is the weather in boston today", "O O O O O B-city B-date", "get_weather"),
    ("will it rain in denver tomorrow", "O O O O B-city B-date", "get_weather"),
    ("what is the weather in new york", "O O O O O B-city I-city", "get_weather"),
    ("set an alarm for seven am", "O O O O B-time I-time", "set_alarm"),
    ("set an alarm for six pm tomorrow", "O O O O B-time I-time B-date", "set_alarm"),
]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def vocab_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 99-token WordPiece vocab; unknown words become [UNK], words like 'booking' split in two."""
    tokens = SPECIAL + WORDS + PIECES
    tokens += [f"[unused{i}]" for i in range(99 - len(tokens))]
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


def tiny_bert(**overrides) -> "mtl.backbone.BERT":
    return mtl.backbone.BERT.from_config({**TINY_CONFIG, **overrides})


@pytest.fixture
def backbone() -> "mtl.backbone.BERT":
    return tiny_bert()


def write_intent_slot(folder: Path, rows: list[tuple[str, str, str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(("seq.in", "seq.out", "label")):
        (folder / name).write_text("".join(row[index] + "\n" for row in rows), encoding="utf-8")
    return folder


@pytest.fixture
def intent_slot_dir(tmp_path: Path) -> Path:
    """train/ and dev/ folders in the ATIS/SNIPS format."""
    write_intent_slot(tmp_path / "train", UTTERANCES * 2)
    write_intent_slot(tmp_path / "dev", UTTERANCES)
    return tmp_path


# ---- shared helpers (added with the fast suite) ---------------------------------------------------------
TINY_ROBERTA = {**TINY_CONFIG, "model_type": "roberta", "type_vocab_size": 1, "pad_token_id": 0,
                "max_position_embeddings": 66}


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread; several threads oversubscribe a small, busy machine
    (a hundredfold slowdown was measured with a benchmark running beside the tests). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("MTL_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(before)


def tiny_roberta(**overrides) -> "mtl.backbone.RoBERTa":
    return mtl.backbone.RoBERTa.from_config({**TINY_ROBERTA, **overrides})


def joint_heads(reader, use_crf: bool = False, dropout: float = 0.0) -> dict:
    """An intent head and a slot head over one IntentSlotReader (the joint mode)."""
    return mtl.head.intent_slot_heads(reader, 32, dropout, use_crf)


def joint_trainer(vocab: Path, data: Path, backbone=None, batch_size: int = 8, max_seqlen: int = 32,
                  use_crf: bool = False, **options) -> "mtl.MultiHeadTrainer":
    """A one-task joint intent+slot MultiHeadTrainer on `data`/train (dev reader on `data`/dev), fp32."""
    reader = mtl.reader.IntentSlotReader(vocab, max_seqlen).load_data(data / "train", batch_size=batch_size)
    task = mtl.Trainer("joint", reader=reader, head=joint_heads(reader, use_crf),
                       dev_reader=reader.eval_reader(data / "dev"))
    options = {"lr": 3e-3, "num_epochs": 1, "precision": "fp32", **options}
    return mtl.MultiHeadTrainer([task], backbone=backbone if backbone is not None else tiny_bert(), **options)


def write_classify_tsv(path: Path, rows: list[tuple[int, str]], header: bool = True) -> Path:
    """PALM's classification TSV: `label<TAB>text_a`, integer labels."""
    lines = (["label\ttext_a"] if header else []) + [f"{label}\t{text}" for label, text in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_sequence_tsv(path: Path, rows: list[tuple[str, str]]) -> Path:
    """PALM's sequence-labelling TSV: `text_a<TAB>label`, tokens and labels joined by \\x02."""
    lines = ["text_a\tlabel"] + ["\x02".join(text.split()) + "\t" + "\x02".join(tags.split()) for text, tags in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


INTENTS = sorted({row[2] for row in UTTERANCES})
SLOT_TAGS = ["O"] + sorted({tag for row in UTTERANCES for tag in row[1].split()} - {"O"})


@pytest.fixture
def classify_rows() -> list[tuple[int, str]]:
    """The utterances with integer intent ids (PALM's ClassifyReader format)."""
    return [(INTENTS.index(intent), text) for text, _, intent in UTTERANCES]
