"""An LLM judge over any OpenAI-compatible ``/v1/chat/completions`` server, with PointLLM's scoring rules.

Servers: OpenAI, vLLM (``vllm serve``), llama.cpp (``llama-server``), Ollama (``/v1``), anything that speaks
the chat-completions protocol. Only the standard library is used (``urllib``), no ``openai`` package.

Where the endpoint comes from (first one set wins):

* base URL: ``base_url`` argument / ``--base-url`` → ``ENEL_JUDGE_BASE_URL`` → ``OPENAI_BASE_URL`` →
  ``https://api.openai.com/v1``. A URL with no path gets ``/v1`` appended; a trailing
  ``/chat/completions`` is accepted and stripped.
* model: ``model`` / ``--model`` → ``ENEL_JUDGE_MODEL`` (required: PointLLM's gpt-4-0613 is retired).
* API key: ``api_key`` / ``--api-key`` → ``ENEL_JUDGE_API_KEY`` → ``OPENAI_API_KEY``; required for
  api.openai.com, optional elsewhere (no ``Authorization`` header is sent without one).

Scoring (PointLLM ``evaluator.py``; ``docs/pointllm-ecosystem.md`` §3.4):

* open-free-form-classification: the reply's first character must be T or F, else INVALID;
  ``accuracy = correct / (N - invalid)``.
* modelnet-close-set-classification: ``index#class#reason`` (regex ``(\\d+#[^#]*#.*$)``); an unparsable
  reply, index outside 0..39 or class "NA" is INVALID and replaced by a random class drawn from
  ``random.Random(0)`` in results-file order (PointLLM's ``random.seed(0)`` stream in single-process order;
  its parallel pool made the draws irreproducible). ``accuracy = correct / N`` (random hits included),
  ``clean_accuracy = (correct - invalid_correct) / (N - invalid)``.
* object-captioning: ``score#reason`` (regex ``(\\d*#.*)``), score outside 0..100 → INVALID;
  ``average_score = sum(valid scores) / (N - invalid)``.
* qa (3D MM-Vet, ShapeLLM / ENEL): the reply must be a bare number in 0..100; each item is scored ``k``
  times (default 5) and the valid scores averaged; invalid replies are re-asked up to ``k`` extra times.

A run is resumable: judged items are saved to ``<out>_processed_temp.json`` as they finish (and on any
error or Ctrl-C), and every reply is cached on disk under a hash of (model, messages, parameters, sample
index), so rerunning a finished evaluation sends no request at all.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import json
import os
import random
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..data import prompts as P
from ..errors import ConfigError, EnelError
from ..paths import cache_dir
from .results import ResultsFile, atomic_write_json, read_json, read_results, record_key

ENV_BASE_URL = "ENEL_JUDGE_BASE_URL"
ENV_MODEL = "ENEL_JUDGE_MODEL"
ENV_API_KEY = "ENEL_JUDGE_API_KEY"
DEFAULT_BASE_URL = "https://api.openai.com/v1"

OPEN_CLS = "open-free-form-classification"
MODELNET_CLS = "modelnet-close-set-classification"
CAPTIONING = "object-captioning"
QA = "qa"
EVAL_TYPES = (OPEN_CLS, MODELNET_CLS, CAPTIONING, QA)

# PointLLM evaluator.py and ENEL/ShapeLLM gpt_eval.py: temperature 1, top_p 1, max_tokens 2048
DEFAULT_CHAT_PARAMS = {"temperature": 1, "top_p": 1, "max_tokens": 2048}
DEFAULT_QA_SAMPLES = 5

# USD per 1M tokens (input, output): OpenAI list prices; check https://openai.com/api/pricing and override
# with price_in / price_out (--price-in / --price-out). Models not listed cost "unknown".
PRICES_PER_1M: dict[str, tuple[float, float]] = {
    "gpt-4-0613": (30.0, 60.0),
    "gpt-4": (30.0, 60.0),
    "gpt-4-1106-preview": (10.0, 30.0),
    "gpt-4-0125-preview": (10.0, 30.0),
    "gpt-4-turbo": (10.0, 30.0),
    "gpt-4-turbo-2024-04-09": (10.0, 30.0),
    "gpt-3.5-turbo-0613": (1.5, 2.0),
    "gpt-3.5-turbo-1106": (1.0, 2.0),
    "gpt-3.5-turbo-0125": (0.5, 1.5),
    "gpt-3.5-turbo": (0.5, 1.5),
    "gpt-4o": (2.5, 10.0),
    "gpt-4o-2024-08-06": (2.5, 10.0),
    "gpt-4o-mini": (0.15, 0.6),
    "gpt-4.1": (2.0, 8.0),
    "gpt-4.1-mini": (0.4, 1.6),
    "gpt-4.1-nano": (0.1, 0.4),
}

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


# --------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------
class JudgeError(EnelError, RuntimeError):
    """The judge could not finish; finished items are kept for a resume."""


class JudgeConnectionError(JudgeError):
    """The server cannot be reached (refused, DNS, TLS)."""


class JudgeAuthError(JudgeError):
    """The server refused the API key (HTTP 401/403); retrying cannot help."""


class JudgeRequestError(JudgeError):
    """The server rejected the request (4xx) or kept failing past the retry limit."""


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


class _Stopped(Exception):
    """Raised inside worker threads once the run is being stopped."""


# --------------------------------------------------------------------------------------------------------
# Endpoint
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Endpoint:
    """Where to send chat completions; ``repr`` never shows the key."""

    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return self.base_url + "/chat/completions"


def normalize_base_url(url: str) -> str:
    """``http://h:8000`` → ``http://h:8000/v1``; ``…/v1/chat/completions`` → ``…/v1``; no trailing ``/``."""
    url = url.strip().rstrip("/")
    if url.endswith("/chat/completions"):
        url = url[: -len("/chat/completions")]
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"judge base URL {url!r} is not an http(s) URL; e.g. --base-url http://localhost:8000/v1")
    if parts.path in ("", "/"):
        url = url + "/v1"
    return url


