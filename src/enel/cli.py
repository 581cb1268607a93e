"""The ``enel`` command.

Every sub-command lives in a small function that imports what it needs, so ``enel --help`` starts fast.
User-facing errors (:class:`enel.errors.EnelError`) print as one line ``error: …`` with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .errors import EnelError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# ----------------------------------------------------------------------------------------------------------
# setup
# ----------------------------------------------------------------------------------------------------------
def cmd_setup(args: argparse.Namespace) -> int:
    from .eval.wordnet import ensure_wordnet
    from .model.backbones import prepare_default_backbone

    wn = ensure_wordnet()
    print(f"wordnet: {wn if wn else 'not available (install Debian wordnet-base wordnet-sense-index)'}")
    path = prepare_default_backbone(force=args.force)
    print(f"backbone: {path}")
    return 0


# ----------------------------------------------------------------------------------------------------------
# tokens
# ----------------------------------------------------------------------------------------------------------
def bundled_sample() -> Path:
    """A coloured procedural chair shipped with the package (8,192 points, binary PLY)."""
    return Path(__file__).parent / "assets" / "sample_chair.ply"


def cmd_tokens(args: argparse.Namespace) -> int:
    import torch

    from .model.embedding import PointEmbeddingConfig, PointTokenEmbedding, count_parameters
    from .points.io import load_point_cloud
    from .points.transforms import pc_norm, resample

    torch.manual_seed(args.seed)
    cfg = PointEmbeddingConfig.preset(args.config)
    path = Path(args.file) if args.file else bundled_sample()
    t0 = time.perf_counter()
    cloud = load_point_cloud(path, seed=args.seed)
    load_s = time.perf_counter() - t0
    n_target = args.points or cfg.num_points
    points = cloud.as_array()
    points = resample(points, n_target, method=args.resample, seed=args.seed)
    points[:, :3] = pc_norm(points[:, :3])
    emb = PointTokenEmbedding(cfg).eval()
    x = torch.from_numpy(points).unsqueeze(0)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = emb(x)
    embed_s = time.perf_counter() - t0
    info = {
        "file": str(path),
        "points_in_file": int(cloud.xyz.shape[0]),
        "colour": cloud.colour_source,
        "notes": cloud.notes,
        "bbox_min": [round(float(v), 4) for v in cloud.xyz.min(0)],
        "bbox_max": [round(float(v), 4) for v in cloud.xyz.max(0)],
        "points_embedded": int(points.shape[0]),
        "config": args.config,
        "embedding_parameters": count_parameters(emb),
        "gflop_per_cloud": round(cfg.flops(points.shape[0]) / 1e9, 3),
        "tokens": list(out.features.shape),
        "centres": list(out.centres.shape),
        "patches": list(out.patches.shape),
        "load_seconds": round(load_s, 4),
        "embed_seconds": round(embed_s, 4),
        "note": "randomly initialised embedding: shapes and timing only",
    }
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        width = max(len(k) for k in info)
        for k, v in info.items():
            print(f"{k:<{width}}  {v}")
    return 0


# ----------------------------------------------------------------------------------------------------------
# parser
# ----------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="enel", description="ENEL: an encoder-free 3D large multimodal model")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("setup", help="prepare cached assets: WordNet for METEOR, the SmolLM2 conversion")
    s.add_argument("--force", action="store_true", help="rebuild the SmolLM2 conversion")
    s.set_defaults(func=cmd_setup)

    s = sub.add_parser("tokens", help="load a point cloud or mesh and print its point-token shapes")
    s.add_argument("file", nargs="?", help="point cloud or mesh file (default: the bundled sample chair)")
    s.add_argument("--points", type=int, default=None, help="resample to N points (default: the config's)")
    s.add_argument("--config", choices=["small", "paper"], default="small", help="embedding size preset")
    s.add_argument("--resample", choices=["fps", "random"], default="fps")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_tokens)
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
