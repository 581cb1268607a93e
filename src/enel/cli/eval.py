"""The ``enel eval`` command group: ``generate`` (benchmark answers), ``metrics`` (offline), ``judge`` (an
OpenAI-compatible LLM server), ``resolution`` (the Figure 1a sweep), ``attention`` (Figure 1b maps), ``report``
(Markdown + HTML of a run) and ``modelnet`` (ModelNet40 classification in PointLLM's protocol).

``register(subparsers)`` adds the ``eval`` parser to the main CLI and returns the group's own subparsers
object, so further sub-commands can be added next to these. Each command is one small function over the plain
functions of :mod:`enel.eval`; heavy imports happen inside it so that ``enel --help`` stays fast. Bad input
raises :class:`enel.errors.EnelError` subclasses, which the main CLI prints as one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import ConfigError
from ..eval.judge import EVAL_TYPES
from .options import model_dir


def register(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Add ``eval`` with its sub-commands; return the ``eval`` group's subparsers."""
    ev = subparsers.add_parser("eval", help="benchmarks: generate answers, metrics, LLM judge, resolution sweep, "
                                            "attention maps, report",
                               description="Generate and evaluate PointLLM-format results files.")
    sub = ev.add_subparsers(dest="eval_command", required=True)
    add_generate_parser(sub)
    add_metrics_parser(sub)
    add_judge_parser(sub)
    add_resolution_parser(sub)
    add_attention_parser(sub)
    add_report_parser(sub)
    add_modelnet_parser(sub)
    return sub


# --------------------------------------------------------------------------------------------------------
# modelnet
# --------------------------------------------------------------------------------------------------------
def add_modelnet_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    s = sub.add_parser("modelnet", help="ModelNet40 classification in PointLLM's protocol on an archive's "
                                        "validation split (both prompts, first class named)",
                       description="Ask a model PointLLM's two classification prompts about ModelNet40 objects and "
                                   "score each answer by the first class it names (synonyms included).")
    s.add_argument("--model", default="runs/quickstart/model", help="model folder (default: the quickstart's)")
    s.add_argument("--archive", default=None,
                   help="a ModelNet40 archive (enel data modelnet40 output or the shared npz; default: "
                        "$ENEL_MODELNET40, data/modelnet40/modelnet40_train.npz, or the shared folder)")
    s.add_argument("--split", choices=["val", "train", "all"], default="val",
                   help="val: the validation split the recipes carve out (10 %% per class, seed 0); train: the rest, "
                        "what the recipes train on (does the model fit what it saw?); all: every object (for a test "
                        "archive or a model that never saw this one)")
    s.add_argument("--val-fraction", type=float, default=0.1)
    s.add_argument("--split-seed", type=int, default=0)
    s.add_argument("--classes", choices=["all", "overlap"], default="all",
                   help="overlap: only the 17 classes the procedural generator also builds (zero-shot sim-to-real)")
    s.add_argument("--per-class", type=int, default=None, help="at most N objects per class (default: all)")
    s.add_argument("--batch-size", type=int, default=64, help="clouds per generate call (default %(default)s)")
    s.add_argument("--out", default=None, help="output folder (default: <model>/../eval)")
    s.add_argument("--name", default=None, help="file stem (default modelnet40_<split>[_overlap])")
    s.set_defaults(func=cmd_modelnet)
    return s


def cmd_modelnet(args: argparse.Namespace) -> int:
    from ..data.modelnet_import import load_modelnet_archive, modelnet40_source
    from ..eval.modelnet import evaluate_modelnet, select_objects
    from ..model.saving import model_config_file

    model_config_file(args.model)
    archive_path = Path(args.archive) if args.archive else modelnet40_source()
    if archive_path is None:
        raise ConfigError("no ModelNet40 archive: pass --archive FILE, set ENEL_MODELNET40, or import one with "
                          "`enel data modelnet40 --from FILE`")
    if args.per_class is not None and args.per_class < 1:
        raise ConfigError(f"--per-class must be at least 1, got {args.per_class}")
    archive = load_modelnet_archive(archive_path)
    indices = select_objects(archive.labels, archive.class_names, split=args.split, val_fraction=args.val_fraction,
                             split_seed=args.split_seed, classes=args.classes, per_class=args.per_class)
    name = args.name or f"modelnet40_{args.split}" + ("_overlap" if args.classes == "overlap" else "")
    out = Path(args.out) if args.out else Path(args.model).resolve().parent / "eval"
    summary = evaluate_modelnet(args.model, archive.points, archive.labels, archive.class_names, indices, out,
                                object_ids=archive.object_ids, name=name, batch_size=args.batch_size,
                                command="enel " + " ".join(sys.argv[1:]), split=args.split)
    for key, v in summary["prompts"].items():
        print(f"{v['prompt']!r}: {v['overall_accuracy']:.1f} % overall, {v['mean_class_accuracy']:.1f} % mean per "
              f"class ({v['objects']} objects; the label named anywhere: {v['label_mentioned_rate']:.1f} %)")
    print(f"written to {out / (name + '_summary.json')}")
    return 0


