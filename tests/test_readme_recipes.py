"""README's code runs as written: the D-Net recipe (MRC + auxiliary masked LM) on a tiny random model."""
import re
import shutil
from pathlib import Path

import mtl
from conftest import WORDS, tiny_bert
from test_mrc import CONTEXT, squad_file, word_span

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(after: str) -> str:
    """The first ```python block after the line holding `after`."""
    text = README.read_text(encoding="utf-8")
    return re.search(r"```python\n(.*?)```", text[text.index(after):], re.S).group(1)


def test_the_dnet_recipe_runs_as_written(vocab_file, tmp_path, monkeypatch):
    model_dir = tmp_path / "model"
    tiny_bert().save(model_dir)
    shutil.copy(vocab_file, model_dir / "vocab.txt")
    items = [(str(i), WORDS[i], CONTEXT, word_span(i, i + 1)) for i in range(6)]
    for name in ("train.json", "dev.json"):
        squad_file(tmp_path / name, items)
    monkeypatch.chdir(tmp_path)
    namespace = {"mtl": mtl, "model_dir": str(model_dir)}
    exec(readme_block("PALM's recipe for reading comprehension"), namespace)
    mrc, mlm = namespace["mrc"], namespace["mlm"]
    assert mlm.is_aux and mrc.cur_train_step == mrc.budget > 0  # the reference task used its budget
    assert mlm.cur_train_step > 0  # the auxiliary task was drawn and trained
