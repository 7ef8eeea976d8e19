"""A fixed split of SQuAD v1.1 dev BY ARTICLE (only dev is available offline), so that no evaluated paragraph
is ever seen in training, and the whole file is used.

The 48 articles in file order: the first 32 (two thirds) are the training pool, of which the last
`DEV_ARTICLES` are held out as the dev slice for model selection; the last 16 articles are the eval articles,
scored once. Every question of an article is kept. Deterministic: the same files on every run.

    python examples/mrc_with_mlm/split_squad.py ../shared/data/squad_v1.1/dev-v1.1.json outputs/mrc_with_mlm/data
"""
import json
import sys
from pathlib import Path

POOL_ARTICLES = 32  # the first two thirds of the 48 articles
DEV_ARTICLES = 3    # the last articles of the pool: the dev slice
PARTS = ("train", "dev", "eval")


def split(source: str | Path, folder: str | Path) -> dict[str, Path]:
    """Write train.json, dev.json and eval.json into `folder`; returns {part: path}."""
    root = json.loads(Path(source).read_text(encoding="utf-8"))
    articles = root["data"]
    if len(articles) <= POOL_ARTICLES:
        raise ValueError(f"{source}: {len(articles)} articles, expected SQuAD v1.1 dev (48 articles)")
    cut = POOL_ARTICLES - DEV_ARTICLES
    parts = {"train": articles[:cut], "dev": articles[cut:POOL_ARTICLES], "eval": articles[POOL_ARTICLES:]}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        body = {"version": root.get("version", "1.1"), "data": part}
        (folder / f"{name}.json").write_text(json.dumps(body, ensure_ascii=False) + "\n", encoding="utf-8")
    return {name: folder / f"{name}.json" for name in PARTS}


def first_questions(source: str | Path, count: int, target: str | Path) -> Path:
    """Write to `target` a SQuAD file holding the first `count` questions of `source`, in its article and
    paragraph structure (a short run's data: the same questions on every run); returns `target`."""
    root = json.loads(Path(source).read_text(encoding="utf-8"))
    left, articles = count, []
    for article in root["data"]:
        paragraphs = []
        for paragraph in article["paragraphs"]:
            if left > 0:
                qas = paragraph["qas"][:left]
                left -= len(qas)
                paragraphs.append({**paragraph, "qas": qas})
        if paragraphs:
            articles.append({**article, "paragraphs": paragraphs})
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"version": root.get("version", "1.1"), "data": articles}, ensure_ascii=False) + "\n",
                      encoding="utf-8")
    return target


def describe(paths: dict[str, Path]) -> dict[str, dict]:
    """Articles (titles) and questions of each part: what a results file records as the exact split."""
    out = {}
    for name, path in paths.items():
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
        out[name] = {"articles": [a["title"] for a in data],
                     "questions": sum(len(p["qas"]) for a in data for p in a["paragraphs"]),
                     "paragraphs": sum(len(a["paragraphs"]) for a in data)}
    return out


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    for part, info in describe(split(sys.argv[1], sys.argv[2])).items():
        print(f"{part}: {len(info['articles'])} articles, {info['paragraphs']} paragraphs, {info['questions']} questions")