# --------------------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------------------
def _output_path(results: Path, out: str | None, n_inputs: int, default: Path) -> Path:
    """``--out`` is a file for one input, a folder for several; default next to the input."""
    if out is None:
        return default
    o = Path(out)
    if n_inputs > 1 or o.is_dir():
        return o / default.name
    return o


def _check_inputs(paths: list[str]) -> list[Path]:
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise ConfigError(f"results file not found: {', '.join(missing)} (check the path)")
    return [Path(p) for p in paths]


def _print_summary(title: str, summary: dict, not_computed: dict, out: Path) -> None:
    print(title)
    width = max([len(k) for k in list(summary) + list(not_computed)] + [1])
    for k, v in summary.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}: {b:.2f}" for a, b in v.items()) or "-"
        print(f"  {k:<{width}}  {v}")
    for k, why in not_computed.items():
        print(f"  {k:<{width}}  not computed: {why}")
    print(f"  written to {out}")


# --------------------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------------------
def add_metrics_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..eval.metrics import CLASS_TEMPLATE, NEAREST_CLASS_THRESHOLD

    s = sub.add_parser("metrics", help="BLEU/ROUGE/METEOR/SBERT/SimCSE, or LLM-free ModelNet classification",
                       description="Offline metrics of PointLLM's traditional_evaluator.py. Writes "
                                   "<results>_evaluated_traditional.json next to each results file.")
    s.add_argument("results", nargs="+", help="PointLLM-format results JSON file(s)")
    s.add_argument("--type", choices=EVAL_TYPES, default=None,
                   help="modelnet-close-set-classification → nearest-class + exact-match accuracy; anything "
                        "else → text metrics (default: ModelNet when records carry label_name)")
    s.add_argument("--sbert", metavar="PATH", help="local sentence-transformers folder (default: the bundled "
                                                   "all-MiniLM-L6-v2; PointLLM used all-mpnet-base-v2)")
    s.add_argument("--no-sbert", action="store_true", help="skip Sentence-BERT similarity")
    s.add_argument("--simcse", metavar="PATH", help="local SimCSE folder (e.g. sup-simcse-roberta-large); "
                                                    "without it SimCSE is not computed")
    s.add_argument("--no-meteor", action="store_true", help="skip METEOR")
    s.add_argument("--threshold", type=float, default=NEAREST_CLASS_THRESHOLD,
                   help="ModelNet: cosine below which an answer matches no class (default %(default)s)")
    s.add_argument("--template", default=CLASS_TEMPLATE,
                   help="ModelNet: text embedded for each class, {} = class name (default %(default)r)")
    s.add_argument("--out", help="output file (one input) or folder (several inputs)")
    s.add_argument("--json", action="store_true", help="print machine-readable summaries")
    s.set_defaults(func=cmd_metrics)
    return s


def cmd_metrics(args: argparse.Namespace) -> int:
    from ..eval.metrics import (SimCSEEncoder, classify_closed_set, compute_metrics, default_metrics_path,
                          is_modelnet_results, load_sentence_encoder, write_metrics)
    from ..eval.results import read_results

    paths = _check_inputs(args.results)
    files = [read_results(p) for p in paths]  # validate everything before loading models
    sbert = None if args.no_sbert else load_sentence_encoder(args.sbert)
    simcse = SimCSEEncoder(args.simcse) if args.simcse else None
    report = {}
    for path, rf in zip(paths, files):
        modelnet = (args.type == "modelnet-close-set-classification"
                    or (args.type is None and is_modelnet_results(rf)))
        if modelnet:
            if sbert is None:
                raise ConfigError("ModelNet classification needs a sentence encoder; drop --no-sbert")
            doc = classify_closed_set(rf, encoder=sbert, threshold=args.threshold, template=args.template)
        else:
            doc = compute_metrics(rf, sbert=False if sbert is None else sbert, simcse=simcse,
                                  meteor_enabled=not args.no_meteor)
        doc["settings"]["source"] = str(path)
        out = write_metrics(doc, _output_path(path, args.out, len(paths), default_metrics_path(path)))
        report[str(path)] = {"summary": doc["summary"], "not_computed": doc["not_computed"], "out": str(out)}
        if not args.json:
            _print_summary(str(path), doc["summary"], doc["not_computed"], out)
    if args.json:
        print(json.dumps(report, indent=1))
    return 0


