"""An LLM judge over any OpenAI-compatible ``/v1/chat/completions`` server, with PointLLM's scoring rules.

Servers: OpenAI, vLLM (``vllm serve``), llama.cpp (``llama-server``), Ollama (``/v1``), anything that speaks
the chat-completions protocol. Requests go through the official ``openai`` client (its time-outs and
retries); our errors on top name the problem and the fix.

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

Modules: :mod:`.client` (endpoint, openai client, errors), :mod:`.scoring` (prompts, reply parsing, scoring
rules, cost), :mod:`.run` (the threaded, resumable, cached run and its output file).
"""

from __future__ import annotations

from .client import (
    DEFAULT_BASE_URL, DEFAULT_MAX_RETRIES, ENV_API_KEY, ENV_BASE_URL, ENV_MODEL, ChatClient, ChatReply, Endpoint,
    JudgeAuthError, JudgeConnectionError, JudgeError, JudgeRequestError, normalize_base_url, parse_completion,
    resolve_endpoint,
)
from .run import (
    DEFAULT_CHAT_PARAMS, JudgeCache, JudgeSettings, RunStats, build_output, cache_key, default_cache_dir,
    default_judge_path, infer_eval_type, input_hash, judge_record, run_judge, safe_model_name, temp_path,
)
from .scoring import (
    CAPTIONING, DEFAULT_QA_SAMPLES, EVAL_TYPES, MODELNET_CLS, OPEN_CLS, PRICES_PER_1M, QA, build_messages,
    estimate_cost, judge_template, parse_caption_score, parse_close_set, parse_open_free_form, parse_qa_score,
    prices_for, qa_fields, reply_is_valid, reply_tokens, score_captioning, score_close_set, score_judgements,
    score_open_free_form, score_qa,
)

__all__ = [
    "CAPTIONING", "ChatClient", "ChatReply", "DEFAULT_BASE_URL", "DEFAULT_CHAT_PARAMS", "DEFAULT_MAX_RETRIES",
    "DEFAULT_QA_SAMPLES", "ENV_API_KEY", "ENV_BASE_URL", "ENV_MODEL", "EVAL_TYPES", "Endpoint",
    "JudgeAuthError", "JudgeCache", "JudgeConnectionError", "JudgeError", "JudgeRequestError", "JudgeSettings",
    "MODELNET_CLS", "OPEN_CLS", "PRICES_PER_1M", "QA", "RunStats", "build_messages", "build_output",
    "cache_key", "default_cache_dir", "default_judge_path", "estimate_cost", "infer_eval_type", "input_hash",
    "judge_record", "judge_template", "normalize_base_url", "parse_caption_score", "parse_close_set",
    "parse_completion", "parse_open_free_form", "parse_qa_score", "prices_for", "qa_fields", "reply_is_valid",
    "reply_tokens", "resolve_endpoint", "run_judge", "safe_model_name", "score_captioning", "score_close_set",
    "score_judgements", "score_open_free_form", "score_qa", "temp_path",
]
