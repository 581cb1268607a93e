"""Conversation templates, tokenisation with the point block, and label masking.

Three templates:

* ``"chat"`` — the backbone tokenizer's own chat template (ChatML for SmolLM2), the default;
* ``"chat_no_system"`` — the same template with an empty system turn first, so a template that otherwise puts
  its default system prompt in front of every conversation does not (SmolLM2's: "You are a helpful AI assistant
  named SmolLM, trained by Hugging Face", 16 tokens of every training sample and every prompt);
* ``"vicuna_v1_1"`` — PointLLM's template (``pointllm/conversation.py``): the Vicuna system prompt, roles
  ``USER`` / ``ASSISTANT``, separators ``" "`` and the tokenizer's end-of-sequence token (``</s>`` for Vicuna).

Conversations come in PointLLM's format, ``[{"from": "human"|"gpt", "value": ...}, ...]``, with ``<point>``
in the first human turn. Labels are ``-100`` everywhere except the assistant answers (and the end-of-turn token
that closes each one), as PointLLM's ``preprocess_v1`` does. Truncation to the model length cuts the end of the
conversation and never the point block: a sample whose point block itself doesn't fit raises
:class:`ConversationError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from jinja2 import TemplateError  # what a chat template raises (e.g. one without a system role); torch requires jinja2

from ..errors import EnelError
from ..model.configuration_enel import POINT_PLACEHOLDER
from ..model.splice import expand_point_placeholder

__all__ = [
    "VICUNA_SYSTEM",
    "IGNORE_INDEX",
    "ConversationError",
    "EncodedConversation",
    "to_messages",
    "render",
    "encode_conversation",
    "build_prompt",
    "tokenize_prompts",
]

IGNORE_INDEX = -100
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


class ConversationError(EnelError, ValueError):
    """A conversation is malformed or can't be encoded within the model length."""


@dataclass
class EncodedConversation:
    input_ids: list[int]
    labels: list[int]
    has_points: bool


def to_messages(conversation: list[dict]) -> list[dict]:
    """PointLLM turns (``from`` / ``value``) → chat messages (``role`` / ``content``), checked.

    A leading assistant turn is dropped (as PointLLM does); roles must then alternate user / assistant, and
    ``<point>`` may appear only in the first user turn.
    """
    if not isinstance(conversation, list) or not conversation:
        raise ConversationError("a conversation must be a non-empty list of turns")
    messages = []
    for i, turn in enumerate(conversation):
        if not isinstance(turn, dict):
            raise ConversationError(f"turn {i} is not an object with 'from' and 'value'")
        role = turn.get("from", turn.get("role"))
        content = turn.get("value", turn.get("content"))
        if role not in _ROLES or not isinstance(content, str):
            raise ConversationError(f"turn {i} needs 'from' in {sorted(_ROLES)} and a string 'value'")
        messages.append({"role": _ROLES[role], "content": content})
    while messages and messages[0]["role"] != "user":
        messages.pop(0)
    for i, m in enumerate(messages):
        if m["role"] != ("user" if i % 2 == 0 else "assistant"):
            raise ConversationError("conversation roles must alternate human / gpt, starting with human")
        if POINT_PLACEHOLDER in m["content"] and i != 0:
            raise ConversationError(f"'{POINT_PLACEHOLDER}' may appear only in the first human turn (found in turn {i})")
    return messages


def _render_vicuna(messages: list[dict], eos: str, add_generation_prompt: bool) -> tuple[str, list[tuple[int, int]]]:
    text = VICUNA_SYSTEM + " "
    spans = []
    for m in messages:
        if m["role"] == "user":
            text += "USER: " + m["content"] + " "
        else:
            text += "ASSISTANT:"
            start = len(text)
            text += " " + m["content"] + eos
            spans.append((start, len(text)))
    if add_generation_prompt:
        text += "ASSISTANT:"
    return text, spans


