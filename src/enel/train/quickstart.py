"""The main job: ``enel quickstart``.

Synthesises the procedural dataset, trains stage 1 (hybrid semantic loss) and stage 2 (hierarchical geometry
aggregation) on the embedded SmolLM2 default with the small point embedding, evaluates on the held-out split and
leaves a model folder that ``enel caption`` uses by default (``runs/quickstart/model``).

A second run reuses what exists: the dataset, each finished stage and the evaluation; an interrupted stage
resumes from its last checkpoint. ``--minutes`` is the training budget of both stages together.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path

__all__ = ["quickstart", "STAGE1_SHARE"]

STAGE1_SHARE = 0.85  # of the training budget; the rest goes to stage 2 (whose steps cost ~2-3x more: every weight trains)


def _finished(stage_dir: Path) -> bool:
    return (stage_dir / "model" / "config.json").is_file() and (stage_dir / "train_summary.json").is_file()


def _publish(target: Path, link: Path) -> None:
    """Point ``link`` at ``target`` atomically (a relative symlink replaced in one rename)."""
    tmp = link.with_name(f".{link.name}.tmp{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(os.path.relpath(target, link.parent), tmp)
    os.replace(tmp, link)


def quickstart(
    out: str | os.PathLike = "runs/quickstart",
    data_dir: str | os.PathLike = "data/procedural",
    minutes: float = 30.0,
    objects_per_category: int = 60,
    seed: int = 0,
    backbone: str = "smollm2",
    force: bool = False,
    eval_objects: int | None = None,
    threads: int | None = None,
    log=print,
) -> dict:
    """Run the whole pipeline; returns the evaluation summary (also in ``<out>/quickstart.json``).

    ``threads``: torch threads for training and evaluation (default: torch's choice, one per core). On a machine
    shared with other heavy jobs, 1 avoids the oversubscription that can make every op several times slower.
    """
    from ..data.procedural import synthesize
    from ..eval.procedural import evaluate_procedural
    from .recipe import load_recipe
    from .run import train

    import torch

    if threads:
        torch.set_num_threads(threads)
    t0 = time.time()
    out, data_dir = Path(out), Path(data_dir)
    out.mkdir(parents=True, exist_ok=True)
    command = "enel " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv and "enel" in sys.argv[0] else None
    timings: dict[str, float] = {}

    log(f"[quickstart 1/4] procedural dataset in {data_dir}")
    t = time.time()
    manifest = synthesize(data_dir, objects_per_category=objects_per_category, seed=seed)
    timings["data_seconds"] = round(time.time() - t, 1)

    common = [f"data.root={data_dir}", f"train.seed={seed}"] + ([f"train.threads={threads}"] if threads else [])
    stage_dirs = {1: out / "stage1", 2: out / "stage2"}
    budgets = {1: minutes * STAGE1_SHARE, 2: minutes * (1 - STAGE1_SHARE)}
    recipes = {
        1: load_recipe("smollm2_stage1", common + [f"backbone={backbone}", f"train.output_dir={stage_dirs[1]}",
                                                   f"train.max_minutes={budgets[1]}"]),
        2: load_recipe("smollm2_stage2", common + [f"init_from={stage_dirs[1] / 'model'}",
                                                   f"train.output_dir={stage_dirs[2]}",
                                                   f"train.max_minutes={budgets[2]}"]),
    }
    for stage in (1, 2):
        log(f"[quickstart {stage + 1}/4] stage {stage} ({'hybrid semantic loss' if stage == 1 else 'aggregation'}), "
            f"budget {budgets[stage]:.1f} min → {stage_dirs[stage]}")
        t = time.time()
        if _finished(stage_dirs[stage]) and not force:
            log(f"[quickstart] stage {stage} already trained; reusing {stage_dirs[stage] / 'model'}")
        else:
            train(recipes[stage], resume=not force, log=log)
        timings[f"stage{stage}_seconds"] = round(time.time() - t, 1)
    _publish(stage_dirs[2] / "model", out / "model")

    log("[quickstart 4/4] evaluation on the held-out test split")
    t = time.time()
    summary = evaluate_procedural(out / "model", data_dir, out / "eval", split="test", max_objects=eval_objects,
                                  seed=seed, command=command, log=log)
    timings["eval_seconds"] = round(time.time() - t, 1)
    stage_stats = {}
    for stage, d in stage_dirs.items():
        s = json.loads((d / "train_summary.json").read_text())
        stage_stats[f"stage{stage}"] = {"steps": s["global_step"], "minutes": round(s["minutes"], 2),
                                        "seconds_per_step": round(s["seconds_per_step"], 2),
                                        "train_loss": s["train_loss"]}
    record = {
        "command": command,
        "model": str(out / "model"),
        "data": str(data_dir),
        "dataset": {"categories": manifest["num_categories"], "objects": manifest["num_objects"]},
        "seed": seed,
        "threads": torch.get_num_threads(),
        "minutes_budget": minutes,
        "stages": stage_stats,
        "timings": {**timings, "total_seconds": round(time.time() - t0, 1)},
        "evaluation": {k: summary[k] for k in ("objects", "category_accuracy", "colour_accuracy", "caption_sbert")},
    }
    (out / "quickstart.json").write_text(json.dumps(record, indent=1))

    from ..eval.attention import attention_for_objects, procedural_files
    from ..eval.report import write_report
    from ..eval.resolution import quick_resolution

    t = time.time()
    if not (out / "eval" / "resolution").is_dir() or force:
        log("[quickstart] resolution sweep (1K-16K points) on a few held-out objects")
        quick_resolution(out / "model", data_dir, out / "eval" / "resolution", max_objects=8, seed=seed,
                         command=command, log=log)
    if not (out / "eval" / "attention").is_dir() or force:
        log("[quickstart] attention maps of the last layer")
        attention_for_objects(out / "model", procedural_files(data_dir, "test", 4), out / "eval" / "attention",
                              seed=seed, command=command, log=log)
    timings["sweep_and_attention_seconds"] = round(time.time() - t, 1)
    record["timings"] = {**timings, "total_seconds": round(time.time() - t0, 1)}
    (out / "quickstart.json").write_text(json.dumps(record, indent=1))
    paths = write_report(out)
    log(f"[quickstart] report: {paths['html']}")
    log(
        f"[quickstart] done in {record['timings']['total_seconds'] / 60:.1f} min: category accuracy "
        f"{summary['category_accuracy']:.1f} %, colour accuracy {summary['colour_accuracy']:.1f} %, caption "
        f"SBERT {summary['caption_sbert'] or 0:.1f} on {summary['objects']} held-out objects; "
        f"try `enel caption FILE` (model: {out / 'model'})"
    )
    return summary
