"""Text for a procedural object: a Cap3D-style caption, a detailed description and PointLLM-style QA.

Everything is produced from :class:`ObjectFacts` (read off the built geometry and its colours) with a seeded
:class:`numpy.random.Generator`, choosing among several phrasings for every question and every answer so a
model cannot memorise one template. Every text that names the object uses one of the category's synonyms
(:data:`.scoring.CATEGORY_SYNONYMS`), so answers stay scorable by :func:`.scoring.match_category`.

Prompts: :data:`BRIEF_PROMPTS` (caption requests, answered by the caption), :data:`IDENTIFY_PROMPTS`
(answered by a short category phrase; includes PointLLM's benchmark prompt "What is this?"),
:data:`COMPLETION_PROMPT` (PointLLM's "This is an object of ", answered by a continuation) and
:data:`DETAILED_PROMPTS` (answered by the 50-100 word description; includes "Caption this 3D model in detail.").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..prompts import PROMPTS
from .scoring import NUMBER_WORDS

__all__ = [
    "PartFact",
    "ObjectFacts",
    "QA",
    "BRIEF_PROMPTS",
    "IDENTIFY_PROMPTS",
    "COMPLETION_PROMPT",
    "DETAILED_PROMPTS",
    "POINT_TOKEN",
    "caption",
    "identify_answer",
    "completion_answer",
    "detailed_description",
    "make_qa",
    "grounding_qa",
    "QA_TYPES",
    "pick",
]

POINT_TOKEN = "<point>"

BRIEF_PROMPTS: tuple[str, ...] = (
    "Summarize this 3D object briefly.",
    "Give a concise caption of this 3D model.",
    "What kind of object is depicted by this point cloud?",
    "Describe this object in a few words.",
    "Provide a short description of this point cloud.",
    "Briefly describe the 3D object.",
    "Write a short caption for this shape.",
    "Offer a brief summary of this object.",
    "Characterize this 3D model in one sentence.",
    "Give a quick overview of the object represented by these points.",
    "What does this point cloud show? Answer briefly.",
    "Describe the object in one short sentence.",
)
"""Caption requests for ``simple_description`` records; the answer is the object's caption."""

IDENTIFY_PROMPTS: tuple[str, ...] = (
    PROMPTS["what"],  # PointLLM benchmark prompt 0 (instruction-type classification)
    "What is this object?",
    "What object is this?",
    "Identify this 3D object.",
)
"""Classification requests; the answer is a short phrase that names the category."""

COMPLETION_PROMPT = PROMPTS["completion"]
"""PointLLM benchmark prompt 1 (completion-type classification; the trailing space is PointLLM's)."""

DETAILED_PROMPTS: tuple[str, ...] = (
    PROMPTS["caption"],  # PointLLM benchmark prompt 2 (captioning)
    "Describe this 3D object in detail.",
    "Provide a detailed description of this point cloud.",
    "What can you tell me about this object? Please be thorough.",
    "Give a thorough description of the object and its parts.",
    "Explain in detail what this 3D model looks like.",
    "Describe the shape, parts and colours of this object.",
    "Write a detailed caption for this 3D shape.",
)
"""Requests for the detailed description (``detailed_description`` records)."""


@dataclass
class PartFact:
    """One part as text sees it; mirrors :class:`.shapes.Part` plus its colour and material word."""

    name: str
    plural: str
    colour: str
    count: int
    adjectives: tuple[str, ...] = ()
    shape: str | None = None
    where: str | None = None
    countable: bool = False
    mass: bool = False
    material: str | None = None
    uncounted: bool = False

    @property
    def many(self) -> bool:
        return self.count > 1 and not self.mass

    @property
    def noun(self) -> str:
        return self.plural if self.many else self.name

    @property
    def be(self) -> str:
        return "are" if self.many else "is"


