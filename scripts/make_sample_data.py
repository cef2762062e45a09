#!/usr/bin/env python3
"""Generate the hftransfer quickstart sample dataset.

Writes ``hftransfer/sample_data/{train,validation,test}.csv`` (columns
``text,label``). Standard library only and fully deterministic: running it
again reproduces the files byte for byte.

Every sentence is built from a *neutral* sentence frame (shared by all four
classes) and one or two *topic phrases*. The topic phrases of each class are
split into three word-disjoint pools, one per split, so validation and test
talk about sports, food, weather and technology with words that never occur
in train. A pretrained sentence encoder already knows that "tennis" and
"football" are both sports and still generalises; a model trained from
scratch only sees train's surface words and cannot. See
``hftransfer/sample_data/README.md`` for the rationale.

All frames and word lists below were written for this project.

Usage::

    python scripts/make_sample_data.py [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import csv
import random
import re
import sys
from pathlib import Path

SEED = 20240611
LABELS = ("sports", "food", "weather", "technology")
ROWS_PER_CLASS = {"train": 100, "validation": 25, "test": 25}
SPLITS = tuple(ROWS_PER_CLASS)

# Neutral sentence frames, used identically for every class. ``{a}`` and
# ``{b}`` are filled with topic phrases of the same class. None of these words
# hints at a topic.
FRAMES = (
    "We spent most of the evening talking about {a}.",
    "My uncle has very strong opinions about {a}.",
    "There was a long article about {a} in the newspaper.",
    "Everyone at the office seemed to be discussing {a}.",
    "I finally learned something interesting about {a}.",
    "She told us a funny story about {a} and {b}.",
    "The conversation quickly turned to {a} and {b}.",
    "Honestly, I could talk about {a} for hours.",
    "Our teacher asked us to write a short essay about {a}.",
    "Last weekend was mostly about {a} and {b}.",
    "My friends and I argued about {a} until midnight.",
    "Grandma still remembers an old story about {a}.",
    "Nobody in my family really cares about {a}.",
    "I read a whole book about {a} last month.",
    "The neighbours were complaining about {a} again this morning.",
    "He asked me what I thought about {a} and {b}.",
    "The students had a lively debate about {a}.",
    "We heard a lot about {a} during the trip.",
    "My cousin is completely obsessed with {a}.",
    "I never expected to enjoy hearing about {a} so much.",
    "That documentary about {a} was surprisingly good.",
    "Let me tell you what happened with {a} yesterday.",
    "Everybody seems to have a favourite memory involving {a}.",
    "People in this town never stop mentioning {a} and {b}.",
    "The first thing she mentioned was {a}.",
    "Lately I have been reading a lot about {a}.",
    "My dad likes to grumble about {a} and {b}.",
    "It was strange how often {a} came up today.",
    "Please remind me to ask Sam about {a}.",
    "Two strangers on the bus were chatting about {a} and {b}.",
)

# Topic phrases: TOPICS[label][split]. Content words are disjoint across all
# twelve pools (checked in ``check_vocabulary``), so validation and test use
# topic words that never occur in train.
TOPICS = {
    "sports": {
        "train": [
            "the goalkeeper", "the stadium", "the striker", "the midfielder",
            "the league table", "the quarterback", "the championship",
            "the coach", "the team captain", "the batting lineup",
            "the pitcher", "the wicket", "the power forward",
            "a penalty kick", "a touchdown", "a hat trick",
            "football", "soccer", "basketball", "hockey", "baseball",
            "cricket", "rugby", "halftime", "slam dunks", "home runs",
            "playoffs", "free throws", "corner kicks", "hockey pucks",
        ],
        "validation": [
            "the shuttlecock", "the golfer", "the freestyle race",
            "the peloton", "the heavyweight bout", "the gymnast",
            "the balance beam", "the sprinter", "the velodrome",
            "the decathlon",
            "a birdie putt", "a javelin throw",
            "volleyball", "badminton", "golf", "swimming", "boxing",
            "wrestling", "hurdling", "gymnastics",
        ],
        "test": [
            "the marathon", "the referee", "the olympics", "the umpire",
            "the doubles final", "the karate tournament",
            "the medal ceremony", "the triathlon", "the athletes",
            "a pole vault", "a racquet",
            "tennis", "archery", "fencing", "judo", "rowing", "bobsleigh",
            "lacrosse", "weightlifting",
        ],
    },
    "food": {
        "train": [
            "the pizza", "the sandwich", "the soup", "the chocolate cake",
            "the lasagna", "the steak", "the dessert", "the recipe",
            "the chef", "the bakery", "the chicken curry",
            "the vanilla pudding", "the cheese",
            "an omelette", "a garden salad", "a roast dinner",
            "pasta", "burgers", "french fries", "fresh bread", "butter",
            "pancakes", "bacon", "rice", "noodles", "garlic", "tomatoes",
            "roast potatoes", "fried eggs", "peanut butter",
        ],
        "validation": [
            "the sushi", "the dumplings", "the ramen", "the lentil stew",
            "the meatballs", "the cookbook", "the pineapple",
            "the porridge",
            "a baguette", "a ripe mango",
            "tofu", "yogurt", "muffins", "waffles", "cinnamon rolls",
            "spaghetti", "cupcakes", "croissants",
        ],
        "test": [
            "the tacos", "the guacamole", "the paella", "the risotto",
            "the cherry pie", "the hummus", "the falafel",
            "the lemonade", "the peach crumble",
            "a burrito", "a kebab",
            "broccoli", "carrots", "strawberries", "brownies", "pretzels",
            "popcorn", "smoothies", "doughnuts",
        ],
    },
    "weather": {
        "train": [
            "the weather", "the thunderstorm", "the forecast", "the wind",
            "the temperature", "the heatwave", "the downpour", "the storm",
            "the humidity", "the fog", "the snowfall",
            "a rainbow", "a cool breeze", "a light drizzle",
            "rain", "dark clouds", "sunshine", "snow", "hail", "frost",
            "lightning", "rainy days", "freezing temperatures",
            "thick clouds",
        ],
        "validation": [
            "the blizzard", "the hurricane", "the monsoon",
            "the tornado warning", "the drought", "the cold front",
            "the meteorologist", "the dew point",
            "a tropical depression",
            "sleet", "gusts", "overcast skies", "mist", "icy roads",
            "barometric pressure",
        ],
        "test": [
            "the typhoon", "the cyclone", "the gale", "the squall",
            "the dry season", "the uv index",
            "a flash flood", "a chilly night",
            "heavy showers", "muggy air", "sweltering afternoons",
            "black ice", "humid summers", "whiteout conditions",
        ],
    },
    "technology": {
        "train": [
            "the smartphone", "the laptop", "the software update",
            "the new app", "the keyboard", "the website", "the internet",
            "the wifi router", "the battery", "the processor",
            "the database", "the algorithm",
            "a laser printer", "a touchscreen",
            "computers", "programming", "source code", "email",
            "passwords", "robots", "bluetooth headphones", "downloads",
            "social media", "search engines", "tech companies",
        ],
        "validation": [
            "the browser", "the firewall", "the compiler",
            "the motherboard", "the graphics card", "the firmware",
            "the operating system",
            "a usb cable",
            "microchips", "semiconductors", "spreadsheets", "encryption",
            "smartwatches", "cybersecurity", "cpu cores",
        ],
        "test": [
            "the chatbot", "the hard drive", "the data center",
            "the webcam", "the modem", "the gadget",
            "a virtual reality headset",
            "artificial intelligence", "machine learning", "drones",
            "neural networks", "gigabytes", "pixels", "quantum computing",
            "silicon valley",
        ],
    },
}

# Determiners that may appear in topic phrases of every class and split.
FUNCTION_WORDS = {"the", "a", "an"}

WORD_RE = re.compile(r"[a-z0-9']+")


def words(text: str) -> set[str]:
    return set(WORD_RE.findall(text.lower()))


def check_vocabulary() -> None:
    """Fail loudly if topic words leak between pools or into the frames."""
    frame_words = set()
    for frame in FRAMES:
        frame_words |= words(frame.replace("{a}", "").replace("{b}", ""))
    owner: dict[str, tuple[str, str]] = {}
    for label, pools in TOPICS.items():
        for split, phrases in pools.items():
            if len(set(phrases)) != len(phrases):
                raise ValueError(f"duplicate phrase in {label}/{split}")
            for phrase in phrases:
                for w in words(phrase) - FUNCTION_WORDS:
                    if w in frame_words:
                        raise ValueError(f"topic word {w!r} also used in a frame")
                    prev = owner.setdefault(w, (label, split))
                    if prev != (label, split):
                        raise ValueError(
                            f"topic word {w!r} in both {prev} and {(label, split)}"
                        )


class _Cycle:
    """Deterministic endless shuffled cycle over a list."""

    def __init__(self, items, rng: random.Random):
        self.items = list(items)
        self.rng = rng
        self.buf: list = []

    def next(self, avoid=None):
        if not self.buf:
            self.buf = self.items[:]
            self.rng.shuffle(self.buf)
        for i in range(len(self.buf) - 1, -1, -1):
            if self.buf[i] != avoid:
                return self.buf.pop(i)
        # only ``avoid`` left in this round: start a new round
        self.buf = []
        return self.next(avoid)


def build_split(split: str, rng: random.Random, seen: set[str]) -> list[tuple[str, str]]:
    n = ROWS_PER_CLASS[split]
    # One frame sequence shared by all classes, so every frame occurs equally
    # often in each class and the frame alone carries no label information.
    frame_cycle = _Cycle(FRAMES, rng)
    rows: list[tuple[str, str]] = []
    per_class: dict[str, list[str]] = {label: [] for label in LABELS}
    phrase_cycles = {label: _Cycle(TOPICS[label][split], rng) for label in LABELS}
    attempts = 0
    while any(len(v) < n for v in per_class.values()):
        attempts += 1
        if attempts > 100 * n:
            raise RuntimeError(f"could not build {n} unique rows per class for {split}")
        frame = frame_cycle.next()
        for label in LABELS:
            if len(per_class[label]) >= n:
                continue
            for _ in range(20):
                a = phrase_cycles[label].next()
                b = phrase_cycles[label].next(avoid=a) if "{b}" in frame else ""
                text = frame.format(a=a, b=b)
                text = text[0].upper() + text[1:]
                if text not in seen:
                    seen.add(text)
                    per_class[label].append(text)
                    break
    for label in LABELS:
        rows.extend((text, label) for text in per_class[label])
    rng.shuffle(rows)
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(["text", "label"])
        writer.writerows(rows)


def main(argv=None) -> int:
    default_out = Path(__file__).resolve().parent.parent / "hftransfer" / "sample_data"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=default_out)
    args = parser.parse_args(argv)

    check_vocabulary()
    rng = random.Random(SEED)
    seen: set[str] = set()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        rows = build_split(split, rng, seen)
        path = args.out_dir / f"{split}.csv"
        write_csv(path, rows)
        print(f"wrote {path} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
