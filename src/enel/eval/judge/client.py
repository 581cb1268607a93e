"""The judge's endpoint and chat client: the official ``openai`` client sends each request (its time-out and
retries), and every failure it reports becomes one of our errors, which names the problem and the fix."""

from __future__ import annotations

import ipaddress
import os
import threading
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Mapping

from ...errors import ConfigError, EnelError

ENV_BASE_URL = "ENEL_JUDGE_BASE_URL"
ENV_MODEL = "ENEL_JUDGE_MODEL"
ENV_API_KEY = "ENEL_JUDGE_API_KEY"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MAX_RETRIES = 8

# the statuses the openai client retries (with 5xx): what is left after a failure on them is "gave up"
RETRYABLE_STATUS = frozenset({408, 409, 429})


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
    """The server rejected the request (4xx), sent a reply that is not a chat completion, or kept failing
    past the retry limit."""


class Stopped(Exception):
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
    """Arguments first, then ``ENEL_JUDGE_*``, then ``OPENAI_*`` (see :mod:`enel.eval.judge`)."""
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
# Chat client
# --------------------------------------------------------------------------------------------------------
@dataclass
class ChatReply:
    """One chat completion: the text and its token counts (0 when the server sent no ``usage``)."""

    content: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_reported: bool = True
    cached: bool = False


def parse_completion(completion: Any) -> ChatReply:
    """Text and token counts of an ``openai`` chat completion (a reply without ``usage`` counts 0 tokens).

    Raises :class:`JudgeRequestError` when the reply has no ``choices[0].message``: the server is not an
    OpenAI-compatible chat-completions endpoint.
    """
    choices = getattr(completion, "choices", None)
    message = getattr(choices[0], "message", None) if isinstance(choices, list) and choices else None
    if message is None:
        raise JudgeRequestError(f"the judge server's reply is not a chat completion (no choices[0].message: "
                                f"{str(completion)[:120]!r}); check that --base-url is an OpenAI-compatible "
                                f"/v1 endpoint")
    usage = getattr(completion, "usage", None)
    if usage is None:
        return ChatReply(content=message.content or "", usage_reported=False)
    return ChatReply(content=message.content or "", prompt_tokens=int(usage.prompt_tokens or 0),
                     completion_tokens=int(usage.completion_tokens or 0))


class ChatClient:
    """Thread-safe ``/chat/completions`` caller on one ``openai.OpenAI`` client.

    The openai client times each request out after ``timeout`` seconds and retries time-outs, dropped or
    refused connections, 408/409/429 and 5xx up to ``max_retries`` times, with exponential back-off
    (0.5 s doubling to 8 s, less 0–25 % jitter) or the server's ``Retry-After``. ``requests_sent`` counts
    every HTTP request (retries included), ``retries`` those beyond the first of each call.
    """

    def __init__(self, endpoint: Endpoint, *, timeout: float = 120.0, max_retries: int = DEFAULT_MAX_RETRIES,
                 stop: threading.Event | None = None):
        import openai

        self.endpoint = endpoint
        self.timeout = timeout
        self.max_retries = max_retries
        self.stop = stop or threading.Event()
        self._lock = threading.Lock()
        self.requests_sent = 0
        self.retries = 0
        # a local server is reached directly, whatever proxy the environment names
        http = openai.DefaultHttpxClient(trust_env=not _is_loopback(endpoint.base_url),
                                         event_hooks={"request": [self._count]})
        # openai insists on a key; without ours no Authorization header is sent (see `_headers`)
        self._client = openai.OpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key or "unused",
                                     timeout=timeout, max_retries=max_retries, http_client=http)
        self._headers = None if endpoint.api_key else {"Authorization": openai.omit}

    def _count(self, request: Any) -> None:
        """Counts each request the openai client sends; its retries carry ``x-stainless-retry-count`` > 0."""
        with self._lock:
            self.requests_sent += 1
            self.retries += request.headers.get("x-stainless-retry-count", "0") != "0"

    def complete(self, messages: list[dict], params: Mapping[str, Any] | None = None) -> ChatReply:
        """Send one chat completion (the openai client retries it); a final failure raises a
        :class:`JudgeError` and also sets ``self.stop``, so that other threads sharing this client stop
        sending."""
        import openai

        if self.stop.is_set():
            raise Stopped()
        try:
            completion = self._client.chat.completions.create(
                model=self.endpoint.model, messages=messages, extra_body=dict(params or {}),
                extra_headers=self._headers)
            return parse_completion(completion)
        except (openai.OpenAIError, ValueError) as exc:  # ValueError: a body that is not JSON
            self.stop.set()
            raise self._judge_error(exc) from None
        except JudgeError:
            self.stop.set()
            raise

    def _judge_error(self, exc: Exception) -> JudgeError:
        """Our error for a failure the openai client gave up on: the problem, then the fix."""
        import openai

        gave_up = f"gave up after {self.max_retries} retries"
        if isinstance(exc, openai.APITimeoutError):
            return JudgeRequestError(f"{gave_up}: no reply within {self.timeout:g} s; raise --timeout or check "
                                     f"the server at {self.endpoint.base_url}")
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return JudgeConnectionError(f"cannot reach the judge server at {self.endpoint.url} ({cause}); start "
                                        f"it or fix --base-url / {ENV_BASE_URL}")
        if isinstance(exc, openai.APIStatusError):
            status, msg = exc.status_code, _server_message(exc)
            if status in RETRYABLE_STATUS or status >= 500:
                return JudgeRequestError(f"{gave_up}: HTTP {status}: {msg}")
            if status in (401, 403):
                return JudgeAuthError(f"the judge server refused the API key (HTTP {status}: {msg}); set "
                                      f"OPENAI_API_KEY or {ENV_API_KEY}, or pass --api-key")
            if status == 404:
                return JudgeRequestError(f"HTTP 404 from {self.endpoint.url} ({msg}); check --base-url (usually "
                                         f"ends in /v1) and that the server serves model {self.endpoint.model!r}")
            return JudgeRequestError(f"the judge server rejected the request (HTTP {status}: {msg}); "
                                     f"check --model and the chat parameters")
        return JudgeRequestError(f"the judge server's reply is not a chat completion ({type(exc).__name__}: "
                                 f"{str(exc)[:120]}); check that --base-url is an OpenAI-compatible /v1 endpoint")


def _server_message(exc: Any) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the first 200 characters of the body."""
    body = exc.body
    err = body.get("error", body) if isinstance(body, dict) else body
    msg = err.get("message") if isinstance(err, dict) else err
    if msg:
        return str(msg)[:300]
    text = exc.response.text.strip() if exc.response is not None else ""
    return text[:200] or "(empty body)"