@dataclass
class ObjectFacts:
    """Everything the text generator may state about one object.

    ``noun``: the name used for this object (a synonym of ``category``); ``parts[0]`` is the main part;
    ``main_colour``: the colour covering the most surface area; ``counts``: countable facts, plural noun -> n.
    """

    category: str
    noun: str
    parts: list[PartFact]
    main_colour: str
    counts: dict[str, int]
    traits: tuple[str, ...]
    uses: tuple[str, ...]
    places: tuple[str, ...]
    all_nouns: tuple[str, ...] = ()
    colour_share: dict[str, float] = field(default_factory=dict)

    @property
    def main_part(self) -> PartFact:
        return self.parts[0]

    def colours(self) -> list[str]:
        """Distinct part colours, main colour first, then by decreasing surface share."""
        order = sorted(self.colour_share, key=lambda c: -self.colour_share[c])
        return [self.main_colour] + [c for c in order if c != self.main_colour]


@dataclass
class QA:
    """One question/answer pair; ``kind`` is one of :data:`QA_TYPES`, ``target`` the fact it asks about."""

    kind: str
    question: str
    answer: str
    target: str


QA_TYPES = ("category", "verify", "colour", "main_colour", "count", "use", "shape", "where")


# ------------------------------------------------------------------------------------------------------------
# Small grammar helpers
# ------------------------------------------------------------------------------------------------------------
def pick(rng: np.random.Generator, options):
    """One of ``options``, drawn uniformly with ``rng``."""
    return options[int(rng.integers(len(options)))]


def a_an(phrase: str) -> str:
    """``phrase`` with "a" or "an" in front (by its first letter)."""
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def number(n: int, rng: np.random.Generator | None = None, digits_p: float = 0.15) -> str:
    """``n`` as an English word ("four"), or sometimes as digits."""
    if rng is not None and rng.random() < digits_p or n >= len(NUMBER_WORDS):
        return str(n)
    return NUMBER_WORDS[n]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _words(s: str) -> int:
    return len(s.split())


def part_phrase(p: PartFact, rng: np.random.Generator, *, colour: bool = True, count: bool = True,
                adjective: bool = True, material: bool = True) -> str:
    """A noun phrase for a part: "four thin black metal legs", "a conical red shade", "green foliage"."""
    words: list[str] = []
    if adjective:
        pool = list(p.adjectives) + ([p.shape] if p.shape and p.shape not in ("straight",) else [])
        if pool:
            k = int(rng.integers(1, min(2, len(pool)) + 1))
            words += [pool[i] for i in sorted(rng.choice(len(pool), size=k, replace=False))]
    if colour:
        words.append(p.colour)
    if material and p.material and colour:
        words.append(p.material)
    words.append(p.noun)
    phrase = " ".join(words)
    if p.mass:
        return phrase
    if p.many:
        return (number(p.count, rng) + " " + phrase) if count and not p.uncounted else phrase
    return a_an(phrase)


def _subject(f: ObjectFacts, rng: np.random.Generator, *, colour: bool = True, trait: bool | None = None,
             article: bool = True) -> str:
    words = []
    if f.traits and (trait if trait is not None else rng.random() < 0.5):
        words.append(pick(rng, f.traits))
    if colour:
        words.append(f.main_colour)
        mp = f.main_part
        if mp.material and mp.colour == f.main_colour and rng.random() < 0.6:
            words.append(mp.material)
    words.append(f.noun)
    s = " ".join(words)
    return a_an(s) if article else s


def _feature_parts(f: ObjectFacts, rng: np.random.Generator, k: int) -> list[PartFact]:
    """Up to ``k`` non-main parts worth mentioning, favouring counted and differently coloured ones."""
    cands = f.parts[1:]
    if not cands:
        return []
    w = np.array([1.0 + 1.5 * p.countable + 1.0 * (p.colour != f.main_colour) + 0.5 * bool(p.adjectives or p.shape)
                  for p in cands])
    k = min(k, len(cands))
    idx = rng.choice(len(cands), size=k, replace=False, p=w / w.sum())
    return [cands[i] for i in sorted(idx)]


