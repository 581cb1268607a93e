"""The run report (``enel eval report RUN_DIR``): Markdown and self-contained HTML from what a run left on disk.

It reads the quickstart layout and renders what it finds; it never runs the model (generate a sweep or attention
maps first with ``enel eval resolution`` / ``enel eval attention``)::

    RUN_DIR/quickstart.json                       command, model, data, seed, stage statistics, timings
    RUN_DIR/stage1/train_summary.json             recipe + the Trainer's log history (loss curves)
    RUN_DIR/stage2/train_summary.json
    RUN_DIR/eval/procedural_{split}_summary.json  the quickstart evaluation (category / colour / caption scores)
    RUN_DIR/eval/*.json                           PointLLM-format results files (+ their *_evaluated_*.json)
    RUN_DIR/eval/resolution/resolution.json       the resolution sweep (+ resolution.png)
    RUN_DIR/eval/attention/attention.json         the attention maps (+ one folder per object)

Sections: provenance, evaluation summary, results files with their scores, training (table + loss curves),
resolution sweep (table + plot), attention maps, and a grid of objects (their rendered cloud, the generated
caption, the ground truth). Every table says which model, split, seed and command produced its numbers. A
missing or unreadable part becomes a note in the report ("not found: … — run …"), never an exception.

``report.md`` links its figures (written to ``RUN_DIR/report_files/``, or referenced where they already are);
``report.html`` embeds every image as base64 and inlines its CSS, so it is one file that opens offline. The
interactive attention viewers stay separate files, linked from both.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .plotting import loss_curves_png, render_cloud_png

__all__ = ["write_report", "collect_results_files"]

_CAPTION_PROMPT = "Caption this 3D model in detail."
_CSS = """
body{font-family:system-ui,-apple-system,sans-serif;margin:24px auto;max-width:1100px;color:#222;line-height:1.45}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #bbb;margin-top:32px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}th{background:#f2f2f2}
td.num{text-align:right;font-variant-numeric:tabular-nums}
code{background:#f4f4f4;padding:1px 4px;border-radius:3px;font-size:90%;word-break:break-all}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 10px;margin:8px 0}
.prov{color:#555;font-size:13px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(240px,1fr));gap:12px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px;font-size:13px}
.card img{width:100%}
img.fig{max-width:100%}
"""


# ----------------------------------------------------------------------------------------------------------
# A tiny document model rendered twice (Markdown and HTML)
# ----------------------------------------------------------------------------------------------------------
@dataclass
class _Image:
    path: Path  # the PNG on disk
    alt: str
    width: int | None = None


@dataclass
class _Card:
    title: str
    image: _Image | None
    lines: list[tuple[str, str]]  # (label, text)


@dataclass
class _Doc:
    blocks: list[tuple] = field(default_factory=list)

    def h(self, level: int, text: str):
        self.blocks.append(("h", level, text))

    def p(self, text: str, cls: str = ""):
        self.blocks.append(("p", text, cls))

    def note(self, text: str):
        self.blocks.append(("note", text))

    def table(self, header: list[str], rows: list[list[Any]]):
        self.blocks.append(("table", header, rows))

    def image(self, img: _Image):
        self.blocks.append(("img", img))

    def bullets(self, items: list[str]):
        self.blocks.append(("ul", items))

    def cards(self, cards: list[_Card]):
        self.blocks.append(("cards", cards))


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "–" if v != v else f"{v:.2f}"
    if v is None:
        return "–"
    return str(v)


def _md_cell(v: Any) -> str:
    return _fmt(v).replace("|", "\\|").replace("\n", " ")


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path.resolve())


def _to_markdown(doc: _Doc, base: Path) -> str:
    out: list[str] = []
    for b in doc.blocks:
        kind = b[0]
        if kind == "h":
            out += ["#" * b[1] + " " + b[2], ""]
        elif kind == "p":
            out += [b[1], ""]
        elif kind == "note":
            out += [f"> **Note.** {b[1]}", ""]
        elif kind == "table":
            header, rows = b[1], b[2]
            out.append("| " + " | ".join(header) + " |")
            out.append("|" + "|".join("---" for _ in header) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
            out.append("")
        elif kind == "img":
            out += [f"![{b[1].alt}]({_rel(b[1].path, base)})", ""]
        elif kind == "ul":
            out += [f"- {item}" for item in b[1]] + [""]
        elif kind == "cards":
            out += ["| object | details |", "|---|---|"]
            for c in b[1]:
                img = f"![{c.title}]({_rel(c.image.path, base)})" if c.image else "(no point cloud)"
                text = "<br>".join(f"**{lab}:** {_md_cell(t)}" for lab, t in c.lines)
                out.append(f"| {img}<br>`{c.title}` | {text} |")
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def _inline(text: str) -> str:
    """Escape, then turn Markdown's ``code``, **bold** and [text](link) into HTML."""
    s = html.escape(text, quote=False)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    s = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", s)
    return re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", lambda m: f'<a href="{html.escape(m.group(2))}">{m.group(1)}</a>', s)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _to_html(doc: _Doc, title: str) -> str:
    out = [f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>',
           f"<style>{_CSS}</style></head><body>"]
    for b in doc.blocks:
        kind = b[0]
        if kind == "h":
            out.append(f"<h{b[1]}>{_inline(b[2])}</h{b[1]}>")
        elif kind == "p":
            cls = f' class="{b[2]}"' if b[2] else ""
            out.append(f"<p{cls}>{_inline(b[1])}</p>")
        elif kind == "note":
            out.append(f'<div class="note"><b>Note.</b> {_inline(b[1])}</div>')
        elif kind == "table":
            out.append("<table><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in b[1]) + "</tr>")
            for r in b[2]:
                out.append("<tr>" + "".join(
                    f'<td class="num">{_fmt(c)}</td>' if isinstance(c, (int, float)) and not isinstance(c, bool)
                    else f"<td>{_inline(_fmt(c))}</td>" for c in r) + "</tr>")
            out.append("</table>")
        elif kind == "img":
            img = b[1]
            width = f' style="width:{img.width}px"' if img.width else ""
            out.append(f'<p><img class="fig"{width} alt="{html.escape(img.alt)}" src="{_data_uri(img.path)}"></p>')
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b[1]) + "</ul>")
        elif kind == "cards":
            out.append('<div class="grid">')
            for c in b[1]:
                img = (f'<img alt="{html.escape(c.title)}" src="{_data_uri(c.image.path)}">' if c.image
                       else "<p><i>no point cloud</i></p>")
                lines = "".join(f"<div><b>{html.escape(lab)}:</b> {html.escape(_fmt(t))}</div>" for lab, t in c.lines)
                out.append(f'<div class="card">{img}<div><code>{html.escape(c.title)}</code></div>{lines}</div>')
            out.append("</div>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------------------------------
# Reading the run
# ----------------------------------------------------------------------------------------------------------
def _load_json(path: Path, notes: list[str]) -> Any:
    """The JSON at ``path``, or None with a note when it is missing or unreadable."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        notes.append(f"could not read `{path}`: {exc}")
        return None


def _prov(meta: dict | None, *, split: str | None = None) -> str:
    """One provenance line: model, split, seed, command."""
    meta = meta or {}
    parts = [f"model `{meta.get('model', 'unknown')}`", f"split `{split or meta.get('split', 'unknown')}`",
             f"seed {meta.get('seed', 'unknown')}"]
    cmd = meta.get("command")
    parts.append(f"command `{cmd}`" if cmd else "command not recorded")
    return "Produced by " + ", ".join(parts) + "."


def collect_results_files(eval_dir: Path) -> list[tuple[Path, dict]]:
    """PointLLM-format results files directly in ``eval_dir`` (not metrics or judge outputs), with their JSON."""
    from .results import ResultsFormatError, read_results

    found = []
    if not eval_dir.is_dir():
        return found
    for p in sorted(eval_dir.glob("*.json")):
        if "_evaluated_" in p.name or p.name.endswith(("_summary.json", "_processed_temp.json")):
            continue
        try:
            rf = read_results(p)
        except (ResultsFormatError, OSError):
            continue
        found.append((p, rf))
    return found


def _sibling_scores(path: Path) -> dict[str, float]:
    """Headline scores from ``<stem>_evaluated_*.json`` next to a results file (metrics and judges)."""
    scores: dict[str, float] = {}
    stem = path.name[:-5]
    for other in sorted(path.parent.glob(f"{stem}_evaluated_*.json")):
        try:
            doc = json.loads(other.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        summary = doc.get("summary") or {}
        judge = other.name[len(stem) + len("_evaluated_"):-5]
        if judge == "traditional":
            for k in ("sbert_similarity", "bleu-1", "rouge-l", "meteor", "simcse_similarity", "exact_match_accuracy",
                      "embedding_accuracy"):
                if isinstance(summary.get(k), (int, float)):
                    scores[k] = float(summary[k])
        else:
            for k in ("accuracy", "average_score", "clean_accuracy"):
                if isinstance(summary.get(k), (int, float)):
                    scores[f"{k} ({judge})"] = float(summary[k])
    return scores


# ----------------------------------------------------------------------------------------------------------
# Point clouds of the records
# ----------------------------------------------------------------------------------------------------------
def _cloud_path(object_id: Any, meta: dict | None, run_dir: Path) -> Path | None:
    """Where a results record's point cloud lies, from the file's ``"enel"`` metadata (procedural or Objaverse)."""
    meta = meta or {}
    data = meta.get("data")
    candidates: list[Path] = []
    if isinstance(data, dict):
        if data.get("data"):
            candidates.append(Path(data["data"]))
        if data.get("point_dir"):
            for base in (Path(data["point_dir"]), run_dir / data["point_dir"]):
                candidates.append(base / f"{object_id}_8192.npy")
    elif isinstance(data, str):
        candidates.append(Path(data))
    for c in list(candidates):
        if not c.is_absolute():
            candidates.append(run_dir / c)
            candidates.append(run_dir.parent / c)
    for c in candidates:
        if c.is_file():
            return c
        manifest = c / "manifest.json"
        if manifest.is_file():
            try:
                m = json.loads(manifest.read_text(encoding="utf-8"))
                p = c / m["npy_dir"] / f"{object_id}_{m['num_points']}.npy"
            except (OSError, ValueError, KeyError):
                continue
            if p.is_file():
                return p
    return None


# ----------------------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------------------
def _section_provenance(doc: _Doc, run_dir: Path, qs: dict | None, model_meta: dict) -> None:
    doc.h(2, "Provenance")
    if qs is None:
        doc.note(f"`{run_dir / 'quickstart.json'}` not found: this folder is not a finished quickstart run "
                 "(run `enel quickstart --out DIR`); the sections below show what the folder holds.")
        rows = [[k, f"`{v}`"] for k, v in model_meta.items() if v is not None]
        if rows:
            doc.table(["", "value"], rows)
        return
    ds = qs.get("dataset") or {}
    objects = ds.get("objects", "?")
    if isinstance(objects, dict):
        objects = ", ".join(f"{k} {v}" for k, v in objects.items())
    rows = [
        ["command", f"`{qs.get('command') or 'not recorded (called from Python)'}`"],
        ["model", f"`{qs.get('model')}`"],
        ["backbone", model_meta.get("backbone")],
        ["data", f"`{qs.get('data')}`"],
        ["dataset", f"{ds.get('categories', '?')} categories; objects: {objects}"],
        ["seed", qs.get("seed")],
        ["training budget (minutes)", qs.get("minutes_budget")],
    ]
    for k, v in (qs.get("timings") or {}).items():
        rows.append([k.replace("_", " "), v])
    doc.table(["", "value"], rows)


def _section_summary(doc: _Doc, eval_dir: Path, notes: list[str]) -> None:
    doc.h(2, "Evaluation")
    summaries = sorted(eval_dir.glob("procedural_*_summary.json")) if eval_dir.is_dir() else []
    if not summaries:
        doc.note(f"no evaluation summary in `{eval_dir}` (`procedural_<split>_summary.json`); the quickstart "
                 "writes it, or run `enel eval generate` and `enel eval metrics` for other benchmarks.")
        return
    for path in summaries:
        s = _load_json(path, notes)
        if not isinstance(s, dict):
            continue
        doc.h(3, f"Procedural {s.get('split', '?')} split ({s.get('objects', '?')} held-out objects)")
        doc.p(_prov(s), "prov")
        caption = s.get("caption_metrics") or {}
        rows = [["category accuracy (%)", s.get("category_accuracy"), "the first category “What is this?” names"],
                ["colour accuracy (%)", s.get("colour_accuracy"), "the first colour the colour answer names"],
                ["caption Sentence-BERT", s.get("caption_sbert"), "cosine × 100 to the reference caption"]]
        for k in ("bleu-1", "rouge-l", "meteor"):
            if k in caption:
                rows.append([f"caption {k.upper()}", caption[k], "traditional metric × 100"])
        doc.table(["score", "value", "what"], rows)
        per_cat = s.get("per_category_accuracy") or {}
        if per_cat:
            items = sorted(per_cat.items())
            half = (len(items) + 1) // 2
            left, right = items[:half], items[half:] + [("", None)] * (half - len(items[half:]))
            doc.table(["category", "accuracy (%)", "category", "accuracy (%)"],
                      [[a, va, b, vb] for (a, va), (b, vb) in zip(left, right)])


def _section_modelnet(doc: _Doc, eval_dir: Path, notes: list[str]) -> None:
    """ModelNet40 summaries (``modelnet40_*_summary.json``, :func:`enel.eval.modelnet.evaluate_modelnet`)."""
    for path in sorted(eval_dir.glob("modelnet40_*_summary.json")) if eval_dir.is_dir() else []:
        s = _load_json(path, notes)
        if not isinstance(s, dict) or not s.get("prompts"):
            continue
        prompts = s["prompts"]
        doc.h(3, f"ModelNet40 `{path.name[:-len('_summary.json')]}` ({s.get('objects', '?')} real objects)")
        doc.p(f"{_prov(s)} Each answer is scored by the first class it names.", "prov")
        doc.table(["prompt", "overall accuracy (%)", "mean per-class accuracy (%)", "label named anywhere (%)",
                   "no class named"],
                  [[f"“{v['prompt']}”", v["overall_accuracy"], v["mean_class_accuracy"], v["label_mentioned_rate"],
                    v["no_class_named"]] for v in prompts.values()])
        keys = list(prompts)
        classes = list(prompts[keys[0]]["per_class"])
        doc.table(["class", "objects"] + [f"“{prompts[k]['prompt'].strip()}” (%)" for k in keys],
                  [[c, prompts[keys[0]]["per_class"][c]["objects"]]
                   + [prompts[k]["per_class"].get(c, {}).get("accuracy") for k in keys] for c in classes])
        conf = prompts[keys[0]].get("confusions") or []
        if conf:
            doc.p(f"Most frequent confusions for “{prompts[keys[0]]['prompt']}”:")
            doc.table(["true class", "answered", "objects"], [[c["truth"], c["answer"], c["count"]] for c in conf])


def _section_results(doc: _Doc, eval_dir: Path) -> list[tuple[Path, Any]]:
    doc.h(2, "Results files")
    files = collect_results_files(eval_dir)
    if not files:
        doc.note(f"no PointLLM-format results files in `{eval_dir}`; write some with `enel eval generate`.")
        return files
    doc.p("Every PointLLM-format results file of the run, with the scores found next to it "
          "(`*_evaluated_traditional.json` from `enel eval metrics`, `*_evaluated_<judge>.json` from "
          "`enel eval judge`).")
    rows, provs = [], []
    for path, rf in files:
        meta = rf.metadata or {}
        scores = _sibling_scores(path)
        if rf.results and all("correct" in r for r in rf.results):
            scores.setdefault("accuracy (keyword)", 100.0 * float(np.mean([bool(r["correct"]) for r in rf.results])))
        score_text = ", ".join(f"{k} {v:.2f}" for k, v in scores.items()) or "not scored yet"
        status = "" if meta.get("complete", True) else f" (incomplete: {meta.get('completed')}/{meta.get('objects')})"
        rows.append([f"`{path.name}`", rf.prompt, f"{len(rf.results)}{status}", meta.get("split", "–"),
                     meta.get("num_points", "–"), meta.get("seed", "–"), score_text])
        provs.append(f"`{path.name}`: {_prov(meta)}")
    doc.table(["file", "prompt", "records", "split", "points", "seed", "scores"], rows)
    doc.bullets(provs)
    return files


def _section_training(doc: _Doc, run_dir: Path, qs: dict | None, files_dir: Path, notes: list[str],
                      figures: dict[str, Path]) -> None:
    doc.h(2, "Training")
    stage_dirs = sorted(p for p in run_dir.glob("stage*") if p.is_dir())
    if not stage_dirs:
        doc.note(f"no `stage*/train_summary.json` in `{run_dir}`: nothing was trained in this folder.")
        return
    rows, histories, provs = [], {}, []
    for d in stage_dirs:
        s = _load_json(d / "train_summary.json", notes)
        if not isinstance(s, dict):
            doc.note(f"`{d / 'train_summary.json'}` not found: stage `{d.name}` did not finish.")
            continue
        recipe = s.get("recipe") or {}
        train = recipe.get("train") or {}
        rows.append([d.name, recipe.get("name", "–"), s.get("global_step"), s.get("minutes"),
                     s.get("seconds_per_step"), s.get("train_loss")])
        histories[f"{d.name} ({recipe.get('name', '?')})"] = s.get("log_history") or []
        provs.append(f"{d.name}: recipe `{recipe.get('name')}`, backbone `{recipe.get('backbone')}`, "
                     f"data `{(recipe.get('data') or {}).get('root')}`, seed {train.get('seed', 'unknown')}, "
                     f"output `{train.get('output_dir')}`")
    if rows:
        doc.table(["stage", "recipe", "steps", "minutes", "s / step", "mean train loss"], rows)
        cmd = (qs or {}).get("command")
        doc.p(f"Command: `{cmd}`." if cmd else "Command: not recorded (see the recipes below).", "prov")
        doc.bullets(provs)
    fig = loss_curves_png(histories, files_dir / "loss_curves.png")
    if fig is None:
        doc.note("the log histories hold no per-step losses (runs shorter than `logging_steps` log none), so "
                 "there are no loss curves.")
    else:
        figures["loss_curves"] = fig
        doc.image(_Image(fig, "loss curves"))


def _section_resolution(doc: _Doc, eval_dir: Path, notes: list[str], figures: dict[str, Path]) -> None:
    from .resolution import METRIC_LABELS, points_label

    doc.h(2, "Resolution sweep (Figure 1a)")
    res = _load_json(eval_dir / "resolution" / "resolution.json", notes)
    if not isinstance(res, dict) or "rows" not in res:
        doc.note(f"no resolution sweep in `{eval_dir / 'resolution'}`; run `enel eval resolution --model MODEL "
                 f"--data DATA --out {eval_dir / 'resolution'}`.")
        return
    meta = res.get("meta") or {}
    doc.p(_prov(meta) + f" {meta.get('objects', '?')} objects; points: {meta.get('points_rule', '?')}.", "prov")
    sizes = res.get("sizes") or [r["num_points"] for r in res["rows"]]
    train = meta.get("train_points")
    header = ["score"] + [points_label(n) + (" (train)" if n == train else "") for n in sizes]
    by_n = {r["num_points"]: r for r in res["rows"]}
    doc.table(header, [[METRIC_LABELS.get(k, k)] + [by_n.get(n, {}).get(k) for n in sizes]
                       for k in res.get("metrics", [])])
    png = eval_dir / "resolution" / "resolution.png"
    if png.is_file():
        figures["resolution"] = png
        doc.image(_Image(png, "resolution sweep"))
    else:
        doc.note(f"`{png}` is missing (the table above is from resolution.json).")


def _section_attention(doc: _Doc, eval_dir: Path, notes: list[str], figures: dict[str, Path], base: Path) -> None:
    doc.h(2, "Attention maps (Figure 1b / 5)")
    att_dir = eval_dir / "attention"
    index = _load_json(att_dir / "attention.json", notes)
    if not isinstance(index, dict) or not index.get("objects"):
        doc.note(f"no attention maps in `{att_dir}`; run `enel eval attention FILE --model MODEL --out {att_dir}`.")
        return
    meta = index.get("meta") or {}
    doc.p(f"Mean attention of the text tokens after the point block ({meta.get('queries', 'question')}) over the "
          f"128 geometric point tokens at layer {meta.get('layer')} (of {meta.get('num_layers', '?')}), each point "
          f"coloured by the weight of its nearest token centre ({meta.get('mapping', 'nearest')} rule). Question: "
          f"“{meta.get('question')}”. " + _prov(meta, split=meta.get("split", "n/a")), "prov")
    for entry in index["objects"]:
        png = att_dir / entry.get("png", "")
        htm = att_dir / entry.get("html", "")
        answer = entry.get("answer")
        mass = entry.get("point_mass")
        doc.h(3, entry.get("name", "object"))
        doc.p((f"Answer: “{answer}”. " if answer is not None else "")
              + (f"{mass * 100:.1f} % of the text's attention is on the point tokens. " if mass is not None else "")
              + (f"[interactive view]({_rel(htm, base)})" if htm.is_file() else ""))
        if png.is_file():
            figures[f"attention_{entry.get('name')}"] = png
            doc.image(_Image(png, f"attention map of {entry.get('name')}"))
        else:
            doc.note(f"`{png}` is missing.")


def _pick_caption_file(files: list[tuple[Path, Any]]) -> tuple[Path, Any] | None:
    caps = [(p, rf) for p, rf in files if rf.prompt == _CAPTION_PROMPT and rf.results]
    caps.sort(key=lambda x: (not x[0].name.startswith("procedural_test_captioning"), x[0].name))
    return caps[0] if caps else None


def _section_objects(doc: _Doc, run_dir: Path, files: list[tuple[Path, Any]], files_dir: Path,
                     max_objects: int, figures: dict[str, Path]) -> None:
    doc.h(2, "Objects and their captions")
    picked = _pick_caption_file(files)
    if picked is None:
        doc.note("no captioning results (prompt “Caption this 3D model in detail.”) to show; the quickstart "
                 "writes `eval/procedural_test_captioning.json`, or run `enel eval generate --task captioning`.")
        return
    path, rf = picked
    meta = rf.metadata or {}
    doc.p(f"From `{path.name}`. " + _prov(meta), "prov")
    records = rf.results
    step = max(1, len(records) // max_objects) if max_objects else 1
    chosen = records[::step][:max_objects]
    cards, missing = [], 0
    for r in chosen:
        cloud_path = _cloud_path(r["object_id"], meta, run_dir)
        image = None
        if cloud_path is not None:
            try:
                pts = np.load(cloud_path, allow_pickle=False).astype(np.float32)
                if pts.ndim == 2 and pts.shape[1] >= 6:
                    safe = re.sub(r"[^A-Za-z0-9._-]", "_", str(r["object_id"]))
                    png = render_cloud_png(pts, files_dir / "objects" / f"{safe}.png")
                    image = _Image(png, str(r["object_id"]))
                    figures[f"object_{safe}"] = png
            except (OSError, ValueError):
                image = None
        missing += image is None
        cards.append(_Card(str(r["object_id"]), image, [("generated", r["model_output"]),
                                                         ("ground truth", r["ground_truth"])]))
    if missing:
        doc.note(f"{missing} of {len(chosen)} point clouds were not found from the file's metadata "
                 f"(`data`: `{meta.get('data')}`); their captions are shown without a picture.")
    doc.cards(cards)


# ----------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------
def _model_meta(run_dir: Path, qs: dict | None) -> dict:
    model = Path(qs["model"]) if qs and qs.get("model") else run_dir / "model"
    cfg_path = model / "config.json"
    meta = {"model": str(model), "backbone": None, "training_state": None}
    if cfg_path.is_file():
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
            meta["backbone"] = cfg.get("backbone")
            state = cfg.get("training_state") or {}
            meta["training_state"] = f"stage {state.get('stage')}, {state.get('steps')} steps" if state else "untrained"
        except (OSError, ValueError):
            pass
    return meta


def write_report(run_dir, *, out_dir=None, max_objects: int = 8, title: str | None = None) -> dict[str, Path]:
    """Write ``report.md`` and ``report.html`` for a run folder from whatever it holds.

    Args:
        run_dir: a quickstart output folder (or any folder with ``eval/`` results; missing parts become notes;
            a folder that does not exist raises :class:`~enel.errors.ConfigError`).
        out_dir: where the reports go (default: ``run_dir``); figures go to ``<out_dir>/report_files/``.
        max_objects: objects in the caption grid.
        title: the report's title (default ``ENEL run report — <folder name>``).

    Returns:
        ``{"markdown", "html"}`` plus one entry per figure used (loss curves, resolution plot, attention maps,
        object renders).
    """
    from ..errors import ConfigError

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run folder {run_dir} not found; give the --out folder of `enel quickstart` "
                          "(default runs/quickstart)")
    out_dir = Path(out_dir) if out_dir is not None else run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    files_dir = out_dir / "report_files"
    eval_dir = run_dir / "eval"
    notes: list[str] = []
    figures: dict[str, Path] = {}
    title = title or f"ENEL run report — {run_dir.resolve().name}"
    qs = _load_json(run_dir / "quickstart.json", notes)
    qs = qs if isinstance(qs, dict) else None
    model_meta = _model_meta(run_dir, qs)

    doc = _Doc()
    doc.h(1, title)
    doc.p(f"Generated {_dt.datetime.now().isoformat(timespec='seconds')} from `{run_dir.resolve()}` by "
          f"`enel eval report`. Model `{model_meta['model']}` (backbone {model_meta['backbone'] or 'unknown'}, "
          f"{model_meta['training_state'] or 'training state unknown'}).")
    _section_provenance(doc, run_dir, qs, model_meta)
    _section_summary(doc, eval_dir, notes)
    _section_modelnet(doc, eval_dir, notes)
    files = _section_results(doc, eval_dir)
    _section_training(doc, run_dir, qs, files_dir, notes, figures)
    _section_resolution(doc, eval_dir, notes, figures)
    _section_attention(doc, eval_dir, notes, figures, out_dir)
    _section_objects(doc, run_dir, files, files_dir, max_objects, figures)
    if notes:
        doc.h(2, "Problems while reading the run")
        doc.bullets(notes)

    md = out_dir / "report.md"
    md.write_text(_to_markdown(doc, out_dir), encoding="utf-8")
    page = out_dir / "report.html"
    page.write_text(_to_html(doc, title), encoding="utf-8")
    return {"markdown": md, "html": page, **figures}
