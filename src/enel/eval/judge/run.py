"""One judge run: every record of a results file judged in worker threads, saved as it goes (resumable),
each reply cached on disk, and the PointLLM-style output document built from the stored replies."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ...errors import ConfigError
from ...paths import cache_dir
from ...data import prompts as P
from ..results import ResultsFile, atomic_write_json, read_json, read_results, record_key
from .client import DEFAULT_MAX_RETRIES, ChatClient, ChatReply, Endpoint, JudgeError, Stopped, resolve_endpoint
from .scoring import (CAPTIONING, DEFAULT_QA_SAMPLES, EVAL_TYPES, MODELNET_CLS, OPEN_CLS, QA, build_messages,
                      estimate_cost, judge_template, prices_for, reply_is_valid, reply_tokens, score_judgements)

# PointLLM evaluator.py and ENEL/ShapeLLM gpt_eval.py: temperature 1, top_p 1, max_tokens 2048
DEFAULT_CHAT_PARAMS = {"temperature": 1, "top_p": 1, "max_tokens": 2048}


# --------------------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------------------
def cache_key(model: str, messages: list[dict], params: Mapping[str, Any], sample: int = 0) -> str:
    """SHA-256 of the canonical JSON of (model, messages, params, sample index)."""
    blob = json.dumps({"model": model, "messages": messages, "params": dict(params), "sample": sample},
                      sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def default_cache_dir() -> Path:
    """``<enel cache>/judge`` (``ENEL_CACHE`` moves it)."""
    return cache_dir() / "judge"


class JudgeCache:
    """One small JSON file per reply: ``<root>/<key[:2]>/<key>.json``. Safe across threads and processes."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> ChatReply | None:
        p = self._path(key)
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
            return ChatReply(content=doc["content"], prompt_tokens=int(doc["prompt_tokens"]),
                             completion_tokens=int(doc["completion_tokens"]),
                             usage_reported=bool(doc.get("usage_reported", True)), cached=True)
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):  # unreadable = a miss
            return None

    def put(self, key: str, reply: ChatReply) -> None:
        doc = {"content": reply.content, "prompt_tokens": reply.prompt_tokens,
               "completion_tokens": reply.completion_tokens, "usage_reported": reply.usage_reported}
        try:
            atomic_write_json(self._path(key), doc, indent=None)
        except OSError as exc:
            raise ConfigError(f"cannot write the judge cache in {self.root} ({exc.strerror or exc}); "
                              "pass a writable --cache-dir or --no-cache") from None