# ------------------------------------------------------------------------------------------------------------
# Captions
# ------------------------------------------------------------------------------------------------------------
def caption(f: ObjectFacts, rng: np.random.Generator) -> str:
    """A Cap3D-style brief caption: lowercase, no final period, 6-20 words, names the category.

    e.g. "a brown wooden chair with four thin legs and a tall back".
    """
    for _ in range(20):
        n_feat = 1 if rng.random() < 0.35 else 2
        feats = []
        for p in _feature_parts(f, rng, n_feat):
            bare = not (p.adjectives or p.shape or (p.many and not p.uncounted))  # "a handle" says nothing
            feats.append(part_phrase(p, rng, colour=bare or rng.random() < (0.85 if p.colour != f.main_colour
                                                                             else 0.25)))
        if not feats:
            feats = [part_phrase(f.main_part, rng)]
        t = int(rng.integers(6))
        if t == 0:
            text = f"{_subject(f, rng)} with {_join(feats)}"
        elif t == 1:
            text = f"{_subject(f, rng)} featuring {_join(feats)}"
        elif t == 2:
            text = f"3d model of {_subject(f, rng)} with {feats[0]}"
        elif t == 3:
            text = f"{_subject(f, rng, article=False)} with {_join(feats)}"
        elif t == 4:
            main = part_phrase(f.main_part, rng, material=True)
            text = f"{a_an(f.noun)} with {_join([main] + feats[:1])}"
        else:
            text = f"{_subject(f, rng)} that has {_join(feats)}"
        text = text.lower()
        if 6 <= _words(text) <= 20:
            return text
    return f"{_subject(f, rng, trait=False)} with {part_phrase(f.parts[-1], rng, adjective=False)}".lower()


def identify_answer(f: ObjectFacts, rng: np.random.Generator) -> str:
    """A short answer to "What is this?" that names the category, e.g. "This is a red chair."."""
    t = int(rng.integers(6))
    if t == 0:
        return f"This is {a_an(f.noun)}."
    if t == 1:
        return f"This is {_subject(f, rng)}."
    if t == 2:
        feat = _feature_parts(f, rng, 1)
        tail = f" with {part_phrase(feat[0], rng)}" if feat else ""
        return f"{_cap(_subject(f, rng))}{tail}."
    if t == 3:
        return f"It is {_subject(f, rng)}."
    if t == 4:
        return f"It looks like {_subject(f, rng)}."
    return f"The object is {_subject(f, rng)}."


def completion_answer(f: ObjectFacts, rng: np.random.Generator) -> str:
    """The continuation of "This is an object of ", e.g. "a chair, with four legs and a tall back."."""
    feats = [part_phrase(p, rng) for p in _feature_parts(f, rng, int(rng.integers(1, 3)))]
    t = int(rng.integers(4))
    if t == 0 or not feats:
        return f"{_subject(f, rng)}."
    if t == 1:
        return f"{a_an(f.noun)}, with {_join(feats)}."
    if t == 2:
        return f"{_subject(f, rng)} with {_join(feats)}."
    return f"{_subject(f, rng)}, which has {_join(feats)}."


# ------------------------------------------------------------------------------------------------------------
# Detailed description (50-100 words)
# ------------------------------------------------------------------------------------------------------------
_FILLERS = (
    "The model is built from simple geometric shapes with smooth surfaces.",
    "Each part has a uniform colour, which makes the structure easy to read.",
    "Its proportions look realistic and well balanced.",
    "The parts are clearly separated and easy to identify from most viewpoints.",
    "The surfaces are clean, without any text, patterns or decorations.",
    "The design is simple and functional rather than ornate.",
)


def _part_sentence(f: ObjectFacts, p: PartFact, rng: np.random.Generator) -> str:
    where = p.where or "on the object"
    t = int(rng.integers(5))
    if t == 0:
        return f"It has {part_phrase(p, rng)} {where}."
    if t == 1:
        adj = f", {p.adjectives[0]}" if p.adjectives else ""
        head = f"The {p.noun}" if not p.many or p.uncounted else f"The {number(p.count, rng)} {p.noun}"
        return f"{head} {p.be} {p.colour}{adj} and {'sit' if p.many else 'sits'} {where}."
    if t == 2:
        return f"{_cap(where)}, there {p.be} {part_phrase(p, rng)}."
    if t == 3:
        return f"The {f.noun}'s {p.noun} {p.be} {p.colour}" + (f" and {p.shape}" if p.shape else "") + "."
    return f"{_cap(part_phrase(p, rng))} can be seen {where}."


