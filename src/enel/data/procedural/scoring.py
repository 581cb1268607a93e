"""Keyword scoring of free-form answers against the procedural dataset's labels.

Used by the quickstart evaluation (category accuracy, colour accuracy, count accuracy). Matching is by whole
word, case-insensitive, with a plural ``s``/``es`` allowed, and multi-word synonyms match across any run of
spaces or hyphens ("floor lamp", "floor-lamp"). The synonym sets are disjoint: no synonym of one category
matches another category (tested), and no generated answer of one category names another.
"""

from __future__ import annotations

import re
from functools import lru_cache

from .colours import COLOUR_SYNONYMS

__all__ = [
    "CATEGORY_SYNONYMS",
    "match_category",
    "match_colour",
    "match_count",
    "find_categories",
    "NUMBER_WORDS",
]

CATEGORY_SYNONYMS: dict[str, tuple[str, ...]] = {
    "airplane": ("airplane", "aeroplane", "plane", "jet", "aircraft", "airliner", "jetliner"),
    "bed": ("bed", "double bed", "single bed"),
    "bench": ("bench", "park bench"),
    "bicycle": ("bicycle", "bike", "cycle"),
    "boat": ("boat", "sailboat", "motorboat", "ship", "yacht", "sailing boat"),
    "bookshelf": ("bookshelf", "bookcase", "book shelf", "shelf", "shelves", "bookshelves", "shelving unit"),
    "bottle": ("bottle", "flask"),
    "bowl": ("bowl",),
    "car": ("car", "automobile", "sedan", "hatchback"),
    "chair": ("chair", "armchair"),
    "clock": ("clock", "wall clock", "timepiece"),
    "fan": ("fan", "desk fan", "electric fan"),
    "guitar": ("guitar", "acoustic guitar"),
    "hammer": ("hammer", "sledgehammer", "mallet"),
    "house": ("house", "cottage", "hut"),
    "ladder": ("ladder", "stepladder"),
    "lamp": ("lamp", "floor lamp"),
    "laptop": ("laptop", "notebook computer"),
    "monitor": ("monitor", "computer monitor", "computer screen", "tv", "television"),
    "mug": ("mug", "coffee mug", "cup", "teacup"),
    "rocket": ("rocket", "spaceship", "spacecraft", "missile"),
    "snowman": ("snowman", "snow man", "snowmen"),
    "sofa": ("sofa", "couch", "settee", "loveseat"),
    "stool": ("stool", "bar stool", "footstool"),
    "sword": ("sword", "saber", "sabre", "katana"),
    "table": ("table", "dining table", "coffee table"),
    "tree": ("tree", "pine tree", "fir"),
    "truck": ("truck", "lorry"),
    "umbrella": ("umbrella", "parasol"),
    "vase": ("vase", "urn"),
}
"""Category -> words an answer may use for it (the first is the category name itself)."""

NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                                 "ten", "eleven", "twelve")


def _words_pattern(phrases) -> str:
    alts = []
    for ph in sorted(phrases, key=len, reverse=True):
        alts.append(r"[\s\-]+".join(re.escape(w) for w in ph.lower().split()))
    return r"(?<![a-z0-9])(?:" + "|".join(alts) + r")(?:s|es)?(?![a-z0-9])"


@lru_cache(maxsize=None)
def _category_regex(category: str) -> re.Pattern:
    return re.compile(_words_pattern(CATEGORY_SYNONYMS[category]))


@lru_cache(maxsize=None)
def _colour_regex(colour: str) -> re.Pattern:
    return re.compile(_words_pattern(COLOUR_SYNONYMS.get(colour, (colour,))))


def _known(category: str) -> str:
    key = category.strip().lower()
    if key not in CATEGORY_SYNONYMS:
        from ...errors import ConfigError

        raise ConfigError(f"unknown procedural category {category!r}; known: {', '.join(sorted(CATEGORY_SYNONYMS))}")
    return key


def match_category(answer: str, category: str) -> bool:
    """Whether ``answer`` names ``category`` or one of its synonyms as a whole word (case-insensitive)."""
    return _category_regex(_known(category)).search(answer.lower()) is not None


def find_categories(answer: str) -> list[str]:
    """All categories named in ``answer``, in order of first mention."""
    text = answer.lower()
    hits = []
    for c in CATEGORY_SYNONYMS:
        m = _category_regex(c).search(text)
        if m:
            hits.append((m.start(), c))
    return [c for _, c in sorted(hits)]


def match_colour(answer: str, colour: str) -> bool:
    """Whether ``answer`` names ``colour`` (a palette name; "grey" matches "gray", …) as a whole word."""
    return _colour_regex(colour.strip().lower()).search(answer.lower()) is not None


def match_count(answer: str, count: int) -> bool:
    """Whether ``answer`` states the number ``count`` as digits or as an English word ("four")."""
    text = answer.lower()
    words = [str(count)] + ([NUMBER_WORDS[count]] if 0 <= count < len(NUMBER_WORDS) else [])
    return re.search(r"(?<![a-z0-9])(?:" + "|".join(words) + r")(?![a-z0-9])", text) is not None
