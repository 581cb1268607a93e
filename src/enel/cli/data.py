"""``enel data``: synthesise the procedural dataset, import or convert ModelNet40."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import EnelError


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("data", help="datasets: synthesise the procedural data, import or convert ModelNet40")
    dsub = s.add_subparsers(dest="data_command", required=True)
    d = dsub.add_parser("synth", help="write the procedural 3D instruction dataset in PointLLM's layout")
    d.add_argument("--out", default="data/procedural")
    d.add_argument("--objects-per-category", type=int, default=60)
    d.add_argument("--points", type=int, default=8192)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--force", action="store_true", help="regenerate even if the folder holds the same dataset")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_data_synth)
    d = dsub.add_parser("convert-modelnet", help="PointLLM's modelnet40_test_8192pts_fps.dat → a pickle-free .npz")
    d.add_argument("pickle")
    d.add_argument("out")
    d.add_argument("--allow-pickle", action="store_true", help="confirm you trust the pickle (it is unpickled once)")
    d.set_defaults(func=cmd_data_convert_modelnet)

    d = dsub.add_parser("modelnet40", help="import your ModelNet40 (npz, PointLLM's .dat, Princeton's "
                                            "ModelNet40.zip) into data/modelnet40 as z-up unit-sphere clouds")
    d.add_argument("--from", dest="source", required=True, metavar="FILE",
                   help="an .npz (points, labels, class_names[, object_ids]), PointLLM's "
                        "modelnet40_test_8192pts_fps.dat, or Princeton's ModelNet40.zip / its unpacked folder")
    d.add_argument("--out", default="data/modelnet40", help="output folder (default data/modelnet40, git-ignored)")
    d.add_argument("--allow-pickle", action="store_true", help="confirm you trust the .dat pickle (read once, "
                                                               "with a numpy-only unpickler)")
    d.add_argument("--split", choices=["train", "test"], default=None,
                   help="the split an .npz holds (default: from its name); for the zip, import only this split")
    d.add_argument("--points", type=int, default=None,
                   help="points per cloud (meshes: default 1024; point sources: default keep theirs)")
    d.add_argument("--up", choices=["z", "y"], default=None,
                   help="override the source's up axis (default: npz z, .dat y, Princeton meshes z)")
    d.add_argument("--seed", type=int, default=0, help="seeds the mesh surface sampling")
    d.add_argument("--json", action="store_true", help="print the written paths as JSON, no progress")
    d.set_defaults(func=cmd_data_modelnet40)


def cmd_data_synth(args: argparse.Namespace) -> int:
    from ..data.procedural import synthesize

    manifest = synthesize(args.out, objects_per_category=args.objects_per_category, seed=args.seed,
                          num_points=args.points, force=args.force)
    print(json.dumps(manifest, indent=1) if args.json else f"procedural dataset ready in {args.out}")
    return 0


def cmd_data_convert_modelnet(args: argparse.Namespace) -> int:
    from ..data.modelnet import convert_modelnet

    if not args.allow_pickle:
        raise EnelError(
            "converting the ModelNet40 pickle unpickles it, which can run code from the file: pass --allow-pickle "
            "if you trust it (enel uses a restricted unpickler that only admits numpy arrays and lists)"
        )
    out = convert_modelnet(args.pickle, args.out, allow_pickle=True)
    print(f"wrote {out}")
    return 0


def cmd_data_modelnet40(args: argparse.Namespace) -> int:
    from ..data.modelnet_import import import_modelnet40

    written = import_modelnet40(args.source, args.out, split=args.split, allow_pickle=args.allow_pickle,
                                seed=args.seed, num_points=args.points, up=args.up, progress=not args.json)
    if args.json:
        print(json.dumps({split: str(path) for split, path in written.items()}, indent=1))
    else:
        for split, path in written.items():
            print(f"wrote {path} ({split})")
        print(f"manifest and licence note: {Path(args.out) / 'README.md'} (ModelNet40 is for academic research "
              "only: never commit or ship it)")
    return 0