# --------------------------------------------------------------------------------------------------------
# judge
# --------------------------------------------------------------------------------------------------------
def add_judge_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    s = sub.add_parser("judge", help="score results with an LLM judge over an OpenAI-compatible server",
                       description="PointLLM's GPT evaluation (and 3D MM-Vet QA scoring) against any "
                                   "/v1/chat/completions server. Writes <results>_evaluated_<model>.json; "
                                   "resumable, with an on-disk reply cache.")
    s.add_argument("results", nargs="+", help="PointLLM-format results JSON file(s)")
    s.add_argument("--type", choices=EVAL_TYPES, default=None,
                   help="judge prompt and scoring rule (default: guessed from the file: label_name → ModelNet, "
                        "question → qa, prompt 2 → captioning, prompt 0/1 → open classification)")
    s.add_argument("--base-url", help="server URL, e.g. http://localhost:8000/v1 (env ENEL_JUDGE_BASE_URL, "
                                      "then OPENAI_BASE_URL; default https://api.openai.com/v1)")
    s.add_argument("--model", help="judge model name (env ENEL_JUDGE_MODEL)")
    s.add_argument("--api-key", help="API key (env ENEL_JUDGE_API_KEY, then OPENAI_API_KEY)")
    s.add_argument("--workers", type=int, default=8, help="parallel requests (default %(default)s)")
    s.add_argument("--max-retries", type=int, default=8,
                   help="retries per request on time-outs, 429 and 5xx (default %(default)s)")
    s.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default %(default)s)")
    s.add_argument("--samples", type=int, default=5, help="qa: scorings averaged per item (default 5, as ENEL)")
    s.add_argument("--cache-dir", help="reply cache folder (default: <ENEL_CACHE>/judge)")
    s.add_argument("--no-cache", action="store_true", help="neither read nor write the reply cache")
    s.add_argument("--price-in", type=float, help="USD per 1M prompt tokens (overrides the built-in table)")
    s.add_argument("--price-out", type=float, help="USD per 1M completion tokens")
    s.add_argument("--out", help="output file (one input) or folder (several inputs)")
    s.add_argument("--json", action="store_true", help="print machine-readable summaries")
    s.set_defaults(func=cmd_judge)
    return s


def _progress(item: dict, done: int, total: int) -> None:
    if sys.stderr.isatty():
        end = "\n" if done == total else ""
        print(f"\r  judged {done}/{total}", end=end, file=sys.stderr, flush=True)


def cmd_judge(args: argparse.Namespace) -> int:
    from ..eval.judge import default_judge_path, resolve_endpoint, run_judge

    paths = _check_inputs(args.results)
    endpoint = resolve_endpoint(args.base_url, args.model, args.api_key)
    cache = False if args.no_cache else (args.cache_dir or True)
    report = {}
    for path in paths:
        out = _output_path(path, args.out, len(paths), default_judge_path(path, endpoint.model))
        doc = run_judge(path, args.type, endpoint=endpoint, out=out, workers=args.workers,
                        max_retries=args.max_retries, timeout=args.timeout, cache_dir=cache,
                        price_in=args.price_in, price_out=args.price_out, samples=args.samples,
                        on_item=None if args.json else _progress)
        summary = dict(doc["summary"])
        summary.update({"prompt_tokens": doc["prompt_tokens"], "completion_tokens": doc["completion_tokens"],
                        "cost_usd": doc["cost"]["usd"], "requests_this_run": doc["usage"]["this_run"]["requests"]})
        report[str(path)] = {"summary": summary, "out": str(out)}
        if not args.json:
            _print_summary(f"{path}  [{doc['enel']['judge']['settings']['eval_type']}, judge {endpoint.model}]",
                           summary, {}, out)
    if args.json:
        print(json.dumps(report, indent=1))
    return 0


