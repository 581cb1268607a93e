"""Which label a free-form answer names: the one scorer behind every accuracy the project reports.

An answer is scored by the **first** label it names, so naming several cannot be right by luck: "a chair or a
table" counts as *chair*, and is wrong for a table. Matching is by whole word, case-insensitive, with a plural
``s``/``es`` allowed, and multi-word synonyms match across any run of spaces, hyphens or underscores
("night stand", "night-stand"). Where two names start at the same place the longer wins ("tv stand" is not
"tv", "table lamp" is not "table"), and a name inside a longer match is not counted again ("bedside table" names
a night stand, not a table).

A :class:`LabelVocabulary` maps each label to the words a person would accept for it. The vocabularies in use:

* :data:`MODELNET40_SYNONYMS` (ModelNet40's 40 classes, PointLLM's spelling, plus the synonyms a person would
  accept: "nightstand", "bedside table", "couch", "tv" …);
* the procedural categories and colours (:mod:`enel.data.procedural.scoring`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import cache, cached_property

__all__ = ["LabelVocabulary", "MODELNET40_CLASSES", "MODELNET40_SYNONYMS", "modelnet40_vocabulary"]


def _phrase_pattern(phrase: str) -> str:
    return r"[\s\-_]+".join(re.escape(w) for w in phrase.lower().split())


class LabelVocabulary:
    """Labels and the phrases that name them, with the first-named rule.

    Args:
        synonyms: label -> phrases that name it (the label itself is always one of them).
        name: what the labels are, for messages ("ModelNet40 class", "colour").

    Raises:
        ValueError: a phrase names two labels (the scorer could not tell them apart).
    """

    def __init__(self, synonyms: Mapping[str, Sequence[str]], name: str = "label"):
        self.name = name
        self.synonyms: dict[str, tuple[str, ...]] = {}
        owner: dict[str, str] = {}
        for label, phrases in synonyms.items():
            words = tuple(dict.fromkeys([label, *phrases]))
            for p in words:
                key = " ".join(p.lower().split())
                if owner.setdefault(key, label) != label:
                    raise ValueError(f"{name} phrase {p!r} names both {owner[key]!r} and {label!r}")
            self.synonyms[label] = words

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.synonyms)

    @cached_property
    def _regex(self) -> re.Pattern:
        alternatives = []
        for label, phrases in self.synonyms.items():
            for p in phrases:
                alternatives.append((len(p), _phrase_pattern(p), label))
        alternatives.sort(key=lambda a: -a[0])  # at one position the longest phrase wins
        self._group_label = [label for _, _, label in alternatives]
        body = "|".join(f"({pattern})" for _, pattern, _ in alternatives)
        return re.compile(r"(?<![a-z0-9])(?:" + body + r")(?:s|es)?(?![a-z0-9])")

    def named(self, answer: str) -> list[str]:
        """Every label ``answer`` names, in order of first mention (each once)."""
        out: list[str] = []
        for m in self._regex.finditer(answer.lower()):
            label = self._group_label[m.lastindex - 1]
            if label not in out:
                out.append(label)
        return out

    def first(self, answer: str) -> str | None:
        """The first label ``answer`` names, or ``None``."""
        m = self._regex.search(answer.lower())
        return self._group_label[m.lastindex - 1] if m else None

    def is_correct(self, answer: str, label: str) -> bool:
        """The strict rule: ``answer``'s first named label is ``label``."""
        return self.first(answer) == self.check(label)

    def mentions(self, answer: str, label: str) -> bool:
        """The lenient rule (reported beside the strict one, never instead): ``label`` is named anywhere."""
        return self.check(label) in self.named(answer)

    def check(self, label: str) -> str:
        """``label`` as spelled in the vocabulary (case and spacing folded); ``ValueError`` naming the known ones."""
        key = " ".join(str(label).lower().replace("_", " ").split())
        for known in self.synonyms:
            if known.lower() == key:
                return known
        raise ValueError(f"unknown {self.name} {label!r}; known: {', '.join(self.synonyms)}")


MODELNET40_SYNONYMS: dict[str, tuple[str, ...]] = {
    "airplane": ("aeroplane", "plane", "jet", "aircraft", "airliner", "jetliner"),
    "bathtub": ("bath tub", "tub", "bath"),
    "bed": ("double bed", "single bed", "bunk bed"),
    "bench": ("park bench",),
    "bookshelf": ("bookcase", "book shelf", "shelf", "shelves", "bookshelves", "shelving unit"),
    "bottle": ("flask",),
    "bowl": (),
    "car": ("automobile", "sedan", "hatchback", "sports car"),
    "chair": ("armchair", "office chair"),
    "cone": ("traffic cone",),
    "cup": ("mug", "coffee mug", "teacup"),
    "curtain": ("drape", "drapes"),
    "desk": ("writing desk", "office desk"),
    "door": ("doorway",),
    "dresser": ("chest of drawers", "drawers"),
    "flower pot": ("flowerpot", "planter", "plant pot"),
    "glass box": ("glass case", "display case", "showcase"),
    "guitar": ("acoustic guitar", "electric guitar"),
    "keyboard": ("computer keyboard",),
    "lamp": ("floor lamp", "desk lamp", "table lamp"),
    "laptop": ("notebook computer",),
    "mantel": ("mantelpiece", "fireplace"),
    "monitor": ("computer monitor", "computer screen", "screen", "tv", "television", "display"),
    "night stand": ("nightstand", "bedside table", "bedside cabinet", "nightstands"),
    "person": ("man", "woman", "human", "people", "human figure"),
    "piano": ("grand piano", "upright piano"),
    "plant": ("houseplant", "potted plant"),
    "radio": (),
    "range hood": ("cooker hood", "extractor hood", "kitchen hood"),
    "sink": ("washbasin", "basin"),
    "sofa": ("couch", "settee", "loveseat"),
    "stairs": ("stair", "staircase", "stairway", "steps"),
    "stool": ("bar stool", "footstool"),
    "table": ("coffee table", "dining table"),
    "tent": (),
    "toilet": (),
    "tv stand": ("tv cabinet", "tv table", "media console", "entertainment center"),
    "vase": ("urn",),
    "wardrobe": ("closet", "armoire", "cupboard"),
    "xbox": ("game console", "console"),
}
"""ModelNet40 class (PointLLM's spelling, the official order) -> the other words a person would accept for it."""


MODELNET40_CLASSES: tuple[str, ...] = tuple(MODELNET40_SYNONYMS)
"""The 40 class names, index = label: ModelNet40's alphabetical order with underscores replaced by spaces
(PointLLM's ``modelnet40_shape_names_modified.txt``)."""


@cache
def modelnet40_vocabulary() -> LabelVocabulary:
    """The ModelNet40 classes with :data:`MODELNET40_SYNONYMS` (built once, shared)."""
    return LabelVocabulary(MODELNET40_SYNONYMS, "ModelNet40 class")
