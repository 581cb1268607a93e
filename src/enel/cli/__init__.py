"""The ``enel`` command, one module per group of sub-commands.

* :mod:`.setup` — ``enel setup``: the cached assets (WordNet, the SmolLM2 conversion)
* :mod:`.infer` — ``tokens``, ``caption``, ``classify``, ``ask``, ``chat``, ``init``: a model and files
* :mod:`.data` — ``enel data synth | convert-modelnet | modelnet40``
* :mod:`.train` — ``train`` (one stage from a recipe) and ``quickstart`` (the whole pipeline)
* :mod:`.demo` — ``enel demo``: the web demo
* :mod:`.eval` — ``enel eval generate | metrics | judge | resolution | attention | report | modelnet``
* :mod:`.ablate` — ``enel ablate TABLE``: the paper's comparisons, rerun

Each module has ``register(subparsers)``, which adds its parsers, and one ``cmd_*`` function per sub-command
that imports what it needs, so ``enel --help`` starts fast. User-facing errors (:class:`enel.errors.EnelError`)
print as one line ``error: …`` with exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import EnelError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``enel`` parser: every group's sub-commands, in the order ``enel --help`` lists them."""
    from . import ablate, data, demo, infer, setup, train
    from . import eval as eval_commands

    p = argparse.ArgumentParser(prog="enel", description="ENEL: an encoder-free 3D large multimodal model")
    sub = p.add_subparsers(dest="command", required=True)
    for group in (setup, infer, data, train, demo, eval_commands, ablate):
        group.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except EnelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
