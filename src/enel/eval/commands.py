"""The ``enel eval`` command group: ``metrics`` (offline) and ``judge`` (an OpenAI-compatible LLM server).

``register(subparsers)`` adds the ``eval`` parser to the main CLI and returns the group's own subparsers
object, so further sub-commands (``generate``, ``report`` ...) can be added next to these. Each command is
one small function; heavy imports happen inside it so that ``enel --help`` stays fast. Bad input raises
:class:`enel.errors.EnelError` subclasses, which the main CLI prints as one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import ConfigError
from .judge import EVAL_TYPES


def register(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Add ``eval`` with ``metrics`` and ``judge``; return the ``eval`` group's subparsers."""
    ev = subparsers.add_parser("eval", help="evaluate benchmark results: offline metrics, LLM judge",
                               description="Evaluate PointLLM-format results files.")
    sub = ev.add_subparsers(dest="eval_command", required=True)
    add_metrics_parser(sub)
    add_judge_parser(sub)
    return sub


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
    from .metrics import CLASS_TEMPLATE, NEAREST_CLASS_THRESHOLD

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
    from .metrics import (SimCSEEncoder, classify_closed_set, compute_metrics, default_metrics_path,
                          is_modelnet_results, load_sentence_encoder, write_metrics)
    from .results import read_results

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
    from .judge import default_judge_path, resolve_endpoint, run_judge

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