def detailed_description(f: ObjectFacts, rng: np.random.Generator) -> str:
    """A 50-100 word paragraph: identity, every part (colour, count, shape, location), colours, use, place."""
    t = int(rng.integers(4))
    if t == 0:
        intro = f"This is a 3D model of {_subject(f, rng)}."
    elif t == 1:
        intro = f"The point cloud depicts {_subject(f, rng)}."
    elif t == 2:
        intro = f"The object shown here is {_subject(f, rng, colour=False, trait=True)}, mostly {f.main_colour} " \
                f"in colour."
    else:
        intro = f"This 3D object is {a_an(f.noun)} rendered mainly in {f.main_colour}."
    parts = [_part_sentence(f, p, rng) for p in f.parts]
    cols = f.colours()
    if len(cols) == 1:
        colour_s = pick(rng, (f"The whole {f.noun} is {cols[0]}.", f"Every part of it is {cols[0]}."))
    else:
        others = _join(cols[1:3])
        colour_s = pick(rng, (f"The colour scheme is dominated by {cols[0]}, with {others} accents.",
                               f"Overall, {cols[0]} is the main colour, complemented by {others}.",
                               f"Most of the surface is {cols[0]}, while smaller parts are {others}."))
    use = pick(rng, f.uses)
    use_s = pick(rng, (f"{_cap(a_an(f.noun))} like this is typically used for {use}.",
                        f"It is mainly used for {use}.", f"Such objects are commonly used for {use}.",
                        f"This kind of {f.noun} is designed for {use}."))
    place = pick(rng, f.places)
    place_s = pick(rng, (f"You would usually find one {place}.", f"Objects like this are common {place}.",
                          f"It would fit naturally {place}."))
    body = parts[:]
    fillers = list(rng.permutation(len(_FILLERS)))
    while True:
        sentences = [intro] + body + [colour_s, use_s, place_s]
        text = " ".join(sentences)
        n = _words(text)
        if n > 100 and len(body) > 1:
            body.pop()  # drop the least important parts first
            continue
        if n < 50 and fillers:
            body.append(_FILLERS[fillers.pop()])
            continue
        return text


# ------------------------------------------------------------------------------------------------------------
# Questions and answers
# ------------------------------------------------------------------------------------------------------------
def _colour_word(rng: np.random.Generator) -> str:
    return "colour" if rng.random() < 0.5 else "color"


def _qa_category(f: ObjectFacts, rng, other_nouns) -> QA:
    q = pick(rng, ("What is this object?", "What is this?", "Can you identify this object?",
                    "What kind of object is shown here?", "Which category does this object belong to?",
                    "What does this point cloud represent?", "What object do these points form?"))
    return QA("category", q, identify_answer(f, rng), f.category)


def _qa_verify(f: ObjectFacts, rng, other_nouns) -> QA:
    if rng.random() < 0.5 or not other_nouns:
        q = pick(rng, (f"Is this {a_an(f.noun)}?", f"Is this object {a_an(f.noun)}?",
                        f"Would you say this is {a_an(f.noun)}?"))
        a = pick(rng, (f"Yes, it is {_subject(f, rng)}.", f"Yes, this is {a_an(f.noun)}.",
                        f"Yes. It is {a_an(f.noun)} with {part_phrase(f.main_part, rng)}."))
    else:
        other = pick(rng, other_nouns)
        q = pick(rng, (f"Is this {a_an(other)}?", f"Is this object {a_an(other)}?",
                        f"Would you say this is {a_an(other)}?"))
        a = pick(rng, (f"No, it is {_subject(f, rng)}.", f"No, this is actually {a_an(f.noun)}.",
                        f"No. It is {a_an(f.noun)}."))
    return QA("verify", q, a, f.category)


