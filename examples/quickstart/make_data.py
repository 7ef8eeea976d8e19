"""Generate the tiny intent-detection + slot-filling data set used by the quick start.

Why this exists: the quick start should train a joint intent/slot model in a few
seconds with no downloads, no licences to accept and no network access. So we
ship a small, self-made "personal assistant" data set, built from templates
with a fixed seed, so that running this script always writes the same files.

The layout is the ATIS/SNIPS folder format used by JointBERT:

    data/{train,dev,test}/seq.in   one lowercase utterance per line, tokens split by single spaces
    data/{train,dev,test}/seq.out  one BIO tag per token, e.g. "O O B-to_city I-to_city"
    data/{train,dev,test}/label    the intent of the same line

Dev and test never repeat a train utterance verbatim.

Usage:  python examples/quickstart/make_data.py
"""

import random
from pathlib import Path

SEED = 13
SPLITS = {"train": 420, "dev": 60, "test": 60}
OUT_DIR = Path(__file__).resolve().parent / "data"

CITIES = ["new york", "san francisco", "london", "paris", "los angeles", "tokyo", "chicago",
          "boston", "new delhi", "rio de janeiro", "hong kong", "berlin", "seattle", "las vegas"]

FILLERS = {
    "from_city": CITIES,
    "to_city": CITIES,
    "city": CITIES,
    "date": ["today", "tomorrow", "this friday", "next friday", "this weekend",
             "the day after tomorrow", "next monday", "this saturday", "next week",
             "this thursday", "next wednesday", "sunday"],
    "time": ["7 am", "6:30 pm", "noon", "midnight", "half past seven", "quarter to eight", "9 pm",
             "10:15 am", "5:45 am", "eight thirty", "6 in the morning", "8 in the evening"],
    "artist": ["the beatles", "taylor swift", "pink floyd", "miles davis", "daft punk", "adele",
               "the rolling stones", "bob marley", "billie eilish", "queen", "fleetwood mac",
               "ella fitzgerald"],
    "song": ["bohemian rhapsody", "hey jude", "let it be", "shake it off", "get lucky",
             "hotel california", "imagine", "wonderwall", "purple rain", "billie jean",
             "dancing queen", "yesterday"],
    "playlist": ["workout mix", "road trip", "chill vibes", "morning coffee", "throwback hits",
                 "study focus", "party anthems", "sunday jazz", "running", "my favorites",
                 "late night drive", "summer hits"],
    "cuisine": ["italian", "chinese", "thai", "mexican", "indian", "japanese", "french", "korean",
                "greek", "vietnamese", "spanish", "middle eastern"],
    "party_size": ["two", "three", "four", "five", "six", "seven", "eight", "ten", "twelve",
                   "2", "4", "6"],
    "movie_name": ["the matrix", "inception", "toy story", "star wars", "the godfather",
                   "jurassic park", "frozen", "the lion king", "back to the future",
                   "finding nemo", "titanic", "pulp fiction"],
}

# An optional opener (tagged O) adds variety, above all to the few slot-less phrases.
OPENERS = ["", "", "", "", "hey", "okay", "hi there", "excuse me", "quick question"]

# Placeholders are whole tokens written as {slot}; every other token is tagged O.
TEMPLATES = {
    "book_flight": [
        "book a flight from {from_city} to {to_city}",
        "i need a flight to {to_city} {date}",
        "find me flights from {from_city} to {to_city} {date}",
        "are there any flights leaving {from_city} {date} at {time}",
        "i want to fly to {to_city} from {from_city}",
        "get me a ticket to {to_city} {date}",
        "show me the cheapest flight from {from_city} to {to_city} {date}",
        "i would like to book a flight",
        "what flights are available",
    ],
    "get_weather": [
        "what is the weather in {city}",
        "will it rain in {city} {date}",
        "what is the forecast for {date}",
        "how hot will it be in {city} {date}",
        "do i need an umbrella {date}",
        "tell me the weather in {city} at {time}",
        "is it going to snow in {city}",
        "what is the weather like outside",
        "is it cold outside",
        "give me the weather report",
    ],
    "play_music": [
        "play {song} by {artist}",
        "play some {artist}",
        "i want to hear {song}",
        "put on {song}",
        "can you play something by {artist}",
        "play the song {song}",
        "start my music",
        "play some music",
        "shuffle my songs",
    ],
    "set_alarm": [
        "set an alarm for {time}",
        "wake me up at {time} {date}",
        "set an alarm for {date} at {time}",
        "i need an alarm at {time}",
        "please wake me at {time}",
        "remind me to wake up {date} at {time}",
        "set an alarm",
        "turn on my morning alarm",
    ],
    "book_restaurant": [
        "book a table for {party_size} at a good {cuisine} restaurant",
        "find {cuisine} restaurants in {city}",
        "reserve a table for {party_size} people {date} at {time}",
        "i want to eat {cuisine} food in {city} {date}",
        "find a nice {cuisine} place for {party_size} at {time}",
        "get me a table for {party_size} in {city} {date}",
        "book me a table at a restaurant",
        "i am hungry find somewhere to eat",
    ],
    "add_to_playlist": [
        "add {song} to my {playlist} playlist",
        "put this song on {playlist}",
        "add {song} by {artist} to {playlist}",
        "save {song} to my {playlist} list",
        "add some {artist} to the {playlist} playlist",
        "include {song} in {playlist}",
        "add this song to my playlist",
        "save the current track",
    ],
    "find_movie": [
        "when is {movie_name} playing in {city}",
        "find showtimes for {movie_name} {date}",
        "is {movie_name} showing anywhere near me",
        "i want to watch {movie_name} {date} at {time}",
        "what movies are playing in {city} {date}",
        "where can i see {movie_name} in {city}",
        "find me a movie to watch",
        "what is on at the cinema",
    ],
}


def fill(template, rng):
    """Turn a template into (tokens, tags), drawing a random value for each slot.

    A value is never used twice in one utterance (no flights from london to london).
    """
    tokens, tags, used = [], [], set()
    for word in template.split():
        if word.startswith("{"):
            slot = word[1:-1]
            value = rng.choice([v for v in FILLERS[slot] if v not in used])
            used.add(value)
            value = value.split()
            tokens += value
            tags += [f"B-{slot}"] + [f"I-{slot}"] * (len(value) - 1)
        else:
            tokens.append(word)
            tags.append("O")
    return tokens, tags


def generate(n, rng, seen):
    """n new utterances not in `seen`; intents taken in turn, so each split is balanced."""
    intents, rows = list(TEMPLATES), []
    while len(rows) < n:
        intent = intents[len(rows) % len(intents)]
        template = f"{rng.choice(OPENERS)} {rng.choice(TEMPLATES[intent])}"
        tokens, tags = fill(template, rng)
        text = " ".join(tokens)
        if text not in seen:  # shared across splits: dev/test never repeat train
            seen.add(text)
            rows.append((text, " ".join(tags), intent))
    rng.shuffle(rows)
    return rows


def main():
    rng = random.Random(SEED)
    seen = set()
    for split, size in SPLITS.items():
        part = generate(size, rng, seen)
        folder = OUT_DIR / split
        folder.mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(["seq.in", "seq.out", "label"]):
            (folder / name).write_text("".join(row[i] + "\n" for row in part), encoding="utf-8")
        print(f"{split}: {len(part)} utterances -> {folder.relative_to(OUT_DIR.parent)}")


if __name__ == "__main__":
    main()
