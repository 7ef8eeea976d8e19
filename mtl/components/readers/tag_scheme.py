"""Do the tags look like tags? The guard for tag maps built from the data (`label_map="auto"`).

A map built from whatever the tag column holds lets a file with swapped columns (`TAG word` read as
`word TAG`), or a `tag_column` pointing at the wrong column, train without a word of complaint: the model
learns to predict thousands of "tags" that are words, and the only clues are a huge label map and a flood of
unseen dev tags. The usual tagging schemes (BIO/IOB2, BIOES/BILOU, IO) write `O` or a one-letter prefix and a
type (`B-PER`, `I-fromloc.city_name`, `S-LOC`); anything else, or more distinct tags than any real tag set
has, stops the run with the file, the column and a few of the values it found.
"""
import re

from mtl.errors import DataError

SCHEME_TAG = re.compile(r"^(?:O|[BIESLU]-\S+)$")
SCHEMES = "BIO/IOB2, BIOES/BILOU or IO: `O`, `B-PER`, `I-PER`, ..."
MAX_TAGS = 1000  # CoNLL-2003 has 9 tags, OntoNotes 37, ATIS about 120: a thousand is words, not tags
SHOWN = 4


def check_tag_scheme(examples: list[dict], path: str, column: str, fix: str) -> None:
    """DataError unless the tags of `examples` ({"words", "tags", "line"}, optionally per-token "tag_lines")
    fit a tagging scheme and are few enough to be a tag set. `column` says where the tags were read (for
    the message); `fix` how to point the reader at the right column."""
    odd: dict[str, int] = {}  # a tag outside the schemes -> the first line it is on
    tags: set[str] = set()
    word_tokens = tag_like_words = 0
    for example in examples:
        lines = example.get("tag_lines") or [example["line"]] * len(example["tags"])
        for tag, line in zip(example["tags"], lines):
            tags.add(tag)
            if tag not in odd and not SCHEME_TAG.match(tag):
                odd[tag] = line
        word_tokens += len(example["words"])
        tag_like_words += sum(1 for word in example["words"] if SCHEME_TAG.match(word))
    if not odd and len(tags) <= MAX_TAGS:
        return
    found = ", ".join(f"{tag!r} (line {line})" for tag, line in list(odd.items())[:SHOWN])
    problem = (f"{column}: {len(odd)} of {len(tags)} distinct tags fit no tagging scheme ({SCHEMES}), e.g. {found}"
               if odd else f"{column}: {len(tags)} distinct tags, more than any tag set has")
    words_look_like_tags = word_tokens and tag_like_words * 2 >= word_tokens
    problem += "; the columns look swapped" + (": the words look like tags" if words_look_like_tags else
                                               " (or the tag column is the wrong one)")
    first = min(odd.values()) if odd else None
    raise DataError(path, first, problem, fix + "; a tag set outside these schemes needs an explicit label_map, "
                    "a JSON file or list, which skips this check")
