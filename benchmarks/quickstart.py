"""The main job, measured: wall time, seconds per step of each stage, training throughput beside the achieved
and the machine's matmul GFLOP/s, and held-out quality (category accuracy, colour accuracy, caption SBERT).

Targets (issue "Data and the two-stage training pipeline"): ≥ 90 % category accuracy and ≥ 70 % colour accuracy
on the held-out procedural split within 30 minutes of training in total, on 2 CPU cores.

    python benchmarks/quickstart.py                      # runs `enel quickstart` (≈ 40 min) into runs/bench-quickstart
    python benchmarks/quickstart.py --reuse runs/quickstart   # measure an existing run without training again

FLOPs per training step are counted with ``torch.utils.flop_counter.FlopCounterMode`` on one real batch of each
stage (forward + backward, matmuls and attention), so the GFLOP/s column is achieved throughput, not a guess.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import machine_info, matmul_gflops, print_table, write_json  # noqa: E402


def step_flops(stage_dir: Path, recipe_name: str, data_dir: Path, batch_size: int) -> float:
    """FLOPs of one training step (forward + backward) of a stage, counted on a real batch."""
    from torch.utils.flop_counter import FlopCounterMode

    from enel.data.collate import EnelCollator
    from enel.train.recipe import load_recipe
    from enel.train.run import build_datasets, build_model

    summary = json.loads((stage_dir / "train_summary.json").read_text())
    recipe = load_recipe(recipe_name, [f"data.root={data_dir}", f"train.batch_size={batch_size}"])
    recipe.init_from = summary["recipe"].get("init_from")
    model, tok, _ = build_model(recipe)
    dataset, _ = build_datasets(recipe, model, tok)
    batch = EnelCollator.from_tokenizer(tok, return_extras=False)([dataset[i] for i in range(batch_size)])
    model.train()
    counter = FlopCounterMode(display=False)
    with counter, torch.autocast("cpu", dtype=torch.bfloat16):
        model(**batch).loss.backward()
    return float(counter.get_total_flops())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench-quickstart")
    ap.add_argument("--data", default="data/procedural")
    ap.add_argument("--minutes", type=float, default=None, help="optional cap on the training time")
    ap.add_argument("--reuse", default=None, help="an existing quickstart folder to measure instead of training")
    args = ap.parse_args()

    run_dir = Path(args.reuse or args.out)
    wall = None
    if not args.reuse:
        from enel.pipeline import quickstart

        t0 = time.time()
        quickstart(out=run_dir, data_dir=args.data, minutes=args.minutes)
        wall = time.time() - t0
    record = json.loads((run_dir / "quickstart.json").read_text())
    data_dir = Path(record["data"])
    evaluation = json.loads((run_dir / "eval" / "procedural_test_summary.json").read_text())
    fp32 = matmul_gflops(torch.float32)
    bf16 = matmul_gflops(torch.bfloat16)

    rows = []
    stages = {}
    for stage, recipe in ((1, "smollm2_stage1"), (2, "smollm2_stage2")):
        d = run_dir / f"stage{stage}"
        s = json.loads((d / "train_summary.json").read_text())
        bs = s["recipe"]["train"]["batch_size"] * s["recipe"]["train"]["grad_accum"]
        flops = step_flops(d, recipe, data_dir, s["recipe"]["train"]["batch_size"]) * s["recipe"]["train"]["grad_accum"]
        sps = s["seconds_per_step"]
        stages[stage] = {"steps": s["global_step"], "minutes": s["minutes"], "seconds_per_step": sps,
                         "samples_per_second": bs / sps, "gflop_per_step": flops / 1e9,
                         "achieved_gflops": flops / 1e9 / sps, "train_loss": s["train_loss"]}
        rows.append({"stage": stage, "steps": s["global_step"], "minutes": round(s["minutes"], 1),
                     "s/step": round(sps, 2), "samples/s": round(bs / sps, 2),
                     "GFLOP/step": round(flops / 1e9, 1), "achieved GFLOP/s": round(flops / 1e9 / sps, 1),
                     "% of bf16 matmul": round(100 * flops / 1e9 / sps / bf16, 1)})
    print_table(rows, title=f"training (matmul peak here: {fp32:.0f} GFLOP/s fp32, {bf16:.0f} GFLOP/s bf16)")
    train_minutes = sum(v["minutes"] for v in stages.values())
    quality = [
        {"measure": "category accuracy (%)", "value": round(evaluation["category_accuracy"], 1), "target": "≥ 90"},
        {"measure": "colour accuracy (%)", "value": round(evaluation["colour_accuracy"], 1), "target": "≥ 70"},
        {"measure": "caption SBERT (×100)", "value": round(evaluation["caption_sbert"] or 0, 1), "target": ""},
        {"measure": "training minutes (both stages)", "value": round(train_minutes, 1), "target": "≤ 30"},
        {"measure": "held-out objects", "value": evaluation["objects"], "target": ""},
        {"measure": "quickstart wall minutes", "value": round((wall or record["timings"]["total_seconds"]) / 60, 1),
         "target": ""},
    ]
    print_table(quality, title="held-out quality (procedural test split)")
    write_json("quickstart", {
        "run_dir": str(run_dir),
        "stages": stages,
        "evaluation": {k: evaluation[k] for k in ("objects", "category_accuracy", "colour_accuracy", "caption_sbert",
                                                  "per_category_accuracy")},
        "training_minutes": train_minutes,
        "wall_seconds": wall or record["timings"]["total_seconds"],
        "matmul_gflops": {"fp32": fp32, "bf16": bf16},
        "targets": {"category_accuracy": 90, "colour_accuracy": 70, "training_minutes": 30},
        "quickstart": record,
        "machine": machine_info(),
    })


if __name__ == "__main__":
    main()