# --------------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------------
def safe_model_name(model: str) -> str:
    """A model name usable in a file name (``Qwen/Qwen2-72B`` → ``Qwen_Qwen2-72B``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("_") or "judge"


def default_judge_path(results_path: str | os.PathLike, model: str) -> Path:
    """``X.json`` → ``X_evaluated_<model>.json`` next to it (PointLLM's name)."""
    p = Path(results_path)
    stem = p.name[:-5] if p.name.endswith(".json") else p.name
    return p.with_name(f"{stem}_evaluated_{safe_model_name(model)}.json")


def temp_path(out: str | os.PathLike) -> Path:
    """The partial-results file of a run (PointLLM's ``*_processed_temp.json``)."""
    p = Path(out)
    stem = p.name[:-5] if p.name.endswith(".json") else p.name
    return p.with_name(f"{stem}_processed_temp.json")


def infer_eval_type(rf: ResultsFile) -> str:
    """Guess the judge type from a results file: ``label_name`` → ModelNet, ``question`` → QA, else the
    benchmark prompt (index 2 → captioning, 0/1 → open classification)."""
    if rf.results and all("label_name" in r for r in rf.results):
        return MODELNET_CLS
    if rf.results and all("question" in r for r in rf.results):
        return QA
    if rf.prompt == P.PROMPT_LISTS[2]:
        return CAPTIONING
    if rf.prompt in P.PROMPT_LISTS[:2]:
        return OPEN_CLS
    raise ConfigError(f"cannot tell the judge type from prompt {rf.prompt!r}; pass --type "
                      f"({', '.join(EVAL_TYPES)})")


# --------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------
@dataclass
class JudgeSettings:
    """What defines a judgement: a stored one is reused only when these match."""

    eval_type: str
    model: str
    params: dict
    samples: int = 1
    class_names: tuple[str, ...] = P.MODELNET40_CLASSES

    def fingerprint(self) -> dict:
        d = asdict(self)
        if self.class_names:
            d["class_names"] = list(self.class_names)
        else:
            del d["class_names"]
        return d


@dataclass
class RunStats:
    """Counters of one invocation (cached replies cost nothing)."""

    requests: int = 0
    retries: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    items_judged: int = 0
    items_resumed: int = 0


def _reply_doc(reply: ChatReply, sample: int) -> dict:
    return {"sample": sample, "content": reply.content, "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens, "usage_reported": reply.usage_reported,
            "cached": reply.cached}


def judge_record(record: dict, settings: JudgeSettings, client: ChatClient, cache: JudgeCache | None,
                 inference_prompt: str, stats: RunStats, lock: threading.Lock) -> list[dict]:
    """All replies for one record: one for PointLLM tasks; for QA, samples until ``settings.samples`` are
    valid or ``2 * samples`` were asked."""
    messages = build_messages(settings.eval_type, record, inference_prompt, settings.class_names)
    wanted = settings.samples
    limit = 1 if settings.eval_type != QA else 2 * wanted
    replies: list[dict] = []
    valid = 0
    for sample in range(limit):
        key = cache_key(settings.model, messages, settings.params, sample)
        reply = cache.get(key) if cache is not None else None
        if reply is None:
            reply = client.complete(messages, settings.params)
            if cache is not None:
                cache.put(key, reply)
            with lock:
                stats.prompt_tokens += reply.prompt_tokens
                stats.completion_tokens += reply.completion_tokens
        else:
            with lock:
                stats.cache_hits += 1
        replies.append(_reply_doc(reply, sample))
        valid += reply_is_valid(settings.eval_type, reply.content, len(settings.class_names))
        if settings.eval_type != QA or valid >= wanted:
            break
    return replies


def _load_previous(paths: Sequence[Path], settings: JudgeSettings) -> dict:
    """``{record key: stored item}`` from a temp or earlier output file made with the same settings."""
    for path in paths:
        if not path.exists():
            continue
        doc = read_json(path, "judge output")
        stored = (doc.get("enel") or {}).get("judge") if isinstance(doc, dict) else None
        if not isinstance(stored, dict) or "settings" not in stored:
            raise ConfigError(f"{path} was not written by enel's judge; move it away or pass another --out")
        if stored["settings"] != settings.fingerprint():
            diff = _settings_diff(stored["settings"], settings)
            raise ConfigError(f"{path} was judged with other settings ({diff}); delete it or pass another --out")
        return {_key(item): item for item in doc.get("results", []) if "judge_replies" in item}
    return {}


def _settings_diff(old: dict, settings: JudgeSettings) -> str:
    new = settings.fingerprint()
    diffs = [f"{k}: {old.get(k)!r} → {new[k]!r}" for k in new if old.get(k) != new[k] and k != "class_names"]
    if old.get("class_names") != new.get("class_names"):
        diffs.append("class names differ")
    return "; ".join(diffs) or "unknown difference"


def _key(record: dict) -> str:
    """A hashable, type-preserving key (object_id 0 and "0" stay distinct)."""
    return json.dumps(record_key(record))


def input_hash(settings: JudgeSettings, record: dict, inference_prompt: str) -> str:
    """SHA-256 of the messages a record produces: a stored judgement is reused only for the same input."""
    messages = build_messages(settings.eval_type, record, inference_prompt, settings.class_names)
    blob = json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _check_unique(records: list[dict], where: str) -> None:
    counts = Counter(_key(r) for r in records)
    repeated = next((r for r in records if counts[_key(r)] > 1), None)
    if repeated is not None:
        raise ConfigError(f"{where}: object {record_key(repeated)!r} appears twice; the judge resumes by object_id "
                          "(add a unique question_id to QA records)")


def build_output(rf: ResultsFile, settings: JudgeSettings, stored: dict, *, endpoint: Endpoint | None,
                 stats: RunStats, price_in: float | None, price_out: float | None, complete: bool,
                 results_path: str | None) -> dict:
    """The ``<results>_evaluated_<model>.json`` document (PointLLM's keys first, then ours)."""
    done = [(r, stored[_key(r)]) for r in rf.results if _key(r) in stored]
    records = [r for r, _ in done]
    replies = [item["judge_replies"] for _, item in done]
    summary, items = score_judgements(settings.eval_type, records, replies, inference_prompt=rf.prompt,
                                      num_categories=len(settings.class_names), samples=settings.samples)
    prompt_tokens = completion_tokens = 0
    for item, rep in zip(items, replies):
        p, c = reply_tokens(rep)
        prompt_tokens += p
        completion_tokens += c
        item.update({"prompt_tokens": p, "completion_tokens": c, "judge_replies": rep})
    for item, (_, stored_item) in zip(items, done):
        item["judge_input"] = stored_item.get("judge_input")
    pin, pout, source = prices_for(settings.model, price_in, price_out)
    cost = estimate_cost(prompt_tokens, completion_tokens, pin, pout)
    doc: dict[str, Any] = {"inference_prompt": rf.prompt}
    doc["gpt_prompt" if settings.eval_type == CAPTIONING else "prompt"] = judge_template(
        settings.eval_type, settings.class_names)
    doc.update(_pointllm_summary(settings.eval_type, summary))
    doc.update({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "GPT_cost": cost})
    doc["results"] = items
    doc["summary"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items()}
    missing_usage = sum(not r.get("usage_reported", True) for rep in replies for r in rep)
    doc["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                    "replies_without_usage": missing_usage, "this_run": asdict(stats)}
    doc["cost"] = {"usd": cost, "usd_this_run": estimate_cost(stats.prompt_tokens, stats.completion_tokens, pin, pout),
                   "price_in_per_1m": pin, "price_out_per_1m": pout, "price_source": source}
    doc["enel"] = {
        "judge": {"settings": settings.fingerprint(),
                  "base_url": endpoint.base_url if endpoint else None,
                  "complete": complete, "judged": len(done), "total": len(rf.results)},
        "results_path": results_path,
        "source_metadata": rf.metadata,
    }
    return doc


def _pointllm_summary(eval_type: str, s: dict) -> dict:
    """The summary fields with PointLLM's names and string formats (``"53.44%"``, ``"44.85"``)."""
    if eval_type == OPEN_CLS:
        return {"accuracy": f"{s['accuracy']:.2f}%", "total_predictions": s["total_predictions"],
                "correct_predictions": s["correct_predictions"], "invalid_responses": s["invalid_responses"]}
    if eval_type == MODELNET_CLS:
        return {"accuracy": f"{s['accuracy']:.2f}%", "clean_accuracy": f"{s['clean_accuracy']:.2f}%",
                "total_predictions": s["total_predictions"], "correct_predictions": s["correct_predictions"],
                "invalid_correct_predictions": s["invalid_correct_predictions"],
                "invalid_responses": s["invalid_responses"]}
    if eval_type == CAPTIONING:
        return {"average_score": f"{s['average_score']:.2f}", "total_score": f"{s['total_score']:.2f}",
                "total_predictions": s["total_predictions"], "invalid_responses": s["invalid_responses"]}
    return {"average_score": f"{s['average_score']:.2f}", "total_predictions": s["total_predictions"],
            "invalid_responses": s["invalid_responses"]}


def run_judge(results: str | os.PathLike | ResultsFile, eval_type: str | None = None, *,
              endpoint: Endpoint | None = None, base_url: str | None = None, model: str | None = None,
              api_key: str | None = None, out: str | os.PathLike | None = None, workers: int = 8,
              max_retries: int = DEFAULT_MAX_RETRIES, timeout: float = 120.0,
              cache_dir: str | os.PathLike | None | bool = True, price_in: float | None = None,
              price_out: float | None = None, samples: int = DEFAULT_QA_SAMPLES,
              chat_params: Mapping[str, Any] | None = None,
              class_names: Sequence[str] = P.MODELNET40_CLASSES,
              on_item: Callable[[dict, int, int], None] | None = None, save_interval: float = 2.0) -> dict:
    """Judge every record of a results file and write ``<results>_evaluated_<model>.json``.

    ``eval_type``: one of :data:`EVAL_TYPES` (``None`` → :func:`infer_eval_type`). The endpoint comes from
    ``endpoint`` or :func:`resolve_endpoint` (``base_url`` / ``model`` / ``api_key`` / environment).
    ``cache_dir``: ``True`` = :func:`default_cache_dir`, a path, or ``None``/``False`` for no cache.
    ``samples``: scorings per QA item (ignored by the PointLLM tasks, which ask once).
    ``on_item(item, done, total)`` runs in the calling thread after each finished record. Returns the
    output document (also written to ``out``); on an error or Ctrl-C the finished records are saved to
    :func:`temp_path` first, and the same call resumes from it.
    """
    if isinstance(results, ResultsFile):
        rf, results_path = results, None
    else:
        rf, results_path = read_results(results), str(results)
    eval_type = eval_type or infer_eval_type(rf)
    judge_template(eval_type, class_names)  # validates eval_type
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1 (got {workers})")
    if samples < 1:
        raise ConfigError(f"QA samples must be at least 1 (got {samples})")
    if eval_type == MODELNET_CLS:
        for r in rf.results:
            if not isinstance(r["ground_truth"], int):
                raise ConfigError(f"{results_path or 'results'}: ModelNet records need an integer ground_truth "
                                  f"(object {r['object_id']!r} has {r['ground_truth']!r})")
    _check_unique(rf.results, results_path or "results")
    endpoint = endpoint or resolve_endpoint(base_url, model, api_key)
    params = dict(DEFAULT_CHAT_PARAMS if chat_params is None else chat_params)
    settings = JudgeSettings(eval_type=eval_type, model=endpoint.model, params=params,
                             samples=samples if eval_type == QA else 1,
                             class_names=tuple(class_names) if eval_type == MODELNET_CLS else ())
    if out is None:
        if results_path is None:
            raise ConfigError("pass out= when judging an in-memory ResultsFile")
        out = default_judge_path(results_path, endpoint.model)
    out, tmp = Path(out), temp_path(out)

    stored = _load_previous([tmp, out], settings)
    hashes = {_key(r): input_hash(settings, r, rf.prompt) for r in rf.results}
    todo = [r for r in rf.results if stored.get(_key(r), {}).get("judge_input") != hashes[_key(r)]]
    stats = RunStats(items_resumed=len(rf.results) - len(todo))
    for r in todo:
        stored.pop(_key(r), None)
    cache = None
    if cache_dir is not None and cache_dir is not False:
        cache = JudgeCache(default_cache_dir() if cache_dir is True else cache_dir)
    stop = threading.Event()
    client = ChatClient(endpoint, timeout=timeout, max_retries=max_retries, stop=stop)
    lock = threading.Lock()

    def output(complete: bool) -> dict:
        stats.requests, stats.retries = client.requests_sent, client.retries
        return build_output(rf, settings, stored, endpoint=endpoint, stats=stats, price_in=price_in,
                            price_out=price_out, complete=complete, results_path=results_path)

    def accept(record: dict, replies: list[dict]) -> dict:
        item = {k: record[k] for k in ("question_id", "object_id") if k in record}
        item.update({"ground_truth": record["ground_truth"], "model_output": record["model_output"],
                     "judge_input": hashes[_key(record)], "judge_replies": replies})
        stored[_key(record)] = item
        stats.items_judged += 1
        return item

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="enel-judge")
    futures: dict[Future, dict] = {}
    try:
        futures = {pool.submit(judge_record, r, settings, client, cache, rf.prompt, stats, lock): r
                   for r in todo}
        remaining = set(futures)
        last_save = time.monotonic()
        while remaining:
            finished, remaining = wait(remaining, return_when=FIRST_COMPLETED)
            for fut in finished:
                item = accept(futures[fut], fut.result())
                if on_item is not None:
                    on_item(item, len(stored), len(rf.results))
            if time.monotonic() - last_save >= save_interval:
                atomic_write_json(tmp, output(complete=False))
                last_save = time.monotonic()
    except BaseException as exc:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        errors = []
        for fut, record in futures.items():
            if not fut.done() or fut.cancelled():
                continue
            if fut.exception() is None:
                if _key(record) not in stored:
                    accept(record, fut.result())
            elif not isinstance(fut.exception(), Stopped):
                errors.append(fut.exception())
        if isinstance(exc, Stopped) and errors:  # another worker's failure stopped this one: report it
            exc = errors[0]
        if stored or tmp.exists():
            atomic_write_json(tmp, output(complete=False))
            hint = f"{len(stored)}/{len(rf.results)} judged items saved to {tmp}; rerun the same command to resume"
        else:
            hint = "nothing was judged yet"
        if isinstance(exc, JudgeError):
            raise type(exc)(f"{exc} — {hint}") from None
        raise exc
    pool.shutdown(wait=True)
    doc = output(complete=True)
    atomic_write_json(out, doc)
    tmp.unlink(missing_ok=True)
    return doc
