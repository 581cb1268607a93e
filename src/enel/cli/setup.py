"""``enel setup``: prepare the cached assets (WordNet for METEOR, the SmolLM2 conversion)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("setup", help="prepare cached assets: WordNet for METEOR, the SmolLM2 conversion")
    s.add_argument("--force", action="store_true", help="rebuild the SmolLM2 conversion")
    s.set_defaults(func=cmd_setup)


def cmd_setup(args: argparse.Namespace) -> int:
    from ..eval.wordnet import ensure_wordnet
    from ..model.backbones import prepare_default_backbone

    wn = ensure_wordnet()
    print(f"wordnet: {wn if wn else 'not available (install Debian wordnet-base wordnet-sense-index)'}")
    path = prepare_default_backbone(force=args.force)
    print(f"backbone: {path}")
    return 0
