"""Keyword scoring of free-form answers against the procedural dataset's labels.

Used by the quickstart evaluation (category accuracy, colour accuracy, count accuracy). An answer is scored by
the **first** category (colour) it names, the project's one rule (:mod:`enel.data.labels`): matching is by whole
word, case-insensitive, with a plural ``s``/``es`` allowed, and multi-word synonyms match across any run of
spaces or hyphens ("floor lamp", "floor-lamp"). The synonym sets are disjoint: no synonym of one category
matches another category (tested), and no generated answer of one category names another.
"""

from __future__ import annotations

import re

from ..labels import LabelVocabulary
from .colors import COLOR_SYNONYMS

__all__ = [
    "CATEGORY_SYNONYMS",
    "CATEGORIES",
    "COLORS",
    "match_category",
    "match_color",
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
    "lamp": ("lamp", "floor lamp", "table lamp", "desk lamp"),
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

CATEGORIES = LabelVocabulary(CATEGORY_SYNONYMS, "procedural category")
"""The categories with :data:`CATEGORY_SYNONYMS`, scored by :class:`enel.data.labels.LabelVocabulary`'s rule."""

COLORS = LabelVocabulary(COLOR_SYNONYMS, "colour")
"""The palette colours with :data:`~enel.data.procedural.colors.COLOR_SYNONYMS`."""


def _known(category: str) -> str:
    try:
        return CATEGORIES.check(category)
    except ValueError as exc:
        from ...errors import ConfigError

        raise ConfigError(str(exc)) from None


def match_category(answer: str, category: str) -> bool:
    """Whether the first category ``answer`` names (a synonym counts) is ``category``: "a chair or a table" is
    a chair, and wrong for a table (:class:`enel.data.labels.LabelVocabulary`)."""
    return CATEGORIES.first(answer) == _known(category)


def find_categories(answer: str) -> list[str]:
    """All categories named in ``answer``, in order of first mention."""
    return CATEGORIES.named(answer)


def match_color(answer: str, color: str) -> bool:
    """Whether the first colour ``answer`` names is ``colour`` (a palette name; "grey" counts as "gray", …)."""
    return COLORS.first(answer) == color.strip().lower()


def match_count(answer: str, count: int) -> bool:
    """Whether ``answer`` states the number ``count`` as digits or as an English word ("four")."""
    text = answer.lower()
    words = [str(count)] + ([NUMBER_WORDS[count]] if 0 <= count < len(NUMBER_WORDS) else [])
    return re.search(r"(?<![a-z0-9])(?:" + "|".join(words) + r")(?![a-z0-9])", text) is not None
