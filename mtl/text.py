"""Word and sub-token helpers shared by readers and heads (neither imports the other)."""


def words_from_token_predictions(word_starts: list[int], kept_predictions: list, fill: object) -> list:
    """Per-word predictions from those at first sub-tokens (in order); dropped words get `fill`."""
    predictions = iter(kept_predictions)
    return [next(predictions) if start >= 0 else fill for start in word_starts]
