"""Every example script that trains takes a short-run option; the MRC + MLM example's `--quick` path runs end to
end on a tiny random encoder and a tiny SQuAD-shaped file (the real one needs MiniLM and SQuAD)."""
import ast
import json
import shutil
import sys
from pathlib import Path

import pytest

from conftest import WORDS, tiny_bert

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TRAINING = sorted(p for p in EXAMPLES.glob("*/*.py") if ".train(" in p.read_text(encoding="utf-8")
                  and p.name != "multilabel.py")


def options(script: Path) -> set[str]:
    """The options a script reads (from its source, nothing imported): argparse's `add_argument("--x")`, or a
    plain `"--x" in sys.argv` test (PALM's script keeps PALM's positional arguments)."""
    found = set()
    for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            found |= {arg.value for arg in node.args if isinstance(arg, ast.Constant) and str(arg.value).startswith("--")}
        elif isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant) and \
                str(node.left.value).startswith("--"):
            found.add(node.left.value)
    return found


def test_there_are_training_examples_to_check():
    names = {p.relative_to(EXAMPLES).as_posix() for p in TRAINING}
    assert {"mrc_with_mlm/mrc_with_mlm.py", "quickstart/quickstart.py", "ner/ner.py"} <= names


@pytest.mark.parametrize("script", TRAINING, ids=lambda p: p.relative_to(EXAMPLES).as_posix())
def test_every_training_example_takes_a_short_run_option(script):
    assert "--quick" in options(script), f"{script.name} has no --quick"


def squad_articles(path: Path, articles: int = 40, questions: int = 2) -> Path:
    """SQuAD v1.1 shaped: `articles` articles (more than the 32 split_squad.py's pool needs), one paragraph of
    in-vocabulary words each, `questions` questions answered by a word of it."""
    context = " ".join(WORDS[:30])
    data = []
    for a in range(articles):
        qas = []
        for q in range(questions):
            index = (a + q) % 30
            start = len(" ".join(WORDS[:index])) + (1 if index else 0)
            qas.append({"id": f"a{a}q{q}", "question": f"what is {WORDS[index]}",
                        "answers": [{"text": WORDS[index], "answer_start": start}]})
        data.append({"title": f"article {a}", "paragraphs": [{"context": context, "qas": qas}]})
    path.write_text(json.dumps({"version": "1.1", "data": data}), encoding="utf-8")
    return path


def test_the_mrc_example_runs_its_quick_path(vocab_file, tmp_path, monkeypatch):
    model_dir = tmp_path / "model"
    tiny_bert(max_position_embeddings=256).save(model_dir)
    shutil.copy(vocab_file, model_dir / "vocab.txt")
    monkeypatch.syspath_prepend(str(EXAMPLES / "mrc_with_mlm"))
    monkeypatch.delitem(sys.modules, "mrc_with_mlm", raising=False)
    import mrc_with_mlm
    squad = squad_articles(tmp_path / "squad.json")
    result = mrc_with_mlm.main(["--quick", "--threads", "1", "--model", str(model_dir), "--squad", str(squad),
                                "--output", str(tmp_path / "out")])
    quick = mrc_with_mlm.QUICK
    assert result["split"]["train"]["questions"] == min(quick["train"], 29 * 2)  # the pool's first 29 articles
    assert result["split"]["eval"]["questions"] == min(quick["eval"], 8 * 2)
    assert result["steps"]["mrc"] > 0 and result["steps"]["mlm"] > 0 and 0 <= result["f1"] <= 100
    predictions = json.loads((tmp_path / "out" / "predictions" / "mlm1-train-quick_seed1.json").read_text())
    assert len(predictions) == result["split"]["eval"]["questions"]
