"""``enel ablate TABLE``: retrain and evaluate each row of one of the paper's comparisons (:mod:`enel.ablation`)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from ..ablation import TABLES

    s = sub.add_parser("ablate", help="rerun one of the paper's comparisons at small scale and print its table",
                       description="Tables: " + "; ".join(f"{t.name}: {t.title}" for t in TABLES.values()))
    s.add_argument("table", help=f"one of: {', '.join(TABLES)}")
    s.add_argument("--quick", action="store_true",
                   help="the size for a 2-core CPU: fewer rows and steps, 30 procedural objects, one ModelNet40 "
                        "object per class")
    s.add_argument("--rows", default=None, help="comma-separated row names to run (default: all, or --quick's)")
    s.add_argument("--out", default="runs/ablations")
    s.add_argument("--data", default="data/procedural")
    s.add_argument("--steps", type=int, default=None, help="training steps of every stage (default: the table's)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--backbone", default="smollm2")
    s.add_argument("--threads", type=int, default=None)
    s.set_defaults(func=cmd_ablate)


def cmd_ablate(args: argparse.Namespace) -> int:
    from ..ablation import TABLES, run_table, select_rows
    from ..errors import ConfigError

    if args.table not in TABLES:
        raise ConfigError(f"unknown ablation table {args.table!r}; choose one of {', '.join(TABLES)}")
    rows = [r.strip() for r in args.rows.split(",") if r.strip()] if args.rows else None
    select_rows(TABLES[args.table], rows, args.quick)  # unknown rows fail here, before any data or training
    if args.steps is not None and args.steps < 1:
        raise ConfigError(f"--steps must be a positive number of steps, got {args.steps}")
    run_table(args.table, args.out, quick=args.quick, rows=rows, steps=args.steps, seed=args.seed,
              backbone=args.backbone, data_dir=args.data, threads=args.threads)
    return 0