# --------------------------------------------------------------------------------------------------------
# generate
# --------------------------------------------------------------------------------------------------------
def _benchmark_data_flags(s: argparse.ArgumentParser) -> None:
    from ..eval.generate import SOURCES

    s.add_argument("--source", choices=SOURCES, default="procedural",
                   help="objaverse (PointLLM GT JSON + npy folder), modelnet (.npz) or procedural (default)")
    s.add_argument("--data", help="procedural: the dataset folder (default data/procedural)")
    s.add_argument("--split", default="test", help="procedural: the split (default %(default)s)")
    s.add_argument("--anno", help="objaverse: the GT JSON, e.g. PointLLM_brief_description_val_200_GT.json")
    s.add_argument("--point-dir", help="objaverse: the folder of {object_id}_8192.npy files")
    s.add_argument("--questions", help="qa on objaverse: JSON list of {question_id, object_id, question, answer}")
    s.add_argument("--modelnet", help="modelnet: the .npz from `enel data convert-modelnet` (or the pickle)")
    s.add_argument("--allow-pickle", action="store_true", help="modelnet: read PointLLM's pickle (runs its code)")


def _data_dir(args: argparse.Namespace):
    if args.source == "procedural":
        return args.data or "data/procedural"
    return args.data


def add_generate_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..eval.generate import TASKS

    s = sub.add_parser("generate", help="answer a benchmark (captioning, classification, QA) into a results file",
                       description="Run the model on a benchmark and write PointLLM's results JSON (batched, "
                                   "seeded, resumable: rerun the same command after an interruption).")
    s.add_argument("--model", help="model folder (default: runs/quickstart/model)")
    s.add_argument("--task", choices=TASKS, default="captioning")
    s.add_argument("--prompt-index", type=int, choices=[0, 1, 2], default=None,
                   help="PointLLM prompt: 0 'What is this?', 1 'This is an object of ', 2 captioning "
                        "(default: 2 for captioning, 0 for classification)")
    _benchmark_data_flags(s)
    s.add_argument("--out", help="output folder (gets PointLLM's file name) or .json file "
                                 "(default: <model>/../eval)")
    s.add_argument("--batch-size", type=int, default=6, help="clouds per generate call (default %(default)s)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--points", type=int, default=None, help="points per cloud (default: the model's)")
    s.add_argument("--max-new-tokens", type=int, default=64)
    s.add_argument("--sample", action="store_true", help="PointLLM's sampling (T=1, top-k 50, top-p 0.95), "
                                                         "seeded; default greedy")
    s.add_argument("--beams", type=int, default=1)
    s.add_argument("--limit", type=int, default=None, help="at most N records (a quick look)")
    s.set_defaults(func=cmd_generate)
    return s


def cmd_generate(args: argparse.Namespace) -> int:
    from ..eval.generate import generate_benchmark

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    path = generate_benchmark(
        str(model_dir(args)), source=args.source, task=args.task, prompt_index=args.prompt_index, anno=args.anno,
        point_dir=args.point_dir, questions=args.questions, modelnet=args.modelnet, allow_pickle=args.allow_pickle,
        data_dir=_data_dir(args), split=args.split, out=args.out, batch_size=args.batch_size, seed=args.seed,
        num_points=args.points, max_new_tokens=args.max_new_tokens, sample=args.sample, num_beams=args.beams,
        limit=args.limit, log=progress)
    print(path)
    return 0


# --------------------------------------------------------------------------------------------------------
# resolution
# --------------------------------------------------------------------------------------------------------
def add_resolution_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..eval.resolution import DEFAULT_SIZES, DENSE_RULES

    s = sub.add_parser("resolution", help="the same benchmark at 1K-16K points: table + plot (Figure 1a)",
                       description="Rerun a benchmark at several input resolutions and score each run offline "
                                   "(category accuracy, caption Sentence-BERT ...). Writes resolution.md, "
                                   "resolution.json and resolution.png; resumable.")
    s.add_argument("--model", help="model folder (default: runs/quickstart/model)")
    _benchmark_data_flags(s)
    s.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES), help="point counts")
    s.add_argument("--tasks", nargs="+", choices=["captioning", "classification", "qa"],
                   default=["classification", "captioning"])
    s.add_argument("--prompt-index", type=int, choices=[0, 1], default=None, help="classification prompt")
    s.add_argument("--objects", type=int, default=None, help="at most N objects (default: all)")
    s.add_argument("--dense", choices=DENSE_RULES, default="auto",
                   help="points above the stored count: mesh = rebuild procedural objects at the largest size; "
                        "stored = duplicates (default auto: mesh for procedural data when needed)")
    s.add_argument("--out", help="output folder (default: <model>/../eval/resolution)")
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--max-new-tokens", type=int, default=48)
    s.add_argument("--sbert", metavar="PATH", help="local sentence-transformers folder (default: bundled MiniLM)")
    s.add_argument("--no-sbert", action="store_true", help="skip Sentence-BERT (BLEU-1 stands in)")
    s.set_defaults(func=cmd_resolution)
    return s


