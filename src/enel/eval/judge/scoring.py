"""The judge's prompts, reply parsing and scoring rules (PointLLM ``evaluator.py``, ShapeLLM for ``qa``) and
its cost estimate: pure functions of the records and the stored replies."""

from __future__ import annotations

import random
import re
from typing import Sequence

from ...errors import ConfigError
from ...data import prompts as P

OPEN_CLS = "open-free-form-classification"
MODELNET_CLS = "modelnet-close-set-classification"
CAPTIONING = "object-captioning"
QA = "qa"
EVAL_TYPES = (OPEN_CLS, MODELNET_CLS, CAPTIONING, QA)
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


def reply_tokens(replies: list[dict]) -> tuple[int, int]:
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
