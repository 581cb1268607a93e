"""``enel ablate TABLE``: the paper's comparisons (enel-method.md §5.3, Tables 1–4 and Figure 1a), rerun at small
scale on the SmolLM2 default.

A :class:`Table` is a list of :class:`Row`: a name, the paper's numbers for it (Cls, Cap GPT-4, Cap S-BERT) and
the recipe overrides (``section.key=value``, as ``enel train`` takes them) per stage that make it. Every row
trains from the same data and seed with the quickstart's functions (:mod:`enel.pipeline`): stage 1 alone, or for
``aggregation`` one shared stage 1 (the hybrid semantic loss) and a stage 2 per row; then it is evaluated on the
held-out procedural test split and, when ModelNet40 is at hand, its validation split (``resolution`` evaluates
at 1K/2K/4K/8K points instead of the split's size).

Each row writes ``<out>/<table>/<row>/metrics.json``; the table is written to ``<out>/<table>/table.md``. A row
whose ``metrics.json`` exists is not rerun, so an interrupted table resumes with its missing rows.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

__all__ = ["Row", "Table", "TABLES", "run_table", "row_recipes", "write_table", "QUICK_EVAL_OBJECTS",
           "RESOLUTION_SIZES"]

QUICK_EVAL_OBJECTS = 30
"""Held-out procedural objects a ``--quick`` row is evaluated on (ModelNet40: one object per class)."""

RESOLUTION_SIZES = (1024, 2048, 4096, 8192)
"""The points the ``resolution`` table evaluates each model at (Figure 1a's 2K/4K/8K and 1K)."""

PAPER_COLUMNS = ("Cls", "Cap GPT-4", "Cap S-BERT")
POINTLLM = (53.00, 44.85, 47.47)
"""PointLLM-7B in Tables 1–4 (Cls, Cap GPT-4, Cap S-BERT)."""

QUICK_PRETRAIN = {1: ("encoder_pretrain.steps=100",)}
"""``--quick``'s cut of the baseline's masked point modelling before stage 1 (200 steps in its recipe)."""


@dataclass(frozen=True)
class Row:
    """One row of a table.

    Attributes:
        name: the row's name (``--rows`` and the folder ``<out>/<table>/<name>``).
        label: what the paper's table calls it.
        paper: the paper's numbers, one per :data:`PAPER_COLUMNS` (``None`` where it gives none); for
            ``resolution``, Figure 1a's caption GPT-4 score per point count.
        overrides: recipe overrides per stage, ``{1: ("objective.name=masked", ...), 2: (...)}``.
        recipe: the stage-1 recipe family: ``smollm2`` or ``baseline_smollm2`` (the encoder baseline).
        quick_overrides: recipe overrides per stage of this row under ``--quick`` (the baseline's shorter encoder
            pre-training: an ENEL row's recipe refuses ``encoder_pretrain``).
        not_runnable: why the row cannot run here (``None``: it can).
    """

    name: str
    label: str
    paper: tuple | dict
    overrides: dict[int, tuple[str, ...]] = field(default_factory=dict)
    recipe: str = "smollm2"
    quick_overrides: dict[int, tuple[str, ...]] = field(default_factory=dict)
    not_runnable: str | None = None


@dataclass(frozen=True)
class Table:
    """A table: its rows, how many stages each row trains, and its ``--quick`` size.

    Attributes:
        stages: 1 (stage 1 per row) or 2 (one shared stage 1, a stage 2 per row).
        steps: training steps per stage of a full row; ``quick_steps`` those of ``--quick``.
        quick_rows: the rows ``--quick`` runs (all runnable rows when empty).
        resolution: evaluate each row at :data:`RESOLUTION_SIZES` points too.
        stage1_from: the table whose rows' stage-1 folders this table's rows share (trained once for both).
    """

    name: str
    title: str
    rows: tuple[Row, ...]
    stages: int = 1
    steps: dict[int, int] = field(default_factory=lambda: {1: 1300, 2: 100})
    quick_steps: dict[int, int] = field(default_factory=lambda: {1: 150, 2: 40})
    quick_rows: tuple[str, ...] = ()
    resolution: bool = False
    stage1_from: str | None = None

    def row(self, name: str) -> Row:
        for r in self.rows:
            if r.name == name:
                return r
        raise ConfigError(f"table {self.name!r} has no row {name!r}; its rows: {', '.join(r.name for r in self.rows)}")


SCHEDULE_LAYERS = 30
"""The depth the aggregation rows' schedules are written for: SmolLM2's 30 layers, so the paper's layer numbers
(written for 32) run as they are on it. Mapped onto 32 layers or more no two events share a layer (a scale below
1 would put consecutive layers on one: 8 and 9 of 32 both on SmolLM2's 8), though H may grow by one."""


def _schedule(levels: int, h: int) -> str:
    """Two aggregation blocks of ``levels`` levels with ``h`` layers on the coarsest sequence, in the paper's layer
    numbers (l = 3, H = 2 is aggregate after 1–3, propagate after 5–7; again 10 layers later or, when that would
    overlap, right after the first block)."""
    blocks = []
    offset = max(10, 2 * levels + h)
    for b in range(2):
        agg = [b * offset + i + 1 for i in range(levels)]
        blocks.append({"aggregate_after": agg, "propagate_after": [agg[-1] + h + i for i in range(levels)]})
    return "aggregation.schedule=" + json.dumps(blocks)


def _agg(levels: int, h: int, *more: str) -> dict[int, tuple[str, ...]]:
    return {2: (_schedule(levels, h), f"aggregation.reference_layers={SCHEDULE_LAYERS}") + more}


_SSL = "objective.name="
_DISTILL = ("the distillation row needs a Uni3D-L teacher's features, which cannot be had offline here "
            "(no teacher weights in the shared data)")

TABLES: dict[str, Table] = {t.name: t for t in (
    Table("embedding", "Table 1: token-embedding depth (stages of the point embedding)", (
        Row("te2", "+ 2-layer T.E.", (40.60, 38.85, 43.25), {1: ("point_config.num_stages=2",)}),
        Row("te3", "+ 3-layer T.E.", (45.55, 41.36, 44.82), {1: ("point_config.num_stages=3",)}),
        Row("te4", "+ 4-layer T.E.", (43.00, 40.47, 43.50), {1: ("point_config.num_stages=4",)}),
    )),
    Table("layers", "Table 2: learnable early LLM layers x stage-1 backbone learning rate", tuple(
        Row(f"l{k}_lr{lr}", f"{k} layers, lr {lr}", paper,
            {1: (f"trainable_layers={k}", f"optim.lr_llm={lr}")})
        for k, lr, paper in ((2, "2e-3", (40.00, 40.20, 44.82)), (2, "4e-4", (44.00, 42.62, 46.30)),
                             (4, "2e-3", (43.75, 40.13, 45.76)), (4, "4e-4", (47.90, 43.50, 46.70)),
                             (8, "2e-3", (42.35, 37.91, 41.28)), (8, "4e-4", (46.70, 42.80, 46.14)),
                             (12, "2e-3", (41.55, 40.05, 41.40)), (12, "4e-4", (46.15, 42.39, 46.00)))),
          quick_rows=("l2_lr4e-4", "l4_lr2e-3", "l4_lr4e-4", "l12_lr4e-4")),
    Table("ssl", "Table 3: self-supervised losses in stage 1 (each + cross-entropy, weight 1)", (
        Row("mm_patch_60", "Masked Modeling patch 60 %", (47.00, 43.64, 45.36),
            {1: (_SSL + "masked", "objective.masked_target=patch", "objective.mask_ratio=0.6")}),
        Row("mm_patch_30", "Masked Modeling patch 30 %", (49.00, 45.20, 46.29),
            {1: (_SSL + "masked", "objective.masked_target=patch", "objective.mask_ratio=0.3")}),
        Row("mm_feat_60", "Masked Modeling feat 60 %", (48.50, 43.90, 45.30),
            {1: (_SSL + "masked", "objective.masked_target=feature", "objective.mask_ratio=0.6")}),
        Row("mm_feat_30", "Masked Modeling feat 30 %", (48.50, 45.85, 46.93),
            {1: (_SSL + "masked", "objective.masked_target=feature", "objective.mask_ratio=0.3")}),
        Row("recon_patch", "Reconstruction patch", (48.00, 45.56, 46.33),
            {1: (_SSL + "reconstruction", "objective.recon_target=patch")}),
        Row("recon_feat", "Reconstruction feat", (47.50, 44.05, 46.18),
            {1: (_SSL + "reconstruction", "objective.recon_target=feature")}),
        Row("contrastive", "Contrastive", (42.50, 41.21, 43.77), {1: (_SSL + "contrastive",)}),
        Row("distillation", "Knowledge Distillation (Uni3D-L)", (48.00, 43.87, 46.09),
            {1: (_SSL + "distillation", "objective.teacher_dim=1024")}, not_runnable=_DISTILL),
        Row("hybrid_patch", "Hybrid Semantic Loss patch", (50.00, 45.24, 46.59),
            {1: (_SSL + "hybrid", "objective.masked_target=patch")}),
        Row("hybrid_feat", "Hybrid Semantic Loss feat, no per-layer PE (v4 has no such row; v1: 52.00 / 48.51 / "
            "48.06)", (None, None, None),
            {1: (_SSL + "hybrid", "objective.masked_target=feature", "objective.per_layer_pe=false")}),
        Row("hybrid_feat_pe", "Hybrid Semantic Loss feat + per-layer PE", (52.00, 47.65, 47.30),
            {1: (_SSL + "hybrid", "objective.masked_target=feature", "objective.per_layer_pe=true")}),
    ), quick_steps={1: 120, 2: 40},
        quick_rows=("mm_feat_30", "recon_patch", "contrastive", "hybrid_patch", "hybrid_feat", "hybrid_feat_pe")),
    Table("aggregation", "Table 4: hierarchical geometry aggregation in stage 2 (levels l, layers H, the gate)", (
        Row("l1", "l=1", (52.50, 48.70, 48.07), _agg(1, 2)),
        Row("l2", "l=2", (51.00, 46.67, 48.12), _agg(2, 2)),
        Row("l3", "l=3 (H=2: the paper's H=2 row 54.25 / 49.56 / 48.52, with the gate 55.55 / 51.03 / 48.79)",
            (53.00, 48.93, 48.06), _agg(3, 2)),
        Row("l4", "l=4", (45.00, 45.48, 46.90), _agg(4, 2)),
        Row("h4", "H=4 (l=3)", (52.50, 48.61, 47.81), _agg(3, 4)),
        Row("h8", "H=8 (l=3)", (52.25, 48.95, 47.90), _agg(3, 8)),
        Row("no_gate", "l=3, H=2, no tanh gate (the paper's row before '+ gated Self-Attn.')",
            (54.25, 49.56, 48.52), _agg(3, 2, "aggregation.gate=false")),
    ), stages=2, quick_steps={1: 150, 2: 40}, quick_rows=("l1", "l3", "h8", "no_gate")),
    Table("encoder", "Encoder-free (ENEL) against encoder-based (PointLLM-style baseline), stage 1, same "
                     "backbone, data and steps", (
        Row("enel", "ENEL: the CPU default's stage 1 (hybrid semantic loss feat, no per-layer PE; the paper's "
                    "numbers: Table 3's best row)", (52.00, 47.65, 47.30)),
        Row("baseline", "PointLLM-7B (Tables 1-4)", POINTLLM, recipe="baseline_smollm2",
            quick_overrides=QUICK_PRETRAIN),
    ), quick_steps={1: 200, 2: 40}),
    Table("resolution", "Figure 1a: train at the recipe's points, evaluate at 1K/2K/4K/8K (caption GPT-4 in the "
                        "paper, per point count)", (
        Row("enel", "ENEL", {2048: 44.6, 4096: 49.0, 8192: 51.0}),
        Row("baseline", "PointLLM", {2048: 33.7, 4096: 41.4, 8192: 44.0}, recipe="baseline_smollm2",
            quick_overrides=QUICK_PRETRAIN),
    ), quick_steps={1: 200, 2: 40}, resolution=True,
        stage1_from="encoder"),
)}
"""Every table ``enel ablate`` knows, by name."""


def select_rows(table: Table, rows: list[str] | None, quick: bool) -> list[Row]:
    """The rows to run: those named (each must exist), else ``--quick``'s subset, else every row."""
    if rows:
        return [table.row(r) for r in rows]
    if quick and table.quick_rows:
        return [table.row(r) for r in table.quick_rows]
    return list(table.rows)


def row_recipes(table: Table, row: Row, out: Path, *, common: list[str], steps: dict[int, int],
                backbone: str = "smollm2", quick: bool = False, extra: dict[int, list[str]] | None = None) -> dict:
    """The recipes of ``row``'s stages: ``{1: Recipe}`` or, for a two-stage table, ``{1: shared stage 1,
    2: Recipe}``; stage folders live in ``out/<table>/`` (the shared stage 1 in ``_stage1``), a ``stage1_from``
    table's stage 1 in that table's row folders."""
    from .train.recipe import load_recipe

    base = out / table.name
    first = out / table.stage1_from / row.name if table.stage1_from else base / (
        "_stage1" if table.stages == 2 else row.name)
    dirs = {1: first / "stage1", 2: base / row.name / "stage2"}
    recipes = {}
    for s in range(1, table.stages + 1):
        over = list(common) + [f"train.output_dir={dirs[s]}", f"train.max_steps={steps[s]}"]
        over += [f"backbone={backbone}"] if s == 1 else [f"init_from={dirs[1] / 'model'}"]
        over += list(row.quick_overrides.get(s, ())) if quick else []
        over += list((extra or {}).get(s, ()))
        over += list(row.overrides.get(s, ())) if (s == 2 or table.stages == 1) else []
        name = f"{row.recipe}_stage{s}" if s == 1 else f"smollm2_stage{s}"
        recipes[s] = load_recipe(name, over)
    return recipes


def _row_metrics(evaluation: dict, resolution: dict | None) -> dict:
    """The numbers the table shows: procedural category / colour / caption S-BERT, ModelNet40 accuracy, and the
    resolution sweep's category accuracy per point count."""
    p = evaluation["procedural"]
    m = {"category": p["category_accuracy"], "colour": p["colour_accuracy"], "caption_sbert": p["caption_sbert"]}
    mn = evaluation.get("modelnet40_val")
    if mn:
        accs = [v["overall_accuracy"] for v in mn.values() if isinstance(v, dict)]
        m["modelnet40"] = sum(accs) / len(accs) if accs else None
    if resolution:
        m["resolution"] = resolution
    return m


def run_row(table: Table, row: Row, out: Path, *, data_dir: Path, real: Path | None, seed: int, steps: dict[int, int],
            backbone: str, quick: bool, threads: int | None, eval_objects: int | None, per_class: int | None,
            extra: dict[int, list[str]] | None, log) -> dict:
    """Train and evaluate one row; writes and returns its ``metrics.json`` record."""
    from .pipeline import evaluate_model, shared_overrides, train_stage

    t0 = time.time()
    row_dir = out / table.name / row.name
    recipes = row_recipes(table, row, out, common=shared_overrides(data_dir, seed, threads, real), steps=steps,
                          backbone=backbone, quick=quick, extra=extra)
    for s in sorted(recipes):
        model = train_stage(recipes[s], log=log)
    evaluation = evaluate_model(model, data_dir, row_dir / "eval", real, recipes[1], eval_objects=eval_objects,
                                modelnet_eval_per_class=per_class, seed=seed, command=None, log=log)
    resolution = None
    if table.resolution:
        from .eval.resolution import quick_resolution

        paths = quick_resolution(model, data_dir, row_dir / "eval" / "resolution", sizes=RESOLUTION_SIZES,
                                 max_objects=eval_objects or 60, seed=seed, log=log)
        doc = json.loads(Path(paths["json"]).read_text())
        resolution = {str(r["num_points"]): r.get("category_accuracy") for r in doc["rows"]}
    trained = {}
    for s, r in recipes.items():
        summary = json.loads((Path(r.train.output_dir) / "train_summary.json").read_text())
        trained[f"stage{s}"] = summary["global_step"]
    record = {"table": table.name, "row": row.name, "label": row.label, "seed": seed, "quick": quick,
              "backbone": backbone, "steps": trained, "wall_seconds": round(time.time() - t0, 1),
              "overrides": {str(s): list(v) for s, v in row.overrides.items()}, "recipe": row.recipe,
              "real_data": str(real) if real else None, "metrics": _row_metrics(evaluation, resolution),
              "evaluation": evaluation}
    row_dir.mkdir(parents=True, exist_ok=True)
    tmp = row_dir / f".metrics.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, row_dir / "metrics.json")
    return record


def _fmt(v, digits: int = 1) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def write_table(table: Table, out: Path, *, header: str = "") -> Path:
    """``out/<table>/table.md``: one line per row, our numbers (from its ``metrics.json``, or "not run") next to
    the paper's, with the seed, steps and wall time."""
    ours = ["category %", "colour %", "caption S-BERT", "ModelNet40 %"]
    if table.resolution:
        sizes = [str(n) for n in RESOLUTION_SIZES]
        cols = [f"ours {int(n) // 1024}K cat. %" for n in sizes] + [f"paper {int(n) // 1024}K" for n in sizes]
    else:
        cols = [f"ours {c}" for c in ours] + [f"paper {c}" for c in PAPER_COLUMNS]
    lines = [f"# {table.title}", ""] + ([header, ""] if header else []) + [
        "| row | " + " | ".join(cols) + " | seed | steps | wall min |", "|---|" + "---:|" * (len(cols) + 3)]
    for row in table.rows:
        path = out / table.name / row.name / "metrics.json"
        rec = json.loads(path.read_text()) if path.is_file() else None
        m = rec["metrics"] if rec else {}
        if table.resolution:
            our, paper = [(m.get("resolution") or {}).get(n) for n in sizes], [row.paper.get(int(n)) for n in sizes]
        else:
            our, paper = [m.get("category"), m.get("colour"), m.get("caption_sbert"), m.get("modelnet40")], row.paper
        tail = (f"{rec['seed']} | {'/'.join(str(v) for v in rec['steps'].values())} | {rec['wall_seconds'] / 60:.1f}"
                if rec else ("not runnable: " + row.not_runnable if row.not_runnable else "not run") + " | – | –")
        cells = [_fmt(v) for v in our] + [_fmt(v, 2) for v in paper]  # the paper's numbers as it prints them
        lines.append(f"| {row.name}: {row.label} | " + " | ".join(cells) + f" | {tail} |")
    path = out / table.name / "table.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_table(name: str, out: str | os.PathLike = "runs/ablations", *, quick: bool = False,
              rows: list[str] | None = None, steps: int | None = None, seed: int = 0, backbone: str = "smollm2",
              data_dir: str | os.PathLike = "data/procedural", modelnet40=None,
              modelnet40_dir: str | os.PathLike = "data/modelnet40", objects_per_category: int = 60,
              eval_objects: int | None = None, modelnet_eval_per_class: int | None = None,
              threads: int | None = None, extra_overrides: dict[int, list[str]] | None = None, log=print,
              run_row=run_row) -> Path:
    """Run the missing rows of table ``name`` and write its ``table.md``; returns that path.

    Args:
        quick: the table's ``--quick`` size: its ``quick_rows``, ``quick_steps``, :data:`QUICK_EVAL_OBJECTS`
            procedural objects and one ModelNet40 object per class.
        rows: run only these rows.
        steps: training steps of every stage (default: the table's, or its quick ones).
        extra_overrides: recipe overrides per stage for every row (tests: a tiny backbone's schedule).
        run_row: the function that trains and evaluates one row (tests count its calls).
    """
    from .pipeline import prepare_data

    if name not in TABLES:
        raise ConfigError(f"unknown ablation table {name!r}; choose one of {', '.join(TABLES)}")
    table = TABLES[name]
    chosen = select_rows(table, rows, quick)
    out, data_dir = Path(out), Path(data_dir)
    stage_steps = {s: steps or (table.quick_steps if quick else table.steps)[s] for s in range(1, table.stages + 1)}
    if eval_objects is None and quick:
        eval_objects = QUICK_EVAL_OBJECTS
    per_class = modelnet_eval_per_class if modelnet_eval_per_class is not None else (1 if quick else 10)
    header = (f"Our numbers: held-out procedural test split (category, colour, caption S-BERT) and the ModelNet40 "
              f"validation split (mean of both prompts), the {backbone} backbone. The paper's: GPT-4 / S-BERT on "
              f"Objaverse at 7B (enel-method.md §5.3); compare the ordering of rows, not the values. "
              f"Rows run{' (--quick)' if quick else ''}: {', '.join(r.name for r in chosen)}; "
              f"steps per stage: {'/'.join(str(v) for v in stage_steps.values())}.")
    todo = [r for r in chosen if not (out / table.name / r.name / "metrics.json").is_file()]
    for r in chosen:
        if r not in todo:
            log(f"[ablate {name}] {r.name}: metrics.json exists, not rerun")
    todo_runnable = []
    for r in todo:
        if r.not_runnable:
            log(f"[ablate {name}] {r.name}: not runnable: {r.not_runnable}")
        else:
            todo_runnable.append(r)
    if todo_runnable:
        import torch

        if threads:
            torch.set_num_threads(threads)
        _, real = prepare_data(data_dir, modelnet40, Path(modelnet40_dir), objects_per_category=objects_per_category,
                               seed=seed, log=log, prefixes=(f"[ablate {name}] ", f"[ablate {name}] "))
        for i, r in enumerate(todo_runnable, 1):
            log(f"[ablate {name}] row {i}/{len(todo_runnable)}: {r.name} ({r.label})")
            run_row(table, r, out, data_dir=data_dir, real=real, seed=seed, steps=stage_steps, backbone=backbone,
                    quick=quick, threads=threads, eval_objects=eval_objects, per_class=per_class,
                    extra=extra_overrides, log=log)
    path = write_table(table, out, header=header)
    log(path.read_text())
    return path
