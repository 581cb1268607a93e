"""The built-in procedural 3D instruction dataset (the embedded default data of enel).

30 categories of part-built objects (chair, table, airplane, guitar, ...) with random proportions, part counts
and named colours; 8192 coloured surface points per object; Cap3D-style captions, detailed descriptions and
PointLLM's conversation types; written in PointLLM's layout with train / val / test splits so the same loaders
read it and the real Objaverse data. See ``docs/procedural-data.md``.

>>> from enel.data.procedural import synthesize, match_category
>>> manifest = synthesize("data/procedural", objects_per_category=60, seed=0)   # doctest: +SKIP
"""

from .categories import CATEGORIES, CATEGORY_NAMES, CategorySpec, get_spec
from .colours import COLOUR_NAMES, PALETTE
from .generate import (
    GENERATOR_VERSION,
    SPLITS,
    ProceduralObject,
    load_objects,
    make_object,
    object_id,
    synthesize,
    write_sample,
)
from .language import BRIEF_PROMPTS, COMPLETION_PROMPT, DETAILED_PROMPTS, IDENTIFY_PROMPTS
from .scoring import CATEGORY_SYNONYMS, find_categories, match_category, match_colour, match_count

__all__ = [
    "BRIEF_PROMPTS",
    "CATEGORIES",
    "CATEGORY_NAMES",
    "CATEGORY_SYNONYMS",
    "COLOUR_NAMES",
    "COMPLETION_PROMPT",
    "CategorySpec",
    "DETAILED_PROMPTS",
    "GENERATOR_VERSION",
    "IDENTIFY_PROMPTS",
    "PALETTE",
    "ProceduralObject",
    "SPLITS",
    "find_categories",
    "get_spec",
    "load_objects",
    "make_object",
    "match_category",
    "match_colour",
    "match_count",
    "object_id",
    "synthesize",
    "write_sample",
]
