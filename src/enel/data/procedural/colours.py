"""The named colour palette of the procedural dataset.

Twelve clearly distinct colours, each an RGB triple in ``[0, 1]``. A part's points get its colour plus a small
seeded jitter (at most :data:`JITTER` per channel), small enough that no jittered colour is closer to another
palette entry than to its own, so a colour name in a caption always describes the points.
"""

from __future__ import annotations

import numpy as np

PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.10, 0.10),
    "orange": (1.00, 0.55, 0.05),
    "yellow": (0.95, 0.85, 0.10),
    "green": (0.15, 0.65, 0.20),
    "cyan": (0.10, 0.75, 0.80),
    "blue": (0.12, 0.30, 0.85),
    "purple": (0.50, 0.20, 0.70),
    "pink": (1.00, 0.55, 0.75),
    "brown": (0.50, 0.30, 0.12),
    "black": (0.08, 0.08, 0.08),
    "gray": (0.50, 0.50, 0.50),
    "white": (0.95, 0.95, 0.95),
}
"""Colour name -> RGB in [0, 1]. The names are the words captions and answers use."""

COLOUR_NAMES: tuple[str, ...] = tuple(PALETTE)

COLOUR_SYNONYMS: dict[str, tuple[str, ...]] = {
    "red": ("red", "crimson", "scarlet"),
    "orange": ("orange",),
    "yellow": ("yellow", "golden"),
    "green": ("green",),
    "cyan": ("cyan", "teal", "turquoise", "aqua"),
    "blue": ("blue", "navy"),
    "purple": ("purple", "violet"),
    "pink": ("pink",),
    "brown": ("brown",),
    "black": ("black",),
    "gray": ("gray", "grey", "silver"),
    "white": ("white",),
}
"""Words that :func:`enel.data.procedural.scoring.match_colour` accepts for each palette colour."""

JITTER = 0.04
"""Largest per-channel offset added to a part's colour (uniform, seeded)."""

# Colour families that parts of a category may take. Kept as tuples so sampling order is stable.
ANY: tuple[str, ...] = COLOUR_NAMES
BRIGHT: tuple[str, ...] = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")
METAL: tuple[str, ...] = ("gray", "black", "white")

MATERIAL_BY_COLOUR: dict[str, dict[str, str]] = {
    # material family -> colour -> material adjective; a part gets a material word only through this table,
    # so "wooden" is only ever said of brown parts and "metal" of gray or black ones
    "wood_or_metal": {"brown": "wooden", "gray": "metal", "black": "metal"},
    "wood": {"brown": "wooden"},
    "metal": {"gray": "metal", "black": "metal"},
    "fabric": {},
}


def rgb(name: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """The RGB value ``(3,)`` float32 of a palette colour, optionally jittered by at most :data:`JITTER`."""
    base = np.asarray(PALETTE[name], dtype=np.float64)
    if rng is not None:
        base = base + rng.uniform(-JITTER, JITTER, size=3)
    return np.clip(base, 0.0, 1.0).astype(np.float32)


def nearest_colour(value: np.ndarray) -> str:
    """The palette name closest (Euclidean in RGB) to ``value`` of shape ``(3,)``."""
    value = np.asarray(value, dtype=np.float64).reshape(3)
    names = list(PALETTE)
    table = np.asarray([PALETTE[n] for n in names])
    return names[int(np.argmin(((table - value) ** 2).sum(axis=1)))]