def _qa_colour(f: ObjectFacts, rng, other_nouns, part: PartFact | None = None) -> QA:
    p = part or pick(rng, f.parts)
    cw = _colour_word(rng)
    the = f"the {p.noun}"
    q = pick(rng, (f"What {cw} {p.be} {the}?", f"What is the {cw} of {the}?", f"Can you tell me the {cw} of {the}?",
                    f"Which {cw} {p.be} {the} of this {f.noun}?"))
    a = pick(rng, (f"{_cap(the)} {p.be} {p.colour}.", f"{'They are' if p.many else 'It is'} {p.colour}.",
                    f"{_cap(p.colour)}.", f"The {p.noun} of this {f.noun} {p.be} {p.colour}."))
    return QA("colour", q, a, p.colour)


def _qa_main_colour(f: ObjectFacts, rng, other_nouns) -> QA:
    cw = _colour_word(rng)
    q = pick(rng, (f"What is the main {cw} of this object?", f"What {cw} is this object mostly?",
                    f"Which {cw} dominates this {f.noun}?", f"What {cw} is this?"))
    others = [c for c in f.colours()[1:2]]
    a = pick(rng, (f"It is mostly {f.main_colour}.", f"The main {cw} is {f.main_colour}.",
                    f"Mostly {f.main_colour}" + (f", with some {others[0]} parts." if others else ".")))
    return QA("main_colour", q, a, f.main_colour)


def _count_items(f: ObjectFacts) -> list[tuple[str, int]]:
    return sorted(f.counts.items())


def _qa_count(f: ObjectFacts, rng, other_nouns) -> QA:
    what, n = pick(rng, _count_items(f))
    q = pick(rng, (f"How many {what} does it have?", f"How many {what} does this {f.noun} have?",
                    f"Count the {what} of this object.", f"What is the number of {what}?",
                    f"How many {what} can you see?"))
    word = number(n, rng)
    noun = what if n != 1 else _singular(f, what)
    a = pick(rng, (f"It has {word} {noun}.", f"There {'are' if n != 1 else 'is'} {word} {noun}.",
                    f"{_cap(word)}.", f"The {f.noun} has {word} {noun}."))
    return QA("count", q, a, str(n))


def _singular(f: ObjectFacts, plural: str) -> str:
    for p in f.parts:
        if p.plural == plural:
            return p.name
    return plural[:-1] if plural.endswith("s") else plural


def _qa_use(f: ObjectFacts, rng, other_nouns) -> QA:
    use = pick(rng, f.uses)
    q = pick(rng, ("What is it used for?", "What is the purpose of this object?", "How would someone use this?",
                    "What can this object be used for?", f"What is this {f.noun} for?"))
    a = pick(rng, (f"It is used for {use}.", f"This {f.noun} is used for {use}.", f"People use it for {use}.",
                    f"It is meant for {use}."))
    return QA("use", q, a, use)


def _shape_parts(f: ObjectFacts) -> list[PartFact]:
    return [p for p in f.parts if p.shape]


def _qa_shape(f: ObjectFacts, rng, other_nouns) -> QA:
    p = pick(rng, _shape_parts(f))
    q = pick(rng, (f"What shape {p.be} the {p.noun}?", f"Describe the shape of the {p.noun}.",
                    f"What does the {p.noun} of this {f.noun} look like?"))
    if p.many:
        has = part_phrase(p, rng, adjective=False, colour=False) + f", all {p.shape}"
    else:
        has = a_an(f"{p.shape} {p.name}")
    a = pick(rng, (f"The {p.noun} {p.be} {p.shape}.", f"{'They are' if p.many else 'It is'} {p.shape}.",
                    f"It has {has}."))
    return QA("shape", q, a, p.shape)


def _qa_where(f: ObjectFacts, rng, other_nouns) -> QA:
    p = pick(rng, [p for p in f.parts[1:] if p.where] or f.parts)
    q = pick(rng, (f"Where {p.be} the {p.noun}?", f"Where {p.be} the {p.noun} located?",
                    f"Where can you find the {p.noun} on this {f.noun}?"))
    a = pick(rng, (f"The {p.noun} {p.be} {p.where}.", f"{'They are' if p.many else 'It is'} {p.where}.",
                    f"{_cap(p.where)}."))
    return QA("where", q, a, p.where or "")


