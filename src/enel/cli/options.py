"""Flags and defaults shared by several groups of sub-commands."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_up_flag(parser: argparse.ArgumentParser) -> None:
    """``--up z|y``: the up axis of the files a command reads."""
    parser.add_argument("--up", choices=["z", "y"], default="z",
                        help="the axis pointing up in the files: z (default, the model's frame) or y (PointLLM's "
                             "Objaverse .npy, glTF); y-up clouds are turned to z-up before the model sees them")


def model_dir(args: argparse.Namespace) -> Path:
    """``--model``, or the quickstart's model folder (:func:`enel.paths.default_model_dir`) when it is not given."""
    from ..paths import default_model_dir

    return Path(args.model) if args.model else default_model_dir()
