"""Resolution sweep (``enel eval resolution``): one benchmark at 1K, 2K, 4K, 8K and 16K points (Figure 1a).

ENEL's token count does not depend on the input resolution (the embedding always keeps 128 + 1 tokens), so the
paper shows its captioning score degrading gently away from the 8192 training points while PointLLM's collapses.
This module reruns a benchmark at each resolution with the same model and decoding, scores each run offline and
writes a table (Markdown + JSON) and a line plot.

Where the points come from (``dense``):

* ``"stored"`` — the stored cloud resampled to N (:func:`enel.points.transforms.resample`): farthest point
  sampling down; **up**, all stored points followed by seeded exact duplicates. Duplicates add no geometry; they
  do change the tokens a little, because the kNN neighbourhoods of the embedding then contain copies and cover
  a smaller area. This is the only rule for Objaverse and ModelNet40, whose files hold 8192 points.
* ``"mesh"`` — procedural data only: every object is rebuilt from the generator
  (:func:`enel.data.procedural.make_object` with the dataset's seed, yaw range and up axis) with
  ``max(sizes)`` true surface samples, once, and **every** resolution is an FPS subset of that dense cloud,
  so all resolutions see the same pose. The object is the same as the stored one (geometry, parts, colours
  come from their own seeded streams), but its surface samples differ and, because the yaw is drawn after the
  samples, it may be turned by a different angle within the dataset's ±``max_yaw_degrees``.
* ``"auto"`` (default) — ``"mesh"`` for procedural data when some size exceeds the stored points, else
  ``"stored"``.

Scores (offline, no LLM judge; every score ×100):

* captioning: Sentence-BERT cosine to the reference (``caption_sbert``), BLEU-1 and ROUGE-L
  (:func:`enel.eval.metrics.compute_metrics`, METEOR off to keep the sweep fast);
* procedural classification: category accuracy (:func:`enel.data.procedural.match_category`);
* ModelNet40 classification: exact-match and nearest-class accuracy (:func:`enel.eval.metrics.classify_closed_set`);
* Objaverse classification and QA: Sentence-BERT cosine to the reference text (a proxy: PointLLM's numbers
  need the GPT judge, ``enel eval judge``).

Layout of ``out_dir``: ``{N}/<results file>.json`` (resumable, :mod:`enel.eval.generate`) and its
``*_evaluated_traditional.json``, then ``resolution.json``, ``resolution.md`` and ``resolution.png``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ConfigError
from .generate import (Benchmark, BenchmarkItem, api_command, cli_command, decoding_settings, load_benchmark,
                       run_benchmark, run_metadata)
from .results import ResultsFile, atomic_write_json

__all__ = [
    "DEFAULT_SIZES",
    "DENSE_RULES",
    "METRIC_LABELS",
    "resolution_sweep",
    "quick_resolution",
    "score_results",
    "write_resolution_table",
    "plot_resolution",
    "points_label",
]

DEFAULT_SIZES: tuple[int, ...] = (1024, 2048, 4096, 8192, 16384)
DENSE_RULES: tuple[str, ...] = ("auto", "mesh", "stored")
METRIC_LABELS: dict[str, str] = {
    "category_accuracy": "category accuracy (%)",
    "caption_sbert": "caption SBERT",
    "caption_bleu-1": "caption BLEU-1",
    "caption_rouge-l": "caption ROUGE-L",
    "modelnet_exact_accuracy": "ModelNet40 exact-match accuracy (%)",
    "modelnet_embedding_accuracy": "ModelNet40 nearest-class accuracy (%)",
    "classification_sbert": "classification SBERT (vs GT caption)",
    "qa_sbert": "QA SBERT",
    "qa_bleu-1": "QA BLEU-1",
}
"""Every score the sweep can report, in table order, with its label."""
_HEADLINE = ("category_accuracy", "caption_sbert", "modelnet_exact_accuracy", "modelnet_embedding_accuracy",
             "classification_sbert", "qa_sbert")
_FALLBACK = {"caption_sbert": "caption_bleu-1", "qa_sbert": "qa_bleu-1"}


# ----------------------------------------------------------------------------------------------------------
# Clouds at each resolution
# ----------------------------------------------------------------------------------------------------------
def _resolve_dense(dense: str, bench: Benchmark, sizes: Sequence[int]) -> str:
    if dense not in DENSE_RULES:
        raise ConfigError(f"dense must be one of {', '.join(DENSE_RULES)}, not {dense!r}")
    if dense == "mesh" and bench.source != "procedural":
        raise ConfigError("dense='mesh' rebuilds objects from the procedural generator; the "
                          f"{bench.source} source only has its stored points (use dense='stored')")
    if dense == "auto":
        return "mesh" if bench.source == "procedural" and max(sizes) > (bench.stored_points or 0) else "stored"
    return dense


class _Clouds:
    """Clouds of the sweep's items at any size, computed once per (object, size).

    ``rule="mesh"``: a dense generator cloud per object (``dense_points`` surface samples) and FPS subsets of it;
    ``rule="stored"``: ``item.load(n)``.
    """

    def __init__(self, rule: str, dense_points: int, generator_params: dict | None):
        self.rule = rule
        self.dense_points = dense_points
        self.params = generator_params or {}
        self._dense: dict[Any, np.ndarray] = {}
        self._cache: dict[tuple[Any, int], np.ndarray] = {}

    def dense_cloud(self, item: BenchmarkItem) -> np.ndarray:
        """``(dense_points, 6)`` float32: the object rebuilt by the generator at the dense resolution."""
        from ..data.procedural.generate import make_object

        oid = item.object_id
        if oid not in self._dense:
            p = self.params
            obj = make_object(item.info["category"], int(item.info["index"]), seed=int(p.get("seed", 0)),
                              num_points=self.dense_points, max_yaw_degrees=float(p.get("max_yaw_degrees", 15.0)),
                              up_axis=p.get("up_axis", "z"))
            self._dense[oid] = obj.points
        return self._dense[oid]

    def __call__(self, item: BenchmarkItem, n: int) -> np.ndarray:
        from ..points.transforms import model_input

        key = (item.key if self.rule == "stored" else item.object_id, n)
        if key not in self._cache:
            if self.rule == "mesh":
                pts = model_input(self.dense_cloud(item), n)
            else:
                pts = item.load(n)
            self._cache[key] = np.asarray(pts, dtype=np.float32)
        return self._cache[key]


def _rule_text(rule: str, dense_points: int) -> str:
    if rule == "mesh":
        return (f"procedural objects rebuilt by the generator at {dense_points} surface points; every resolution is "
                "an FPS subset of that cloud")
    return "stored points: FPS down, all points plus seeded duplicates up (enel.points.transforms.resample)"


# ----------------------------------------------------------------------------------------------------------
# Scores
# ----------------------------------------------------------------------------------------------------------
def score_results(rf: ResultsFile, task: str, source: str, *, sbert: Any = None,
                  metrics_path=None) -> dict[str, float]:
    """Offline scores of one results file (×100), keyed as in :data:`METRIC_LABELS`.

    Args:
        rf: generated results.
        sbert: ``None`` (bundled all-MiniLM-L6-v2), a folder, a loaded encoder (anything with ``encode``), or
            ``False`` to skip Sentence-BERT (then BLEU-1 stands in for captions and QA).
        metrics_path: where to write the text-metrics document (PointLLM's ``*_evaluated_traditional.json``
            layout) when text metrics are computed; None writes nothing.
    """
    from .metrics import classify_closed_set, compute_metrics, exact_match_class, label_index, write_metrics

    if not rf.results:
        return {}
    if task == "classification" and source == "procedural":
        return {"category_accuracy": 100.0 * float(np.mean([bool(r.get("correct")) for r in rf.results]))}
    if task == "classification" and source == "modelnet":
        if sbert is False:
            ok = [exact_match_class(r["model_output"]) == label_index(r) for r in rf.results]
            return {"modelnet_exact_accuracy": 100.0 * float(np.mean(ok))}
        s = classify_closed_set(rf, encoder=sbert)["summary"]
        return {"modelnet_exact_accuracy": s["exact_match_accuracy"],
                "modelnet_embedding_accuracy": s["embedding_accuracy"]}
    doc = compute_metrics(rf, sbert=sbert, meteor_enabled=False, bleu_orders=("bleu-1",))
    if metrics_path is not None:
        write_metrics(doc, metrics_path)
    s = doc["summary"]
    prefix = {"captioning": "caption", "qa": "qa", "classification": "classification"}[task]
    out = {}
    if "sbert_similarity" in s:
        out[f"{prefix}_sbert"] = s["sbert_similarity"]
    if task != "classification":
        out[f"{prefix}_bleu-1"] = s["bleu-1"]
        if task == "captioning":
            out[f"{prefix}_rouge-l"] = s["rouge-l"]
    return out


# ----------------------------------------------------------------------------------------------------------
# Table and plot
# ----------------------------------------------------------------------------------------------------------
def points_label(n: int) -> str:
    """A point count as the table and the plot show it: ``"2K"`` for 2048, else the number."""
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)


def _provenance(meta: dict) -> str:
    return (f"model `{meta.get('model')}`, source {meta.get('source')}, split `{meta.get('split')}`, "
            f"seed {meta.get('seed')}, {meta.get('objects')} objects; command: `{meta.get('command')}`")


def write_resolution_table(doc: dict, path) -> Path:
    """The sweep as Markdown: one row per score, one column per resolution, plus where the numbers come from."""
    sizes = doc["sizes"]
    train = doc["meta"].get("train_points")
    head = [(points_label(n) + (" (train)" if n == train else "")) for n in sizes]
    lines = [f"# Resolution sweep ({doc['meta'].get('source')}, {doc['meta'].get('split')})", "",
             _provenance(doc["meta"]), "", f"Points: {doc['meta'].get('points_rule')}.", "",
             "| score | " + " | ".join(head) + " |", "|---|" + "---:|" * len(sizes)]
    by_n = {row["num_points"]: row for row in doc["rows"]}
    for key in doc["metrics"]:
        vals = ["–" if v is None else f"{v:.2f}" for v in (by_n.get(n, {}).get(key) for n in sizes)]
        lines.append(f"| {METRIC_LABELS.get(key, key)} | " + " | ".join(vals) + " |")
    secs = [f"{by_n.get(n, {}).get('seconds', 0):.0f}" for n in sizes]
    lines += ["", "| | " + " | ".join(head) + " |", "|---|" + "---:|" * len(sizes),
              "| seconds (clouds + generation) | " + " | ".join(secs) + " |"]
    p = Path(path)
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def plot_resolution(doc: dict, path) -> Path:
    """A Figure-1a-style line plot: score against points (log2 axis), the training resolution marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sizes = doc["sizes"]
    fig = Figure(figsize=(6.4, 4.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    by_n = {row["num_points"]: row for row in doc["rows"]}
    plotted = [k for k in doc["metrics"] if k in doc.get("headline", doc["metrics"])]
    for key in plotted:
        xs = [n for n in sizes if by_n.get(n, {}).get(key) is not None]
        ys = [by_n[n][key] for n in xs]
        if not xs:
            continue
        ax.plot(xs, ys, marker="o", linewidth=2, label=METRIC_LABELS.get(key, key))
        for x, y in zip(xs, ys):
            ax.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    values = [row[k] for row in doc["rows"] for k in plotted if row.get(k) is not None]
    top = max(values, default=0.0)
    ax.set_ylim(0, min(105.0, max(10.0, 1.15 * top + 2)) if top <= 100 else None)
    train = doc["meta"].get("train_points")
    if train:
        ax.axvline(train, color="grey", linestyle="--", linewidth=1)
        ax.text(train, ax.get_ylim()[1], " training resolution", color="grey", fontsize=8, va="top")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes)
    ax.set_xticklabels([points_label(n) for n in sizes])
    ax.set_xlabel("input points")
    ax.set_ylabel("score")
    ax.grid(alpha=0.3)
    meta = doc["meta"]
    ax.set_title(f"Resolution robustness — {meta.get('source')} {meta.get('split')}, {meta.get('objects')} objects",
                 fontsize=10)
    if plotted:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    p = Path(path)
    fig.savefig(p)
    return p


# ----------------------------------------------------------------------------------------------------------
# The sweep
# ----------------------------------------------------------------------------------------------------------
def resolution_sweep(model_dir, out_dir, *, source: str = "procedural", data_dir=None, split: str = "test",
                     anno=None, point_dir=None, questions=None, modelnet=None, allow_pickle: bool = False,
                     sizes: Sequence[int] = DEFAULT_SIZES, tasks: Sequence[str] = ("classification", "captioning"),
                     prompt_index: int | None = None, max_objects: int | None = None, batch_size: int = 8,
                     seed: int = 0, max_new_tokens: int = 48, dense: str = "auto", sbert: Any = None,
                     command: str | None = None, assistant=None, log: Callable[[str], None] | None = print) -> dict:
    """Run ``tasks`` of one benchmark at every size in ``sizes``, score them, write table, JSON and plot.

    Args:
        model_dir: the model folder.
        out_dir: where the per-size results and the table go (resumable: finished files are reused).
        source, data_dir, split, anno, point_dir, questions, modelnet, allow_pickle, prompt_index: the benchmark
            (:func:`enel.eval.generate.load_benchmark`).
        sizes: input resolutions (default 1K … 16K, the paper's Figure 1a).
        tasks: benchmark tasks to run at each size.
        max_objects: at most this many objects (procedural: balanced over categories).
        dense: where points come from (module docstring): ``"auto"``, ``"mesh"`` or ``"stored"``.
        sbert: the caption similarity encoder (:func:`score_results`).
        assistant: an already loaded :class:`enel.inference.Assistant` (its decoding settings are replaced).

    Returns:
        the ``resolution.json`` document: ``meta``, ``sizes``, ``metrics`` (keys in table order), ``headline``
        (plotted keys), ``rows`` (one per size: ``num_points``, every score, ``seconds`` spent loading clouds and
        generating in this call), ``results_files``, ``files`` (``json``, ``markdown``, ``png``).
    """
    from ..inference import Assistant
    from .metrics import default_metrics_path

    sizes = sorted({int(n) for n in sizes})
    if not sizes or sizes[0] < 1:
        raise ConfigError(f"sizes must be positive point counts, got {sizes}")
    if not tasks:
        raise ConfigError("tasks is empty; choose from captioning, classification, qa")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    benches = {t: load_benchmark(source, t, prompt_index if t != "qa" else None, anno=anno, point_dir=point_dir,
                                 questions=questions, modelnet=modelnet, allow_pickle=allow_pickle, data_dir=data_dir,
                                 split=split, limit=max_objects, seed=seed) for t in tasks}
    first = next(iter(benches.values()))
    rule = _resolve_dense(dense, first, sizes)
    dense_points = max(sizes + [first.stored_points or 0])
    clouds = _Clouds(rule, dense_points, first.data.get("generator"))
    rule_text = _rule_text(rule, dense_points)
    settings = decoding_settings(max_new_tokens=max_new_tokens, seed=seed)
    if assistant is None:
        assistant = Assistant.from_folder(model_dir, **settings.__dict__)
    else:
        assistant.settings = settings
    command = command or cli_command() or api_command(
        "resolution_sweep", model_dir=str(model_dir), out_dir=str(out_dir), source=source,
        data_dir=data_dir and str(data_dir), split=split, sizes=list(sizes), tasks=list(tasks),
        max_objects=max_objects, seed=seed, max_new_tokens=max_new_tokens, dense=dense)

    rows, files = [], {}
    for n in sizes:
        row: dict[str, Any] = {"num_points": n}
        seconds = 0.0
        for task, bench in benches.items():
            path = out_dir / str(n) / bench.file_name
            meta = run_metadata(assistant, bench, model_dir=model_dir, seed=seed, num_points=n,
                                batch_size=batch_size, command=command, resample=rule_text)
            if log:
                log(f"[resolution] {n} points: {task} on {len(bench.items)} items")
            t0 = time.time()
            rf = run_benchmark(assistant, bench, path, batch_size=batch_size, seed=seed, num_points=n, metadata=meta,
                               cloud_fn=clouds)
            seconds += time.time() - t0
            row.update(score_results(rf, task, bench.source, sbert=sbert, metrics_path=default_metrics_path(path)))
            files[f"{n}/{task}"] = str(path)
        row["seconds"] = round(seconds, 1)  # loading clouds + generation (0 when finished files were reused)
        rows.append(row)
        if log:
            log("[resolution] " + ", ".join(f"{k} {v:.2f}" for k, v in row.items() if k not in ("num_points",)
                                            and isinstance(v, float)) + f" at {n} points")

    present = [k for k in METRIC_LABELS if any(k in r for r in rows)]
    headline = [k for k in _HEADLINE if k in present]
    for k, fallback in _FALLBACK.items():
        if k not in present and fallback in present:
            headline.append(fallback)
    meta = {
        "model": str(Path(model_dir).resolve()),
        "backbone": assistant.model.config.backbone,
        "source": first.source,
        "split": first.split,
        "data": first.data,
        "tasks": list(tasks),
        "seed": seed,
        "objects": len(first.items),
        "train_points": assistant.num_points,
        "points_rule": rule_text,
        "dense": rule,
        "decoding": {k: v for k, v in settings.__dict__.items() if k != "seed"},
        "sbert": "skipped" if sbert is False else (getattr(sbert, "name", None) or str(sbert or "all-MiniLM-L6-v2")),
        "command": command,
    }
    doc = {"meta": meta, "sizes": sizes, "metrics": present, "headline": headline, "rows": rows,
           "results_files": files}
    paths = {"json": out_dir / "resolution.json", "markdown": out_dir / "resolution.md",
             "png": out_dir / "resolution.png"}
    doc["files"] = {k: str(v) for k, v in paths.items()}
    write_resolution_table(doc, paths["markdown"])
    plot_resolution(doc, paths["png"])
    atomic_write_json(paths["json"], doc)
    if log:
        log(f"[resolution] table {paths['markdown']}, plot {paths['png']}")
    return doc


def quick_resolution(model_dir, data_dir, out_dir, sizes: Sequence[int] = DEFAULT_SIZES, max_objects: int = 8, *,
                     split: str = "test", seed: int = 0, max_new_tokens: int = 32, batch_size: int = 8,
                     sbert: Any = None, command: str | None = None, log: Callable[[str], None] | None = print
                     ) -> dict[str, Path]:
    """A small procedural sweep for the quickstart: ``max_objects`` test objects, category accuracy and caption
    SBERT at each size; returns ``{"json", "markdown", "png"}`` paths."""
    doc = resolution_sweep(model_dir, out_dir, source="procedural", data_dir=data_dir, split=split, sizes=sizes,
                           max_objects=max_objects, batch_size=batch_size, seed=seed, max_new_tokens=max_new_tokens,
                           sbert=sbert, command=command, log=log)
    return {k: Path(v) for k, v in doc["files"].items()}