def _first(*values: str | None) -> str | None:
    for v in values:
        if v:
            return v
    return None


def resolve_endpoint(base_url: str | None = None, model: str | None = None, api_key: str | None = None,
                     env: Mapping[str, str] | None = None) -> Endpoint:
    """Arguments first, then ``ENEL_JUDGE_*``, then ``OPENAI_*`` (see the module docstring)."""
    env = os.environ if env is None else env
    url = normalize_base_url(_first(base_url, env.get(ENV_BASE_URL), env.get("OPENAI_BASE_URL"))
                             or DEFAULT_BASE_URL)
    name = _first(model, env.get(ENV_MODEL))
    if not name:
        raise ConfigError(f"no judge model: pass --model (e.g. gpt-4o, or the name your vLLM/Ollama server "
                          f"serves) or set {ENV_MODEL}")
    key = _first(api_key, env.get(ENV_API_KEY), env.get("OPENAI_API_KEY"))
    if key is None and urllib.parse.urlsplit(url).hostname == "api.openai.com":
        raise ConfigError(f"no API key for {url}: set OPENAI_API_KEY or {ENV_API_KEY}, or pass --api-key")
    return Endpoint(base_url=url, model=name, api_key=key)


def _is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------------------
# HTTP client with retries
# --------------------------------------------------------------------------------------------------------
@dataclass
class ChatReply:
    """One chat completion: the text and its token counts (0 when the server sent no ``usage``)."""

    content: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_reported: bool = True
    cached: bool = False


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off: ``min(max_delay, initial_delay * 2**attempt) * (1 + jitter * U[0,1))``.

    ``Retry-After`` (seconds) from a 429/503 replaces the computed delay (capped at ``max_delay``).
    Connection failures (refused, DNS) are retried at most ``connect_retries`` times.
    """

    max_retries: int = 8
    initial_delay: float = 1.0
    max_delay: float = 60.0
    jitter: float = 0.25
    connect_retries: int = 2
    seed: int = 0

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(self.max_delay, max(0.0, retry_after))
        base = min(self.max_delay, self.initial_delay * (2 ** attempt))
        return base * (1 + self.jitter * rng.random())


def _server_message(raw: bytes) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the first 200 characters of it."""
    text = raw.decode("utf-8", "replace").strip()
    try:
        doc = json.loads(text)
        err = doc.get("error", doc) if isinstance(doc, dict) else doc
        msg = err.get("message") if isinstance(err, dict) else err
        if msg:
            return str(msg)[:300]
    except (json.JSONDecodeError, AttributeError):
        pass
    return text[:200] or "(empty body)"


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def parse_completion(doc: Any) -> ChatReply:
    """Text and token counts of a chat-completions JSON body; a body without choices is retryable."""
    try:
        message = doc["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        raise _Retryable("reply has no choices[0].message") from None
    content = message.get("content") if isinstance(message, dict) else None
    usage = doc.get("usage") if isinstance(doc, dict) else None
    if isinstance(usage, dict):
        return ChatReply(content=content or "", prompt_tokens=int(usage.get("prompt_tokens") or 0),
                         completion_tokens=int(usage.get("completion_tokens") or 0))
    return ChatReply(content=content or "", usage_reported=False)


class ChatClient:
    """Thread-safe ``/chat/completions`` caller with time-outs, retries and request counting."""

    def __init__(self, endpoint: Endpoint, *, timeout: float = 120.0, retry: RetryPolicy | None = None,
                 sleep: Callable[[float], None] | None = None, stop: threading.Event | None = None):
        self.endpoint = endpoint
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.stop = stop or threading.Event()
        self._sleep = sleep
        self._rng = random.Random(self.retry.seed)
        self._lock = threading.Lock()
        self.requests_sent = 0
        self.retries = 0
        handlers = [urllib.request.ProxyHandler({})] if _is_loopback(endpoint.base_url) else []
        self._opener = urllib.request.build_opener(*handlers)

    # one HTTP exchange ---------------------------------------------------------------------------------
    def _post_once(self, body: bytes) -> ChatReply:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.endpoint.api_key:
            headers["Authorization"] = f"Bearer {self.endpoint.api_key}"
        req = urllib.request.Request(self.endpoint.url, data=body, headers=headers, method="POST")
        with self._lock:
            self.requests_sent += 1
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            self._raise_for_status(exc.code, exc.read() if exc.fp else b"", exc.headers)
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                raise _Retryable(f"no reply within {self.timeout:g} s") from None
            if isinstance(reason, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
                raise _Retryable(f"connection dropped ({type(reason).__name__})") from None
            raise JudgeConnectionError(
                f"cannot reach the judge server at {self.endpoint.url} ({reason}); start it or fix "
                f"--base-url / {ENV_BASE_URL}") from None
        except TimeoutError:
            raise _Retryable(f"no reply within {self.timeout:g} s") from None
        except (http.client.HTTPException, ConnectionError) as exc:
            raise _Retryable(f"connection dropped ({type(exc).__name__}: {exc})") from None
        try:
            doc = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _Retryable(f"reply is not JSON: {raw[:120]!r}") from None
        return parse_completion(doc)

    def _raise_for_status(self, status: int, raw: bytes, headers: Any) -> None:
        msg = _server_message(raw)
        if status in RETRYABLE_STATUS or status >= 500:
            raise _Retryable(f"HTTP {status}: {msg}", _retry_after(headers))
        if status in (401, 403):
            raise JudgeAuthError(f"the judge server refused the API key (HTTP {status}: {msg}); set "
                                 f"OPENAI_API_KEY or {ENV_API_KEY}, or pass --api-key")
        if status == 404:
            raise JudgeRequestError(f"HTTP 404 from {self.endpoint.url} ({msg}); check --base-url (usually "
                                    f"ends in /v1) and that the server serves model {self.endpoint.model!r}")
        raise JudgeRequestError(f"the judge server rejected the request (HTTP {status}: {msg}); "
                                f"check --model and the chat parameters")

    # retries ----------------------------------------------------------------------------------------------
    def complete(self, messages: list[dict], params: Mapping[str, Any] | None = None) -> ChatReply:
        """Send one chat completion, retrying time-outs, 429 and 5xx with back-off; 4xx fail at once.

        A final failure also sets ``self.stop``, so that other threads sharing this client stop sending.
        """
        try:
            return self._complete(messages, params)
        except JudgeError:
            self.stop.set()
            raise

    def _complete(self, messages: list[dict], params: Mapping[str, Any] | None) -> ChatReply:
        body = json.dumps({"model": self.endpoint.model, "messages": messages, **(params or {})}).encode()
        policy = self.retry
        connect_failures = 0
        attempt = 0
        while True:
            if self.stop.is_set():
                raise _Stopped()
            try:
                return self._post_once(body)
            except JudgeConnectionError:
                connect_failures += 1
                if connect_failures > policy.connect_retries:
                    raise
                reason, retry_after = "connection failed", None
            except _Retryable as exc:
                reason, retry_after = str(exc), exc.retry_after
            if attempt >= policy.max_retries:
                raise JudgeRequestError(f"gave up after {policy.max_retries} retries: {reason}")
            with self._lock:
                delay = policy.delay(attempt, self._rng, retry_after)
                self.retries += 1
            attempt += 1
            self._wait(delay)

    def _wait(self, seconds: float) -> None:
        if self._sleep is not None:
            self._sleep(seconds)
        elif self.stop.wait(seconds):
            raise _Stopped()


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
# Prompts and reply parsing (pure functions)
# --------------------------------------------------------------------------------------------------------
def judge_template(eval_type: str, class_names: Sequence[str] = P.MODELNET40_CLASSES) -> str:
    """The judge prompt template as stored in the output's ``prompt`` field."""
    if eval_type == OPEN_CLS:
        return P.OPEN_FREE_FORM_CLS_PROMPT
    if eval_type == MODELNET_CLS:
        return P.close_set_cls_template(class_names)
    if eval_type == CAPTIONING:
        return P.OBJECT_CAPTIONING_PROMPT
    if eval_type == QA:
        return P.QA_USER_PROMPT
    raise ConfigError(f"unknown judge type {eval_type!r}; choose one of {', '.join(EVAL_TYPES)}")


def qa_fields(record: dict, inference_prompt: str) -> tuple[str, str]:
    """(question, question type) of a QA record: ``question`` (else the file's prompt), ``question_type``
    (else ``category``, else empty)."""
    question = record.get("question") or inference_prompt
    qtype = record.get("question_type") or record.get("category") or ""
    return str(question), str(qtype)


def build_messages(eval_type: str, record: dict, inference_prompt: str = "",
                   class_names: Sequence[str] = P.MODELNET40_CLASSES) -> list[dict]:
    """The chat messages for one record, exactly as PointLLM (or ShapeLLM for ``qa``) sends them."""
    out = record["model_output"]
    if eval_type == OPEN_CLS:
        return P.open_free_form_messages(str(record["ground_truth"]), out)
    if eval_type == MODELNET_CLS:
        return P.close_set_messages(out, class_names)
    if eval_type == CAPTIONING:
        return P.captioning_messages(str(record["ground_truth"]), out)
    if eval_type == QA:
        question, qtype = qa_fields(record, inference_prompt)
        return P.qa_messages(question, qtype, out, str(record["ground_truth"]))
    raise ConfigError(f"unknown judge type {eval_type!r}; choose one of {', '.join(EVAL_TYPES)}")


def parse_open_free_form(reply: str) -> tuple[str, str]:
    """``("T" | "F" | "INVALID", reason)``: the stripped reply's first character decides (PointLLM)."""
    text = reply.strip()
    verdict = text[0].upper() if text else ""
    if verdict not in ("T", "F"):
        return "INVALID", text
    return verdict, text[2:] if len(text) > 2 else ""


_CLOSE_SET_RE = re.compile(r"(\d+#[^#]*#.*$)")
_CAPTION_RE = re.compile(r"(\d*#.*)")


def parse_close_set(reply: str, num_categories: int = 40) -> tuple[int, str, str]:
    """``(index, class label, reason)``; index -1 (label "INVALID") for an unusable reply (PointLLM rules)."""
    m = _CLOSE_SET_RE.search(reply)
    text = (m.group(1) if m else reply).strip()
    parts = text.split("#")
    label = parts[1] if len(parts) > 1 else ""
    reason = parts[2] if len(parts) > 2 else ""
    try:
        index = int(parts[0])
    except ValueError:
        index = -1
    if index not in range(num_categories) or label == "NA":
        return -1, "INVALID", text
    return index, label, reason


def parse_caption_score(reply: str) -> tuple[int, str]:
    """``(score, reason)``; score -1 when unparsable or outside 0..100 (PointLLM rules)."""
    m = _CAPTION_RE.search(reply)
    text = (m.group(1) if m else reply).strip()
    parts = text.split("#")
    try:
        score = int(parts[0])
    except ValueError:
        return -1, text
    if score not in range(101):
        return -1, text
    return score, parts[1] if len(parts) > 1 else ""


def parse_qa_score(reply: str) -> float | None:
    """The 0..100 confidence of a 3D MM-Vet reply (a bare number, as ShapeLLM's ``is_valid``), else None."""
    try:
        value = float(reply.strip())
    except ValueError:
        return None
    return value if 0 <= value <= 100 else None


def reply_is_valid(eval_type: str, reply: str, num_categories: int = 40) -> bool:
    """Whether a reply parses under the task's rules."""
    if eval_type == OPEN_CLS:
        return parse_open_free_form(reply)[0] != "INVALID"
    if eval_type == MODELNET_CLS:
        return parse_close_set(reply, num_categories)[0] >= 0
    if eval_type == CAPTIONING:
        return parse_caption_score(reply)[0] >= 0
    return parse_qa_score(reply) is not None


# --------------------------------------------------------------------------------------------------------
# Scoring a finished set of judgements (pure)
# --------------------------------------------------------------------------------------------------------
def _pct(num: float, den: float) -> float:
    return 100.0 * num / den if den else 0.0


def _tokens(replies: list[dict]) -> tuple[int, int]:
    return sum(r["prompt_tokens"] for r in replies), sum(r["completion_tokens"] for r in replies)


def score_open_free_form(records: list[dict], replies: list[list[dict]]) -> tuple[dict, list[dict]]:
    """PointLLM's open-vocabulary classification: ``accuracy = correct / (N - invalid)``."""
    items, correct, invalid = [], 0, 0
    for rec, rep in zip(records, replies):
        verdict, reason = parse_open_free_form(rep[0]["content"])
        correct += verdict == "T"
        invalid += verdict == "INVALID"
        items.append({"object_id": rec["object_id"], "ground_truth": rec["ground_truth"],
                      "model_output": rec["model_output"], "gpt_cls_result": verdict, "gpt_reason": reason})
    n = len(records)
    return {"accuracy": _pct(correct, n - invalid), "total_predictions": n, "correct_predictions": correct,
            "invalid_responses": invalid}, items


def score_close_set(records: list[dict], replies: list[list[dict]], num_categories: int = 40,
                    seed: int = 0) -> tuple[dict, list[dict]]:
    """PointLLM's ModelNet rule: invalid → ``random.Random(seed).choice(range(num_categories))`` in record order."""
    rng = random.Random(seed)
    items, correct, invalid, invalid_correct = [], 0, 0, 0
    for rec, rep in zip(records, replies):
        index, label, reason = parse_close_set(rep[0]["content"], num_categories)
        guessed = index < 0
        if guessed:
            index = rng.choice(range(num_categories))
            invalid += 1
        hit = int(index == rec["ground_truth"])
        correct += hit
        invalid_correct += hit if guessed else 0
        items.append({"object_id": rec["object_id"], "ground_truth": rec["ground_truth"],
                      "gpt_cls_result": index, "ground_truth_label": rec.get("label_name"),
                      "gpt_cls_label": label, "model_output": rec["model_output"], "gpt_reason": reason,
                      "random_guess": guessed})
    n = len(records)
    return {"accuracy": _pct(correct, n), "clean_accuracy": _pct(correct - invalid_correct, n - invalid),
            "total_predictions": n, "correct_predictions": correct,
            "invalid_correct_predictions": invalid_correct, "invalid_responses": invalid}, items


def score_captioning(records: list[dict], replies: list[list[dict]]) -> tuple[dict, list[dict]]:
    """PointLLM's caption score: ``average_score = sum(valid) / (N - invalid)``."""
    items, total, invalid = [], 0, 0
    for rec, rep in zip(records, replies):
        score, reason = parse_caption_score(rep[0]["content"])
        if score < 0:
            invalid += 1
        else:
            total += score
        items.append({"object_id": rec["object_id"], "ground_truth": rec["ground_truth"],
                      "model_output": rec["model_output"], "gpt_score": score, "gpt_reason": reason})
    n = len(records)
    return {"average_score": total / (n - invalid) if n - invalid else 0.0, "total_score": float(total),
            "total_predictions": n, "invalid_responses": invalid}, items


def score_qa(records: list[dict], replies: list[list[dict]], inference_prompt: str = "",
             samples: int = DEFAULT_QA_SAMPLES) -> tuple[dict, list[dict]]:
    """3D MM-Vet: item score = mean of its first ``samples`` valid scores; the total is the mean over items
    with at least one valid score, also per question type."""
    items, by_type = [], {}
    invalid_items = invalid_replies = 0
    for rec, rep in zip(records, replies):
        parsed = [parse_qa_score(r["content"]) for r in rep]
        valid = [s for s in parsed if s is not None][:samples]
        invalid_replies += sum(s is None for s in parsed)
        score = sum(valid) / len(valid) if valid else None
        question, qtype = qa_fields(rec, inference_prompt)
        if score is None:
            invalid_items += 1
        else:
            by_type.setdefault(qtype, []).append(score)
        item = {k: rec[k] for k in ("question_id", "object_id") if k in rec}
        item.update({"question": question, "question_type": qtype, "ground_truth": rec["ground_truth"],
                     "model_output": rec["model_output"], "scores": valid, "score": score})
        items.append(item)
    all_scores = [s for v in by_type.values() for s in v]
    return {"average_score": sum(all_scores) / len(all_scores) if all_scores else 0.0,
            "per_type": {t: sum(v) / len(v) for t, v in sorted(by_type.items())},
            "total_predictions": len(records), "invalid_items": invalid_items,
            "invalid_responses": invalid_replies, "samples_per_item": samples}, items


def score_judgements(eval_type: str, records: list[dict], replies: list[list[dict]], *,
                     inference_prompt: str = "", num_categories: int = 40,
                     samples: int = DEFAULT_QA_SAMPLES) -> tuple[dict, list[dict]]:
    """Dispatch to the task's scoring rule; ``replies[i]`` are the stored replies of ``records[i]``."""
    if eval_type == OPEN_CLS:
        return score_open_free_form(records, replies)
    if eval_type == MODELNET_CLS:
        return score_close_set(records, replies, num_categories)
    if eval_type == CAPTIONING:
        return score_captioning(records, replies)
    return score_qa(records, replies, inference_prompt, samples)


# --------------------------------------------------------------------------------------------------------
# Cost
# --------------------------------------------------------------------------------------------------------
def prices_for(model: str, price_in: float | None = None, price_out: float | None = None
               ) -> tuple[float | None, float | None, str]:
    """USD per 1M (input, output) tokens and where they came from; overrides win, unknown → None."""
    table = PRICES_PER_1M.get(model)
    pin = price_in if price_in is not None else (table[0] if table else None)
    pout = price_out if price_out is not None else (table[1] if table else None)
    if price_in is not None or price_out is not None:
        source = "given" if table is None or (price_in is not None and price_out is not None) else "given+table"
    else:
        source = "table" if table else "unknown model"
    return pin, pout, source


def estimate_cost(prompt_tokens: int, completion_tokens: int, price_in: float | None,
                  price_out: float | None) -> float | str:
    """USD for the tokens at per-1M prices, or ``"unknown"`` when a price is missing."""
    if price_in is None or price_out is None:
        return "unknown"
    return round((prompt_tokens * price_in + completion_tokens * price_out) / 1e6, 6)


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
    seen: set = set()
    for r in records:
        k = _key(r)
        if k in seen:
            raise ConfigError(f"{where}: object {record_key(r)!r} appears twice; the judge resumes by object_id "
                              "(add a unique question_id to QA records)")
        seen.add(k)


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
        p, c = _tokens(rep)
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
              max_retries: int = 8, timeout: float = 120.0, retry: RetryPolicy | None = None,
              cache_dir: str | os.PathLike | None | bool = True, price_in: float | None = None,
              price_out: float | None = None, samples: int = DEFAULT_QA_SAMPLES,
              chat_params: Mapping[str, Any] | None = None,
              class_names: Sequence[str] = P.MODELNET40_CLASSES,
              on_item: Callable[[dict, int, int], None] | None = None, save_interval: float = 2.0,
              sleep: Callable[[float], None] | None = None) -> dict:
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
    policy = retry or RetryPolicy(max_retries=max_retries)
    client = ChatClient(endpoint, timeout=timeout, retry=policy, sleep=sleep, stop=stop)
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
            elif not isinstance(fut.exception(), _Stopped):
                errors.append(fut.exception())
        if isinstance(exc, _Stopped) and errors:  # another worker's failure stopped this one: report it
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
