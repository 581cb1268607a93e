"""``enel train`` (one stage from a recipe) and ``enel quickstart`` (data → stage 1 → stage 2 → evaluation)."""

from __future__ import annotations

import argparse

from ..pipeline import STAGE_STEPS


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("train", help="train one stage from a recipe (see configs/)")
    s.add_argument("--recipe", required=True, help="a bundled recipe name (e.g. smollm2_stage1) or a YAML path")
    s.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.batch_size=4")
    s.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("quickstart", help="the main job: data → stage 1 → stage 2 → evaluation on the embedded default")
    s.add_argument("--out", default="runs/quickstart")
    s.add_argument("--data", default="data/procedural")
    s.add_argument("--modelnet40", metavar="FILE",
                   help="real shapes to train and validate on: a ModelNet40 archive (npz, PointLLM's .dat, "
                        "Princeton's ModelNet40.zip); default: $ENEL_MODELNET40, else ../shared/data/modelnet40 "
                        "beside the checkout when it exists, else procedural data alone")
    s.add_argument("--stage1-steps", type=int, default=None, help=f"stage-1 training steps (default {STAGE_STEPS[1]})")
    s.add_argument("--stage2-steps", type=int, default=None, help=f"stage-2 training steps (default {STAGE_STEPS[2]})")
    s.add_argument("--minutes", type=float, default=None,
                   help="optional cap on the training time of both stages; a stage that reaches it stops early "
                        "and the summary says how many steps it trained")
    s.add_argument("--objects-per-category", type=int, default=60)
    s.add_argument("--backbone", default="smollm2")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--force", action="store_true", help="retrain even if a finished stage exists")
    s.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: one per core; 1 on a machine busy with other jobs)")
    s.set_defaults(func=cmd_quickstart)


def cmd_train(args: argparse.Namespace) -> int:
    from ..train.recipe import load_recipe
    from ..train.run import train

    recipe = load_recipe(args.recipe, args.overrides)
    outcome = train(recipe, resume=args.resume)
    print(f"model: {outcome.model_dir} ({outcome.global_step} steps)")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..pipeline import quickstart

    for flag, value in (("--stage1-steps", args.stage1_steps), ("--stage2-steps", args.stage2_steps)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be a positive number of steps, got {value}")
    if args.minutes is not None and args.minutes <= 0:
        raise ConfigError(f"--minutes is a cap on the training time and must be positive, got {args.minutes}")
    steps = {k: v for k, v in ((1, args.stage1_steps), (2, args.stage2_steps)) if v is not None}
    quickstart(out=args.out, data_dir=args.data, modelnet40=args.modelnet40, steps=steps, minutes=args.minutes,
               objects_per_category=args.objects_per_category, seed=args.seed, backbone=args.backbone,
               force=args.force, threads=args.threads)
    return 0
