"""The main job: ``enel quickstart``.

Synthesises the procedural dataset, brings in the real ModelNet40 shapes when they are at hand, trains stage 1
(hybrid semantic loss) and stage 2 (hierarchical geometry aggregation) on the embedded SmolLM2 default with the
small point embedding, evaluates on the held-out procedural split and the ModelNet40 validation split, and leaves
a model folder that ``enel caption`` uses by default (``runs/quickstart/model``).

Each stage trains a fixed number of steps (:data:`STAGE_STEPS`), so the same seed trains the same model on any
machine, only sooner or later; ``minutes`` is an optional cap that stops early and says so.

Real shapes come from one setting: ``modelnet40`` (the ``--modelnet40`` flag), else the ``ENEL_MODELNET40``
environment variable, else the shared data folder beside the checkout when it exists
(:func:`enel.data.modelnet_import.modelnet40_source`). The archive is imported once into ``data/modelnet40``;
a validation split (10 % of each class, seeded) is carved out of it and never trained on. Without it the
quickstart trains on procedural data alone and says in one line how to add real data.

A second run reuses what exists: the datasets, each finished stage and the evaluations; an interrupted stage
resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

__all__ = ["quickstart", "STAGE_STEPS", "MODELNET_EVAL_PER_CLASS", "prepare_data", "shared_overrides", "train_stage",
           "evaluate_model"]

STAGE_STEPS = {1: 1300, 2: 50}
"""Training steps of stage 1 and stage 2 (batch 8). Stage 2 from the default's stage 1 measured the same after 50 steps
as after 100 (docs/training.md, "The alignment's weight, and a shorter stage 2")."""

MODELNET_EVAL_PER_CLASS = 10
"""ModelNet40 validation objects per class that the quickstart asks (both prompts); ``None`` asks all of them."""


def _finished(stage_dir: Path) -> bool:
    return (stage_dir / "model" / "config.json").is_file() and (stage_dir / "train_summary.json").is_file()


def _publish(target: Path, link: Path) -> None:
    """Point ``link`` at ``target`` atomically (a relative symlink replaced in one rename)."""
    tmp = link.with_name(f".{link.name}.tmp{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(os.path.relpath(target, link.parent), tmp)
    os.replace(tmp, link)


def _real_shapes(modelnet40, out_dir: Path, log) -> Path | None:
    """The imported ModelNet40 training archive in ``out_dir``, importing it first when needed; ``None`` when no
    source is set or found."""
    from .data.modelnet_import import detect_format, import_modelnet40, modelnet40_source

    imported = out_dir / "modelnet40_train.npz"
    source = Path(modelnet40) if modelnet40 else modelnet40_source()
    if source is None:
        log("[quickstart] no ModelNet40 found: training on procedural data alone. To add real shapes: "
            "`enel data modelnet40 --from FILE` (our npz, PointLLM's .dat or Princeton's ModelNet40.zip), "
            "or set ENEL_MODELNET40=FILE")
        return None
    if source.resolve() == imported.resolve():
        log(f"[quickstart] real shapes: {imported}")
        return imported
    if not imported.is_file():
        log(f"[quickstart] importing ModelNet40 from {source} into {out_dir}")
        # an npz whose name does not say its split, and Princeton's zip: their training split is what trains here
        written = import_modelnet40(source, out_dir, split="train" if detect_format(source) != "pickle" else None)
        if "train" not in written:
            from .errors import ConfigError

            raise ConfigError(f"{source} holds no ModelNet40 training split (found: {', '.join(written) or 'none'}); "
                              "the quickstart trains on the training split and validates on a part carved from it")
    else:
        log(f"[quickstart] real shapes: {imported} (imported before)")
    return imported


def _next_steps(model: Path) -> str:
    """How to type the inference commands, whether or not ``enel`` is on the PATH."""
    exe = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    on_path = shutil.which("enel")
    if exe is not None and exe.name == "enel" and (not on_path or Path(on_path).resolve() != exe.resolve()):
        rel = os.path.relpath(exe, Path.cwd()) if exe.is_absolute() else str(exe)
        return (f"next: `{rel} caption FILE` (or `. {Path(rel).parent}/activate` first, then `enel caption FILE`); "
                f"model: {model}")
    return f"next: `enel caption FILE` (model: {model})"


def quickstart(
    out: str | os.PathLike = "runs/quickstart",
    data_dir: str | os.PathLike = "data/procedural",
    *,
    modelnet40: str | os.PathLike | None = None,
    modelnet40_dir: str | os.PathLike = "data/modelnet40",
    steps: dict[int, int] | None = None,
    minutes: float | None = None,
    objects_per_category: int = 60,
    seed: int = 0,
    backbone: str = "smollm2",
    force: bool = False,
    eval_objects: int | None = None,
    modelnet_eval_per_class: int | None = MODELNET_EVAL_PER_CLASS,
    threads: int | None = None,
    extra_overrides: dict[int, list[str]] | None = None,
    log=print,
) -> dict:
    """Run the whole pipeline; returns the record also written to ``<out>/quickstart.json``.

    Args:
        steps: ``{1: N, 2: M}`` training steps of each stage (default :data:`STAGE_STEPS`).
        minutes: an optional cap on the training time of both stages together (split as the steps are); a
            stage that reaches its share stops early, and the record and the last line say so.
        modelnet40: a ModelNet40 source file (see the module docstring for the default).
        eval_objects: cap on held-out procedural objects (default: the whole test split).
        modelnet_eval_per_class: ModelNet40 validation objects per class to ask (``None``: all).
        threads: torch threads for training and evaluation (default: torch's, one per core).
        extra_overrides: recipe overrides per stage (``{1: ["optim.lr_new=2e-3"]}``), for experiments.
    """
    from .train.recipe import load_recipe

    import torch

    if threads:
        torch.set_num_threads(threads)
    steps = {**STAGE_STEPS, **(steps or {})}
    t0 = time.time()
    out, data_dir, modelnet40_dir = Path(out), Path(data_dir), Path(modelnet40_dir)
    out.mkdir(parents=True, exist_ok=True)
    command = "enel " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv and "enel" in sys.argv[0] else None
    timings: dict[str, float] = {}

    t = time.time()
    manifest, real = prepare_data(data_dir, modelnet40, modelnet40_dir, objects_per_category=objects_per_category,
                                  seed=seed, log=log,
                                  prefixes=("[quickstart 1/5] ", "[quickstart 2/5] "))
    timings["data_seconds"] = round(time.time() - t, 1)

    common = shared_overrides(data_dir, seed, threads, real)
    stage_dirs = {1: out / "stage1", 2: out / "stage2"}
    total = steps[1] + steps[2]
    caps = {s: minutes * steps[s] / total for s in (1, 2)} if minutes else {1: None, 2: None}
    firsts = {1: [f"backbone={backbone}"], 2: [f"init_from={stage_dirs[1] / 'model'}"]}
    recipes = {}
    for s in (1, 2):
        over = common + firsts[s] + [f"train.output_dir={stage_dirs[s]}", f"train.max_steps={steps[s]}"]
        over += [f"train.max_minutes={caps[s]}"] if caps[s] else []
        recipes[s] = load_recipe(f"smollm2_stage{s}", over + list((extra_overrides or {}).get(s, [])))
    for stage in (1, 2):
        cap = f", capped at {caps[stage]:.1f} min" if caps[stage] else ""
        log(f"[quickstart {stage + 2}/5] stage {stage} ({'hybrid semantic loss' if stage == 1 else 'aggregation'}): "
            f"{steps[stage]} steps{cap} → {stage_dirs[stage]}")
        t = time.time()
        train_stage(recipes[stage], force=force, log=log)
        timings[f"stage{stage}_seconds"] = round(time.time() - t, 1)
    _publish(stage_dirs[2] / "model", out / "model")

    log("[quickstart 5/5] evaluation: held-out procedural objects" + (", ModelNet40 validation split" if real else ""))
    t = time.time()
    evaluation = evaluate_model(out / "model", data_dir, out / "eval", real, recipes[1], eval_objects=eval_objects,
                                modelnet_eval_per_class=modelnet_eval_per_class, seed=seed, command=command, log=log)
    timings["eval_seconds"] = round(time.time() - t, 1)
    stage_stats = {}
    for stage, d in stage_dirs.items():
        s = json.loads((d / "train_summary.json").read_text())
        stage_stats[f"stage{stage}"] = {"steps": s["global_step"], "planned_steps": steps[stage],
                                        "stopped_early": s["global_step"] < steps[stage],
                                        "minutes": round(s["minutes"], 2),
                                        "seconds_per_step": round(s["seconds_per_step"], 2),
                                        "train_loss": s["train_loss"]}
        if (d / "word_prealign.json").is_file():  # the class-word pre-alignment before stage 1's first step
            pre = json.loads((d / "word_prealign.json").read_text())
            stage_stats[f"stage{stage}"]["word_prealign"] = {"steps": pre["steps"], "minutes": pre["minutes"]}
    record = {
        "command": command,
        "model": str(out / "model"),
        "data": str(data_dir),
        "real_data": str(real) if real else None,
        "dataset": {"categories": manifest["num_categories"], "objects": manifest["num_objects"]},
        "seed": seed,
        "threads": torch.get_num_threads(),
        "steps": steps,
        "minutes_cap": minutes,
        "stages": stage_stats,
        "timings": {**timings, "total_seconds": round(time.time() - t0, 1)},
        "evaluation": evaluation,
    }
    (out / "quickstart.json").write_text(json.dumps(record, indent=1))

    from .eval.attention import attention_for_objects, procedural_files
    from .eval.report import write_report
    from .eval.resolution import quick_resolution

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
    for line in _closing_lines(record):
        log(line)
    log(f"[quickstart] {_next_steps(out / 'model')}")
    return record


def prepare_data(data_dir: Path, modelnet40, modelnet40_dir: Path, *, objects_per_category: int, seed: int, log,
                 prefixes: tuple[str, str] = ("[data] ", "[data] ")) -> tuple[dict, Path | None]:
    """Synthesise the procedural dataset in ``data_dir`` (reused when it exists) and bring in the real shapes;
    returns the procedural manifest and the imported ModelNet40 training archive (``None`` without one)."""
    from .data.procedural import synthesize

    log(f"{prefixes[0]}procedural dataset in {data_dir}")
    manifest = synthesize(data_dir, objects_per_category=objects_per_category, seed=seed)
    log(f"{prefixes[1]}real shapes")
    return manifest, _real_shapes(modelnet40, modelnet40_dir, log)


def shared_overrides(data_dir: Path, seed: int, threads: int | None, real: Path | None) -> list[str]:
    """The recipe overrides every stage of a run shares: the data, the seed, the threads, the real shapes (or none)."""
    common = [f"data.root={data_dir}", f"train.seed={seed}"] + ([f"train.threads={threads}"] if threads else [])
    return common + ([f"data.modelnet40.path={real}"] if real else ["data.modelnet40.weight=0"])


def train_stage(recipe, *, force: bool = False, log=print) -> Path:
    """Train one stage unless its folder already holds a finished model (``force`` retrains); an interrupted stage
    resumes from its last checkpoint. Returns the model folder."""
    from .train.run import train

    stage_dir = Path(recipe.train.output_dir)
    if _finished(stage_dir) and not force:
        log(f"[{stage_dir.name}] already trained; reusing {stage_dir / 'model'}")
    else:
        train(recipe, resume=not force, log=log)
    return stage_dir / "model"


def evaluate_model(model: Path, data_dir: Path, eval_dir: Path, real: Path | None, recipe, *,
                   eval_objects: int | None, modelnet_eval_per_class: int | None, seed: int, command: str | None,
                   log) -> dict:
    """The held-out procedural test split and, with real shapes, the ModelNet40 validation split that ``recipe``
    carved out of them; returns ``{"procedural": {...}, "modelnet40_val": {...}}``."""
    from .eval.procedural import evaluate_procedural

    summary = evaluate_procedural(model, data_dir, eval_dir, split="test", max_objects=eval_objects, seed=seed,
                                  command=command, log=log)
    evaluation = {"procedural": {k: summary[k] for k in ("objects", "category_accuracy", "colour_accuracy",
                                                         "caption_sbert")}}
    if real:
        evaluation["modelnet40_val"] = _evaluate_real(model, eval_dir, real, recipe, modelnet_eval_per_class, seed,
                                                      command, log)
    return evaluation


def _evaluate_real(model: Path, eval_dir: Path, archive_path: Path, recipe, per_class, seed, command, log) -> dict:
    """The ModelNet40 validation split (the one the recipe carved out) in PointLLM's protocol."""
    from .data.modelnet_import import load_modelnet_archive
    from .eval.modelnet import evaluate_modelnet, select_objects

    mn = recipe.data.modelnet40
    archive = load_modelnet_archive(archive_path)
    picked = select_objects(archive.labels, archive.class_names, val_fraction=mn["val_fraction"],
                            split_seed=mn["split_seed"], per_class=per_class)
    s = evaluate_modelnet(model, archive.points, archive.labels, archive.class_names, picked, eval_dir,
                          object_ids=archive.object_ids, name="modelnet40_val", seed=seed, command=command, split="val",
                          log=log)
    return {"objects": s["objects"], **{k: {"overall_accuracy": v["overall_accuracy"],
                                            "mean_class_accuracy": v["mean_class_accuracy"]}
                                        for k, v in s["prompts"].items()}}


def _closing_lines(record: dict) -> list[str]:
    """The summary a person reads at the end: steps trained (and whether a cap cut them), both evaluations."""
    lines = []
    for name, s in record["stages"].items():
        early = (f" — stopped early by the {record['minutes_cap']:g}-minute cap at {s['steps']} of "
                 f"{s['planned_steps']} steps; the model is weaker than the default's") if s["stopped_early"] else ""
        pre = s.get("word_prealign")
        pre = f" after {pre['steps']} pre-alignment steps in {pre['minutes']:.1f} min" if pre else ""
        lines.append(f"[quickstart] {name}: {s['steps']} steps in {s['minutes']:.1f} min "
                     f"({s['seconds_per_step']:.2f} s/step){pre}{early}")
    p = record["evaluation"]["procedural"]
    lines.append(f"[quickstart] procedural held-out ({p['objects']} objects): category {p['category_accuracy']:.1f} %, "
                 f"colour {p['colour_accuracy']:.1f} %, caption SBERT {p['caption_sbert'] or 0:.1f}")
    m = record["evaluation"].get("modelnet40_val")
    if m:
        parts = [f"“{k}” {v['overall_accuracy']:.1f} % overall / {v['mean_class_accuracy']:.1f} % mean per class"
                 for k, v in m.items() if isinstance(v, dict)]
        lines.append(f"[quickstart] ModelNet40 validation ({m['objects']} real objects, trained on the rest of "
                     f"the training split, not zero-shot): {'; '.join(parts)}")
    lines.append(f"[quickstart] done in {record['timings']['total_seconds'] / 60:.1f} min")
    return lines