_MAKERS = {"category": _qa_category, "verify": _qa_verify, "colour": _qa_colour, "main_colour": _qa_main_colour,
           "count": _qa_count, "use": _qa_use, "shape": _qa_shape, "where": _qa_where}
_WEIGHTS = {"category": 3.0, "verify": 1.0, "colour": 3.0, "main_colour": 1.0, "count": 2.0, "use": 1.5,
            "shape": 1.0, "where": 1.0}


def available_qa_types(f: ObjectFacts) -> list[str]:
    """The QA kinds that have a fact to ask about for this object."""
    kinds = []
    for k in QA_TYPES:
        if k == "count" and not f.counts:
            continue
        if k == "shape" and not _shape_parts(f):
            continue
        kinds.append(k)
    return kinds


def make_qa(f: ObjectFacts, rng: np.random.Generator, k: int, other_nouns: tuple[str, ...] = ()) -> list[QA]:
    """``k`` QA pairs of distinct kinds (drawn with :data:`_WEIGHTS`), each with a random phrasing.

    ``other_nouns`` are names of other categories used by negative "Is this a ...?" questions.
    """
    kinds = available_qa_types(f)
    w = np.array([_WEIGHTS[x] for x in kinds])
    k = min(k, len(kinds))
    chosen = rng.choice(len(kinds), size=k, replace=False, p=w / w.sum())
    return [_MAKERS[kinds[i]](f, rng, other_nouns) for i in chosen]


def colour_qa(f: ObjectFacts, rng: np.random.Generator) -> QA:
    """The canonical colour question about the main part (what the quickstart's colour accuracy asks)."""
    p = f.main_part
    cw = "colour"
    return QA("colour", f"What {cw} {p.be} the {p.noun}?", f"The {p.noun} {p.be} {p.colour}.", p.colour)


_GROUNDING_COLOUR_QUESTIONS = ("What {cw} {be} the {part}?", "What is the {cw} of the {part}?",
                               "Which {cw} {be} the {part}?", "Can you tell me the {cw} of the {part}?")


def grounding_qa(f: ObjectFacts, rng: np.random.Generator, parts: int = 2, identify: int = 3) -> list[QA]:
    """Short questions whose answers can only come from the cloud: ``identify`` "What is this?"-style requests,
    each in a different phrasing, → "This is a green airplane.", then the colour of up to ``parts`` parts (the
    main part first) → "The fuselage is green.".

    No question names the object's category or any other (parts whose name is a category word, such as a
    bookshelf's "shelves", are skipped), and the answers keep one short form, so the loss falls on the colour and
    category words. Stage 1's alignment data (the default recipe's): it ties the point tokens to words before
    anything else is asked of them. Three identify records per object (generator 1.2; 1.1 had one) put 60 % of the
    records on the category: on the CPU default's 25-minute stage 1 that took held-out category accuracy from
    38-48 % to 60 % (docs/training.md).
    """
    from .scoring import find_categories

    if not 1 <= identify <= len(IDENTIFY_PROMPTS):
        raise ValueError(f"identify must be between 1 and {len(IDENTIFY_PROMPTS)} (one per phrasing), got {identify}")
    answer = f"This is {a_an(f'{f.main_colour} {f.noun}')}."
    phrasings = rng.permutation(len(IDENTIFY_PROMPTS))[:identify]
    qas = [QA("category", IDENTIFY_PROMPTS[int(i)], answer, f.category) for i in phrasings]
    candidates = [f.main_part] + [p for p in f.parts if p is not f.main_part]
    for p in [p for p in candidates if not find_categories(p.noun)][:parts]:
        q = pick(rng, _GROUNDING_COLOUR_QUESTIONS).format(cw=_colour_word(rng), be=p.be, part=p.noun)
        qas.append(QA("colour", q, f"The {p.noun} {p.be} {p.colour}.", p.colour))
    return qas


def follow_up(question: str, rng: np.random.Generator) -> str:
    """A later-round variant of a question ("And what colour ..."), keeping its meaning."""
    t = rng.random()
    if t < 0.25:
        return "And " + question[:1].lower() + question[1:]
    if t < 0.4:
        return "Also, " + question[:1].lower() + question[1:]
    return question
