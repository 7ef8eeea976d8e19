"""A fixed split of SQuAD v1.1 dev BY ARTICLE (only dev is available offline): train on some articles,
evaluate on others, so no evaluated paragraph was ever seen in training.

The 48 articles in file order: the first 36 are the train articles, the last 12 the eval articles. Within each
article, the first `per_article` questions in file order are kept (all of them with `per_article=None`),
together with only the paragraphs that hold them. Deterministic: the same files on every run.

    python examples/mrc_with_mlm/split_squad.py ../shared/data/squad_v1.1/dev-v1.1.json outputs/mrc_with_mlm/data
"""
import json
import sys
from pathlib import Path

TRAIN_ARTICLES = 36


def first_questions(article: dict, limit: int | None) -> dict:
    """The article with its first `limit` questions (file order) and the paragraphs that hold them."""
    paragraphs, left = [], limit
    for paragraph in article["paragraphs"]:
        if left is not None and left <= 0:
            break
        qas = paragraph["qas"] if left is None else paragraph["qas"][:left]
        if qas:
            paragraphs.append({**paragraph, "qas": qas})
            left = None if left is None else left - len(qas)
    return {**article, "paragraphs": paragraphs}


def split(source: str | Path, folder: str | Path, train_per_article: int | None = None,
          eval_per_article: int | None = None) -> tuple[Path, Path]:
    """Write `train.json` (first 36 articles) and `eval.json` (last 12) into `folder`; returns their paths."""
    root = json.loads(Path(source).read_text(encoding="utf-8"))
    articles = root["data"]
    if len(articles) <= TRAIN_ARTICLES:
        raise ValueError(f"{source}: {len(articles)} articles, expected SQuAD v1.1 dev (48 articles)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    parts = {"train.json": [first_questions(a, train_per_article) for a in articles[:TRAIN_ARTICLES]],
             "eval.json": [first_questions(a, eval_per_article) for a in articles[TRAIN_ARTICLES:]]}
    for name, part in parts.items():
        body = {"version": root.get("version", "1.1"), "data": part}
        (folder / name).write_text(json.dumps(body, ensure_ascii=False) + "\n", encoding="utf-8")
    return folder / "train.json", folder / "eval.json"


def count_questions(path: str | Path) -> int:
    data = json.loads(Path(path).read_text(encoding="utf-8"))["data"]
    return sum(len(p["qas"]) for a in data for p in a["paragraphs"])


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    train, evaluation = split(sys.argv[1], sys.argv[2])
    print(f"{train}: {count_questions(train)} questions; {evaluation}: {count_questions(evaluation)} questions")
