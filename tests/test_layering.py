"""Imports flow one way (DESIGN.md, "Layout"): a module may import only the layers below its own.

The order, lowest first: ``points`` ← ``model`` ← ``data`` ← ``inference`` ← ``train``, ``eval`` (peers that never
import each other) ← ``pipeline`` ← ``ablation`` ← ``cli``, ``demo``. ``errors``, ``paths`` and the package's ``__init__`` sit
under everything. ``inference`` (the Assistant and ``prepare_cloud``) sits below ``train`` and ``eval`` because
both ask a model questions through it (the caption previews, the benchmark generation); it imports nothing above
``data``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src" / "enel"
BASE = {"errors", "paths", "__init__", "__main__"}
ALLOWED = {
    "points": set(),
    "model": {"points"},
    "data": {"points", "model"},
    "inference": {"points", "model", "data"},
    "train": {"points", "model", "data", "inference"},
    "eval": {"points", "model", "data", "inference"},
    "pipeline": {"points", "model", "data", "inference", "train", "eval"},
    "ablation": {"points", "model", "data", "inference", "train", "eval", "pipeline"},
    "demo": {"points", "model", "data", "inference", "eval"},
    "cli": {"points", "model", "data", "inference", "train", "eval", "pipeline", "ablation", "demo"},
}


def imported_layers(path: Path) -> set[str]:
    """The top-level ``enel`` modules (``points``, ``model`` …) that the file at ``path`` imports."""
    rel = path.relative_to(SRC).with_suffix("").parts
    package = list(rel[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            if node.module:
                target = base + node.module.split(".")
                out.add(target[0] if target else "__init__")
            else:
                out.update((base + [a.name])[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("enel."):
            out.add(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "enel":
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("enel."))
    return out


def layer_of(path: Path) -> str:
    return path.relative_to(SRC).with_suffix("").parts[0]


FILES = sorted(p for p in SRC.rglob("*.py") if layer_of(p) not in BASE)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_flow_one_way(path):
    layer = layer_of(path)
    wrong = imported_layers(path) - ALLOWED[layer] - BASE - {layer, "__version__"}
    assert not wrong, f"{path.relative_to(SRC)} ({layer}) imports {sorted(wrong)}, above it in DESIGN.md's layout"


def test_every_layer_is_known():
    assert {layer_of(p) for p in FILES} <= set(ALLOWED)


def test_the_scanner_sees_relative_and_absolute_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "enel" / "model"
    pkg.mkdir(parents=True)
    f = pkg / "x.py"
    f.write_text("from ..train import run\nfrom . import layout\nimport enel.eval.metrics\nfrom enel.data import labels\n"
                 "from .. import inference\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path / "enel")
    assert imported_layers(f) == {"train", "model", "eval", "data", "inference"}
