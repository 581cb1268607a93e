"""Where enel keeps cached assets (the converted SmolLM2 backbone, NLTK's WordNet) and run outputs.

``ENEL_CACHE`` overrides the cache folder (default ``~/.cache/enel``); nothing here lives in git.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    root = os.environ.get("ENEL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "enel")
    return Path(root)


def default_run_dir() -> Path:
    """The quickstart's output folder, also the default ``--model`` of the inference commands."""
    return Path(os.environ.get("ENEL_RUN_DIR", "runs/quickstart"))


def default_model_dir() -> Path:
    return default_run_dir() / "model"


def bundled_sample() -> Path:
    """A coloured procedural chair shipped with the package (8,192 points, binary PLY)."""
    return Path(__file__).parent / "assets" / "sample_chair.ply"
