"""The 30 categories of the procedural dataset: builder, nouns, colour groups, uses and places.

Each :class:`CategorySpec` ties a builder from :mod:`.shapes` to the words the language generator uses.
A *colour group* is a set of parts that always share one colour (a chair's seat, back and armrests), with the
palette colours allowed for it and optionally a material family (:data:`.colors.MATERIAL_BY_COLOR`) that
turns a colour into a material word ("wooden" for brown). Every part a builder can produce belongs to exactly
one group of its category (tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import colors as C
from .scoring import CATEGORY_SYNONYMS
from .shapes import BUILDERS, Geometry

__all__ = ["CategorySpec", "ColorGroup", "CATEGORIES", "CATEGORY_NAMES", "get_spec"]


@dataclass(frozen=True)
class ColorGroup:
    """Parts that share one colour; ``colours`` are the allowed palette names, ``material`` a family name."""

    name: str
    parts: tuple[str, ...]
    colors: tuple[str, ...] = C.ANY
    material: str | None = None


@dataclass(frozen=True)
class CategorySpec:
    """Everything about one category except its geometry code.

    ``nouns``: default names used in text (each a synonym in :data:`.scoring.CATEGORY_SYNONYMS`);
    ``uses``: gerund phrases completing "It is used for ...";
    ``places``: phrases completing "You would usually find one ...".
    """

    name: str
    builder: Callable
    nouns: tuple[str, ...]
    groups: tuple[ColorGroup, ...]
    uses: tuple[str, ...]
    places: tuple[str, ...]

    @property
    def synonyms(self) -> tuple[str, ...]:
        return CATEGORY_SYNONYMS[self.name]

    def group_of(self, part: str) -> ColorGroup:
        for g in self.groups:
            if part in g.parts:
                return g
        raise KeyError(f"{self.name}: part {part!r} is in no colour group")

    def build(self, rng) -> Geometry:
        return self.builder(rng)


G = ColorGroup
GLASS = ("black", "cyan", "blue", "gray")


def _spec(name, nouns, groups, uses, places) -> CategorySpec:
    return CategorySpec(name, BUILDERS[name], tuple(nouns), tuple(groups), tuple(uses), tuple(places))


_SPECS = [
    _spec("airplane", ("airplane", "plane", "aircraft"),
          [G("fuselage", ("fuselage", "tail"), ("white", "gray", "blue", "red", "yellow", "green", "orange")),
           G("wings", ("wing",)), G("engines", ("engine",), ("gray", "black", "white", "red", "blue"), "metal")],
          ["carrying passengers through the air", "air travel between cities", "flying people and cargo over long "
           "distances"], ["at an airport", "on a runway", "high in the sky"]),
    _spec("bed", ("bed",),
          [G("frame", ("frame", "headboard", "footboard", "leg"), C.ANY, "wood_or_metal"),
           G("mattress", ("mattress",), ("white", "gray", "blue", "pink", "yellow", "cyan", "green")),
           G("pillows", ("pillow",), ("white", "gray", "blue", "pink", "yellow", "red", "purple")),
           G("blanket", ("blanket",), C.BRIGHT + ("white", "gray"))],
          ["sleeping", "resting and sleeping at night", "lying down to rest"],
          ["in a bedroom", "in a hotel room", "in a guest room"]),
    _spec("bench", ("bench",),
          [G("seat", ("seat", "backrest"), C.ANY, "wood_or_metal"),
           G("legs", ("leg",), C.ANY, "wood_or_metal")],
          ["seating several people side by side", "resting outdoors", "sitting in a park or a garden"],
          ["in a park", "in a garden", "along a street", "at a bus stop"]),
    _spec("bicycle", ("bicycle", "bike"),
          [G("frame", ("frame",), C.ANY, "metal"), G("wheels", ("wheel",), ("black", "gray")),
           G("seat", ("seat", "handlebar"), ("black", "brown", "gray", "white"))],
          ["riding around town", "cycling for exercise", "getting from place to place by pedalling"],
          ["on a street", "in a garage", "on a bike path"]),
    _spec("boat", ("boat",),
          [G("hull", ("hull",)), G("deck", ("deck", "cabin"), C.ANY, "wood"),
           G("mast", ("mast",), ("brown", "gray", "white", "black"), "wood_or_metal"),
           G("sails", ("sail",), ("white", "red", "yellow", "blue", "orange", "green", "pink", "purple"))],
          ["travelling on water", "sailing on lakes and seas", "fishing and leisure trips on the water"],
          ["in a harbour", "on a lake", "at sea"]),
    _spec("bookshelf", ("bookshelf", "bookcase"),
          [G("frame", ("frame", "back panel"), C.ANY, "wood"), G("shelves", ("shelf",), C.ANY, "wood"),
           G("books", ("book",), C.BRIGHT)],
          ["storing and displaying books", "organising books and decorations", "keeping books tidy"],
          ["in a library", "in a study", "in a living room"]),
    _spec("bottle", ("bottle",),
          [G("body", ("body",), ("green", "blue", "brown", "white", "cyan", "red", "purple", "orange", "yellow",
                                 "pink", "gray", "black")),
           G("cap", ("cap",)), G("label", ("label",))],
          ["storing and pouring liquids", "holding water or juice", "carrying a drink"],
          ["in a kitchen", "in a refrigerator", "in a picnic basket"]),
    _spec("bowl", ("bowl",),
          [G("exterior", ("exterior",)), G("interior", ("interior",))],
          ["serving soup, cereal or salad", "holding food", "mixing ingredients"],
          ["in a kitchen", "in a dining room", "in a cupboard"]),
    _spec("car", ("car", "automobile"),
          [G("body", ("body", "cabin")), G("wheels", ("wheel",), ("black", "gray")), G("windows", ("window",), GLASS)],
          ["driving people from place to place", "transportation on roads", "carrying a few passengers"],
          ["on a road", "in a parking lot", "in a garage"]),
    _spec("chair", ("chair",),
          [G("frame", ("seat", "back", "armrest"), C.ANY, "wood_or_metal"),
           G("legs", ("leg",), C.ANY, "wood_or_metal")],
          ["sitting", "providing a seat for one person", "sitting while eating or working"],
          ["in a dining room", "in an office", "in a classroom"]),
    _spec("clock", ("clock",),
          [G("face", ("face",), ("white", "yellow", "cyan", "pink", "gray", "orange", "green", "blue")),
           G("frame", ("frame",), C.ANY, "wood_or_metal"),
           G("hands", ("hand", "hour marker"), ("black", "red", "blue", "gray", "brown", "purple"))],
          ["telling the time", "showing the time on a wall", "keeping track of the hours"],
          ["on a wall", "in a kitchen", "in a classroom"]),
    _spec("fan", ("fan",),
          [G("blades", ("blade",)), G("body", ("body",)), G("guard", ("guard",), C.METAL, "metal")],
          ["cooling a room", "blowing air to keep people cool", "circulating air on a hot day"],
          ["in an office", "in a bedroom", "on a nightstand"]),
    _spec("guitar", ("guitar",),
          [G("body", ("body",), C.ANY, "wood"), G("neck", ("neck", "headstock"), ("brown", "black", "white"), "wood"),
           G("pegs", ("tuning peg",), ("gray", "white", "black", "yellow"), "metal"),
           G("hole", ("sound hole",), ("black",))],
          ["playing music", "strumming chords and playing melodies", "accompanying singers"],
          ["in a music studio", "on a stage", "in a music shop"]),
    _spec("hammer", ("hammer",),
          [G("head", ("head",), ("gray", "black", "red", "blue", "yellow", "orange"), "metal"),
           G("handle", ("handle",), C.ANY, "wood"), G("grip", ("grip",), C.ANY)],
          ["driving nails", "pounding nails into wood", "striking and breaking things"],
          ["in a toolbox", "in a workshop", "on a construction site"]),
    _spec("house", ("house",),
          [G("walls", ("wall",)), G("roof", ("roof", "chimney"), C.ANY),
           G("door", ("door",), C.ANY, "wood"),
           G("windows", ("window",), ("cyan", "blue", "white", "black", "yellow"))],
          ["living in", "sheltering a family", "providing a place to live"],
          ["in a village", "on a quiet street", "in the countryside"]),
    _spec("ladder", ("ladder",),
          [G("rails", ("rail",), C.ANY, "wood_or_metal"), G("rungs", ("rung",), C.ANY, "wood_or_metal")],
          ["climbing up to high places", "reaching high places such as roofs", "painting walls and ceilings"],
          ["in a garage", "against a wall", "on a construction site"]),
    _spec("lamp", ("lamp",),
          [G("shade", ("shade",)), G("stand", ("pole", "arm", "base"), C.ANY, "metal"),
           G("bulb", ("bulb",), ("yellow", "white"))],
          ["lighting a room", "providing light for reading", "brightening a dark corner"],
          ["in a living room", "in a reading corner", "in a bedroom corner"]),
    _spec("laptop", ("laptop",),
          [G("shell", ("base", "lid"), C.ANY, "metal"),
           G("keyboard", ("keyboard", "touchpad"), ("black", "gray", "white")),
           G("screen", ("screen",), ("black", "blue", "cyan"))],
          ["portable computing", "working, browsing the internet and writing documents", "studying and working "
           "on the go"], ["in an office", "in a backpack", "in a coffee shop"]),
    _spec("monitor", ("monitor", "computer monitor"),
          [G("screen", ("screen",), ("black", "blue", "cyan")),
           G("frame", ("frame", "back", "stand", "base"), ("black", "gray", "white", "red", "blue"))],
          ["displaying the output of a computer", "watching videos and reading documents", "showing images and "
           "text from a computer"], ["in an office", "in a study", "in a control room"]),
    _spec("mug", ("mug", "cup"),
          [G("body", ("body",)), G("handle", ("handle",))],
          ["drinking hot beverages such as coffee or tea", "holding hot drinks", "serving coffee"],
          ["in a kitchen", "in a coffee shop", "in an office"]),
    _spec("rocket", ("rocket",),
          [G("body", ("body",)), G("nose", ("nose cone", "fin"), C.ANY), G("nozzle", ("nozzle",), C.METAL, "metal"),
           G("windows", ("window",), ("cyan", "blue", "black", "yellow"))],
          ["launching payloads into space", "space travel", "carrying satellites into orbit"],
          ["on a launch pad", "at a space centre", "in a science museum"]),
    _spec("snowman", ("snowman",),
          [G("snow", ("snowball",), ("white",)), G("nose", ("nose",), ("orange",)),
           G("eyes", ("eye", "button"), ("black",)), G("hat", ("hat",), ("black", "red", "blue", "green", "purple")),
           G("arms", ("arm",), ("brown", "black"), "wood")],
          ["winter decoration", "decorating a yard in winter", "having fun in the snow"],
          ["in a snowy yard", "in a winter garden", "on a snowy field"]),
    _spec("sofa", ("sofa", "couch"),
          [G("body", ("backrest", "base", "armrest"), C.ANY), G("cushions", ("seat cushion",), C.ANY),
           G("legs", ("leg",), ("black", "brown", "gray", "white"), "wood_or_metal")],
          ["seating several people", "relaxing in a living room", "lounging and watching films"],
          ["in a living room", "in a waiting room", "in a lounge"]),
    _spec("stool", ("stool",),
          [G("seat", ("seat",), C.ANY, "wood_or_metal"), G("legs", ("leg", "footrest"), C.ANY, "wood_or_metal")],
          ["sitting without a backrest", "sitting at a counter", "sitting at a kitchen island"],
          ["in a kitchen", "in a bar", "in a workshop"]),
    _spec("sword", ("sword",),
          [G("blade", ("blade",), ("gray", "white", "black"), "metal"),
           G("hilt", ("crossguard", "pommel"), ("yellow", "gray", "brown", "black", "red", "blue")),
           G("grip", ("grip",), ("brown", "black", "red", "blue", "purple"))],
          ["fencing and combat", "display as a decorative weapon", "historical reenactment"],
          ["in a museum", "on a wall as a decoration", "in an armoury"]),
    _spec("table", ("table",),
          [G("top", ("top",), C.ANY, "wood_or_metal"), G("legs", ("leg", "base"), C.ANY, "wood_or_metal")],
          ["eating meals", "holding plates, books and other items", "working and playing board games"],
          ["in a dining room", "in a kitchen", "in an office"]),
    _spec("tree", ("tree",),
          [G("foliage", ("foliage",), ("green", "yellow", "red", "pink")),
           G("trunk", ("trunk",), ("brown", "gray"))],
          ["providing shade", "producing oxygen and giving shade", "decorating a landscape"],
          ["in a forest", "in a park", "in a garden"]),
    _spec("truck", ("truck",),
          [G("cargo", ("cargo box",)), G("cab", ("cab",)), G("wheels", ("wheel", "chassis"), ("black", "gray")),
           G("windshield", ("windshield",), ("black", "cyan", "blue"))],
          ["hauling cargo", "transporting goods over long distances", "delivering freight"],
          ["on a highway", "at a loading dock", "in a warehouse yard"]),
    _spec("umbrella", ("umbrella",),
          [G("canopy", ("canopy",)), G("shaft", ("shaft",), C.METAL, "metal"), G("handle", ("handle",), C.ANY)],
          ["protecting people from rain", "keeping dry in the rain", "shielding someone from sun and rain"],
          ["at a beach", "on a rainy street", "by the front door"]),
    _spec("vase", ("vase",),
          [G("body", ("body", "neck")), G("band", ("band",))],
          ["holding flowers", "displaying flowers as decoration", "decorating a room"],
          ["on a mantelpiece", "in a living room", "by a window"]),
]

CATEGORIES: dict[str, CategorySpec] = {s.name: s for s in _SPECS}
"""Category name -> :class:`CategorySpec`, sorted by name."""

CATEGORY_NAMES: tuple[str, ...] = tuple(sorted(CATEGORIES))


def get_spec(name: str) -> CategorySpec:
    """The spec of ``name``; raises :class:`enel.errors.ConfigError` listing the known categories."""
    from ...errors import ConfigError

    if name not in CATEGORIES:
        raise ConfigError(f"unknown procedural category {name!r}; known: {', '.join(CATEGORY_NAMES)}")
    return CATEGORIES[name]
