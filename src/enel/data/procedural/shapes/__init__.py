"""Mesh primitives and the part-based builders of the procedural dataset's categories.

Frame: **z is up**, objects stand on ``z = 0``, their front faces **-y** (the side one sits on, looks at or
drives towards is -y or +x, see each builder), units are roughly metres. Nothing here is normalised: the
generator centres and scales the sampled points afterwards (:func:`enel.data.procedural.generate.pc_norm`).

A mesh is a pair ``(vertices (V, 3) float64, faces (F, 3) int64)``; every primitive below returns one. A builder
takes a :class:`numpy.random.Generator` and returns a :class:`Geometry`: named :class:`Part` s (each a list of
meshes plus the words the language generator may say about it), so that colours are assigned per part and
every fact a caption states is read off the geometry that was built.

Modules: :mod:`.primitives` (the mesh primitives, :class:`Part`, :class:`Geometry`) and one module of builders
per group of categories: :mod:`.furniture`, :mod:`.household`, :mod:`.vehicles`, :mod:`.outdoor` (tools,
outdoor objects, buildings). :data:`BUILDERS` maps each category to its builder.
"""

from __future__ import annotations

from .furniture import build_chair, build_table, build_stool, build_bench, build_sofa, build_bed, build_bookshelf
from .household import (
    build_lamp, build_umbrella, build_fan, build_clock, build_monitor, build_laptop, build_mug, build_bowl,
    build_vase, build_bottle, build_guitar,
)
from .vehicles import build_airplane, build_car, build_truck, build_boat, build_bicycle, build_rocket
from .outdoor import build_sword, build_hammer, build_ladder, build_tree, build_house, build_snowman
from .primitives import (
    Geometry, Mesh, Part, box, cylinder, ellipsoid, extrude, lathe, loft, mesh_area, rod, rotation, torus, transform,
)

__all__ = [
    "Mesh",
    "Part",
    "Geometry",
    "BUILDERS",
    "box",
    "cylinder",
    "rod",
    "ellipsoid",
    "torus",
    "lathe",
    "extrude",
    "loft",
    "rotation",
    "transform",
    "mesh_area",
]

BUILDERS = {
    "airplane": build_airplane,
    "bed": build_bed,
    "bench": build_bench,
    "bicycle": build_bicycle,
    "boat": build_boat,
    "bookshelf": build_bookshelf,
    "bottle": build_bottle,
    "bowl": build_bowl,
    "car": build_car,
    "chair": build_chair,
    "clock": build_clock,
    "fan": build_fan,
    "guitar": build_guitar,
    "hammer": build_hammer,
    "house": build_house,
    "ladder": build_ladder,
    "lamp": build_lamp,
    "laptop": build_laptop,
    "monitor": build_monitor,
    "mug": build_mug,
    "rocket": build_rocket,
    "snowman": build_snowman,
    "sofa": build_sofa,
    "stool": build_stool,
    "sword": build_sword,
    "table": build_table,
    "tree": build_tree,
    "truck": build_truck,
    "umbrella": build_umbrella,
    "vase": build_vase,
}
"""Category name -> builder ``(rng) -> Geometry`` (30 categories)."""