def cmd_resolution(args: argparse.Namespace) -> int:
    from ..eval.resolution import resolution_sweep

    model = str(model_dir(args))
    out = args.out or str(Path(model).parent / "eval" / "resolution")
    doc = resolution_sweep(
        model, out, source=args.source, data_dir=_data_dir(args), split=args.split, anno=args.anno,
        point_dir=args.point_dir, questions=args.questions, modelnet=args.modelnet, allow_pickle=args.allow_pickle,
        sizes=args.sizes, tasks=args.tasks, prompt_index=args.prompt_index, max_objects=args.objects,
        batch_size=args.batch_size, seed=args.seed, max_new_tokens=args.max_new_tokens, dense=args.dense,
        sbert=False if args.no_sbert else args.sbert, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(Path(doc["files"]["markdown"]).read_text(encoding="utf-8"))
    return 0


# --------------------------------------------------------------------------------------------------------
# attention
# --------------------------------------------------------------------------------------------------------
def add_attention_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..eval.attention import MAPPINGS, QUERY_MODES

    s = sub.add_parser("attention", help="attention of the text over the point tokens: PNG + interactive HTML",
                       description="Average attention of the text tokens over the 128 point tokens at one layer "
                                   "(default the last), carried to the points by the nearest token centre "
                                   "(Figure 1b / 5). Writes attention.png/.html/.json/.npz per object.")
    s.add_argument("files", nargs="*", help="point cloud or mesh files")
    s.add_argument("--data", help="instead of files: a procedural dataset folder ...")
    s.add_argument("--split", default="test", help="... its split (default %(default)s)")
    s.add_argument("--objects", type=int, default=4, help="... and how many objects (default %(default)s)")
    s.add_argument("--model", help="model folder (default: runs/quickstart/model)")
    s.add_argument("--layer", type=int, default=-1, help="1-based decoder layer, or negative from the end "
                                                         "(default -1: the last, as the paper)")
    s.add_argument("--question", default="What is this?")
    s.add_argument("--queries", choices=QUERY_MODES, default="question",
                   help="text tokens to average: the question (default), the generated answer, or both")
    s.add_argument("--mapping", choices=MAPPINGS, default="nearest",
                   help="token → point: nearest token centre (default) or inverse-distance blend of 3")
    s.add_argument("--up", choices=["z", "y"], default="z", help="the clouds' up axis for the pictures")
    s.add_argument("--points", type=int, default=None, help="resample to N points (default: the model's)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", help="output folder (default: <model>/../eval/attention)")
    s.set_defaults(func=cmd_attention)
    return s


def cmd_attention(args: argparse.Namespace) -> int:
    from ..eval.attention import attention_for_objects, procedural_files

    if not args.files and not args.data:
        raise ConfigError("give point cloud files, or --data DIR for objects of a procedural split")
    inputs = list(args.files) + (procedural_files(args.data, args.split, args.objects) if args.data else [])
    model = str(model_dir(args))
    out = args.out or str(Path(model).parent / "eval" / "attention")
    paths = attention_for_objects(model, inputs, out, layer=args.layer, question=args.question, queries=args.queries,
                                  num_points=args.points, mapping=args.mapping, up=args.up, seed=args.seed,
                                  log=lambda m: print(m, file=sys.stderr, flush=True))
    for p in paths:
        print(f"{p['png']}  {p['html']}")
    return 0


# --------------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------------
def add_report_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    s = sub.add_parser("report", help="Markdown + HTML report of a run folder (metrics, plots, captions, attention)",
                       description="Render what a run folder holds (quickstart layout) into report.md and a "
                                   "self-contained report.html. Missing parts are noted, not fatal.")
    s.add_argument("run_dir", nargs="?", help="run folder (default: runs/quickstart)")
    s.add_argument("--out", help="folder for report.md / report.html (default: the run folder)")
    s.add_argument("--objects", type=int, default=8, help="objects in the caption grid (default %(default)s)")
    s.set_defaults(func=cmd_report)
    return s


def cmd_report(args: argparse.Namespace) -> int:
    from ..eval.report import write_report
    from ..paths import default_run_dir

    paths = write_report(args.run_dir or default_run_dir(), out_dir=args.out, max_objects=args.objects)
    print(paths["markdown"])
    print(paths["html"])
    return 0
