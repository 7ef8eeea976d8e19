"""Word and sub-token helpers shared by readers and heads (neither imports the other)."""


def words_from_token_predictions(word_starts: list[int], kept_predictions: list, fill: object) -> list:
    """Per-word predictions from those at first sub-tokens (in order); dropped words get `fill`."""
    predictions = iter(kept_predictions)
    return [next(predictions) if start >= 0 else fill for start in word_starts]


def word_char_offsets(text: str, words: list[str]) -> list[tuple[int, int]] | None:
    """Character span [start, end) of each word in `text`, found in order; None when the words are not the
    text's own (a reader that normalised them), so no offset is ever guessed."""
    offsets, cursor = [], 0
    for word in words:
        start = text.find(word, cursor)
        if start < 0:
            return None
        cursor = start + len(word)
        offsets.append((start, cursor))
    return offsets