def _render_chat(tokenizer, messages: list[dict], add_generation_prompt: bool,
                 system: bool = True) -> tuple[str, list[tuple[int, int]]]:
    if not getattr(tokenizer, "chat_template", None):
        raise ConversationError("the tokenizer has no chat template; use conversation_template='vicuna_v1_1'")
    if not system:
        messages = [{"role": "system", "content": ""}, *messages]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except TemplateError as e:
        if system:
            raise
        raise ConversationError(f"the backbone's chat template refuses an empty system turn ({e}); "
                                "use conversation_template='chat'") from e
    eos = tokenizer.eos_token or ""
    spans, cursor = [], 0
    for m in messages:
        if not m["content"]:
            continue  # an empty turn has nothing to locate (and "" would match anywhere)
        # the assistant text sits after everything rendered so far; find it in order
        at = text.find(m["content"], cursor)
        if at < 0:
            raise ConversationError("the chat template changed a message's text; cannot locate the answers to label")
        end = at + len(m["content"])
        if m["role"] == "assistant":
            if eos and text.startswith(eos, end):
                end += len(eos)
            spans.append((at, end))
        cursor = end
    return text, spans


def render(tokenizer, messages: list[dict], template: str, add_generation_prompt: bool = False):
    """Text of a conversation and the character spans of its assistant answers."""
    if template == "vicuna_v1_1":
        return _render_vicuna(messages, tokenizer.eos_token or "</s>", add_generation_prompt)
    if template in ("chat", "chat_no_system"):
        return _render_chat(tokenizer, messages, add_generation_prompt, system=template == "chat")
    raise ConversationError(f"unknown conversation template {template!r}; use 'chat', 'chat_no_system' or "
                            "'vicuna_v1_1'")


def _is_target(start: int, end: int, text: str, spans: list[tuple[int, int]]) -> bool:
    for s, e in spans:
        if end > s and start < e:
            # a token that begins before the answer may only carry whitespace from before it
            return start >= s or not text[start:s].strip()
    return False


def encode_conversation(
    tokenizer,
    conversation: list[dict],
    *,
    template: str,
    num_point_tokens: int,
    max_length: int | None = None,
) -> EncodedConversation:
    """Tokenise a training conversation and mask its labels.

    Returns:
        ids and labels of equal length (``IGNORE_INDEX`` on every non-answer token).
    """
    messages = to_messages(conversation)
    has_points = POINT_PLACEHOLDER in messages[0]["content"]
    if has_points:
        messages[0] = {**messages[0], "content": expand_point_placeholder(messages[0]["content"], num_point_tokens)}
    text, spans = render(tokenizer, messages, template)
    enc = tokenizer(text, add_special_tokens=(template == "vicuna_v1_1"), return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    offsets = enc["offset_mapping"]
    labels = [tid if _is_target(s, e, text, spans) else IGNORE_INDEX for tid, (s, e) in zip(ids, offsets)]
    if max_length is not None and len(ids) > max_length:
        if has_points:
            end_id = tokenizer.convert_tokens_to_ids("<point_end>")
            block_end = ids.index(end_id) if end_id in ids else -1
            if block_end >= max_length - 1:
                raise ConversationError(
                    f"the point block ends at token {block_end + 1} but the model length is {max_length}: "
                    "shorten the text before <point> or raise max_length"
                )
        ids, labels = ids[:max_length], labels[:max_length]
    if all(label == IGNORE_INDEX for label in labels):
        raise ConversationError("no answer tokens left to learn from (empty answers or everything truncated)")
    return EncodedConversation(ids, labels, has_points)


def build_prompt(
    tokenizer,
    question: str,
    *,
    template: str,
    num_point_tokens: int,
    history: list[tuple[str, str]] | None = None,
    with_points: bool = True,
) -> str:
    """The generation prompt for ``question`` after ``history`` ((question, answer) pairs).

    The point block opens the first user turn (``<point>\\n`` + question), as in PointLLM's evaluation.
    """
    turns = list(history or []) + [(question, None)]
    messages = []
    for i, (q, a) in enumerate(turns):
        content = (POINT_PLACEHOLDER + "\n" + q) if (i == 0 and with_points) else q
        messages.append({"role": "user", "content": content})
        if a is not None:
            messages.append({"role": "assistant", "content": a})
    if with_points:
        messages[0]["content"] = expand_point_placeholder(messages[0]["content"], num_point_tokens)
    text, _ = render(tokenizer, messages, template, add_generation_prompt=True)
    return text


def tokenize_prompts(tokenizer, prompts: list[str], template: str):
    """Left-padded batch encoding of generation prompts: ``input_ids`` and ``attention_mask`` ``(B, L)``."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        return tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=(template == "vicuna_v1_1"))
    finally:
        tokenizer.padding_side = side
