"""Conversation templates and label masking against references built piece by piece."""

from __future__ import annotations

import pytest

from enel.data.conversation import (
    IGNORE_INDEX,
    VICUNA_SYSTEM,
    ConversationError,
    build_prompt,
    encode_conversation,
    to_messages,
)
from enel.model.backbones import tiny_tokenizer
from enel.model.splice import add_point_tokens

CONV = [
    {"from": "human", "value": "<point>\nWhat is this?"},
    {"from": "gpt", "value": "A red chair with four legs."},
    {"from": "human", "value": "What colour is the seat?"},
    {"from": "gpt", "value": "The seat is red."},
]


@pytest.fixture()
def tok():
    t = tiny_tokenizer()
    add_point_tokens(t)
    return t


def labelled(enc):
    return [i for i, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE_INDEX]


def test_chat_labels_are_exactly_the_answers_and_their_end_tokens(tok):
    enc = encode_conversation(tok, CONV, template="chat", num_point_tokens=129)
    assert len(enc.input_ids) == len(enc.labels) and enc.has_points
    expected = []
    for turn in CONV[1::2]:
        expected += tok(turn["value"] + tok.eos_token, add_special_tokens=False).input_ids
    assert labelled(enc) == expected
    # labels equal the ids where they are set
    assert all(lab in (IGNORE_INDEX, i) for i, lab in zip(enc.input_ids, enc.labels))
    # the point block is fully present and masked
    ids = enc.input_ids
    start = ids.index(tok.convert_tokens_to_ids("<point_start>"))
    assert ids[start + 1 : start + 130] == [tok.convert_tokens_to_ids("<point_patch>")] * 129
    assert all(lab == IGNORE_INDEX for lab in enc.labels[: start + 131])


def test_vicuna_template_matches_pointllm_layout(tok):
    enc = encode_conversation(tok, CONV, template="vicuna_v1_1", num_point_tokens=3)
    text = tok.decode(enc.input_ids)
    assert text.startswith(VICUNA_SYSTEM + " USER: <point_start><point_patch><point_patch><point_patch><point_end>\n")
    assert " ASSISTANT: A red chair with four legs." + tok.eos_token + "USER: What colour is the seat? ASSISTANT:" in text
    assert tok.decode(labelled(enc)) == " A red chair with four legs." + tok.eos_token + " The seat is red." + tok.eos_token


def test_truncation_never_cuts_the_point_block(tok):
    full = encode_conversation(tok, CONV, template="chat", num_point_tokens=129)
    cut = encode_conversation(tok, CONV, template="chat", num_point_tokens=129, max_length=len(full.input_ids) - 5)
    assert cut.input_ids == full.input_ids[: len(full.input_ids) - 5]
    end = full.input_ids.index(tok.convert_tokens_to_ids("<point_end>"))
    with pytest.raises(ConversationError, match="point block ends"):
        encode_conversation(tok, CONV, template="chat", num_point_tokens=129, max_length=end)


def test_bad_conversations(tok):
    with pytest.raises(ConversationError, match="alternate"):
        to_messages([{"from": "human", "value": "a"}, {"from": "human", "value": "b"}])
    with pytest.raises(ConversationError, match="first human turn"):
        to_messages([{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"},
                     {"from": "human", "value": "<point>\nc"}])
    with pytest.raises(ConversationError, match="from"):
        to_messages([{"speaker": "human", "value": "a"}])
    with pytest.raises(ConversationError, match="no answer tokens"):
        encode_conversation(tok, [{"from": "human", "value": "<point>\nhi"}, {"from": "gpt", "value": ""}],
                            template="chat", num_point_tokens=129)
    # an empty answer labels nothing, not the user's end-of-turn token
    enc = encode_conversation(tok, [CONV[0], {"from": "gpt", "value": ""}, CONV[2], CONV[3]],
                              template="chat", num_point_tokens=129)
    assert labelled(enc) == tok(CONV[3]["value"] + tok.eos_token, add_special_tokens=False).input_ids
    with pytest.raises(ConversationError, match="unknown conversation template"):
        encode_conversation(tok, CONV, template="llava", num_point_tokens=129)


def test_leading_assistant_turn_is_dropped_as_pointllm_does(tok):
    msgs = to_messages([{"from": "gpt", "value": "hello"}, *CONV])
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]


def test_generation_prompt_ends_where_the_answer_starts(tok):
    prompt = build_prompt(tok, "What is this?", template="chat", num_point_tokens=129)
    enc = encode_conversation(tok, CONV[:2], template="chat", num_point_tokens=129)
    prompt_ids = tok(prompt, add_special_tokens=False).input_ids
    first_label = next(i for i, lab in enumerate(enc.labels) if lab != IGNORE_INDEX)
    assert enc.input_ids[:first_label] == prompt_ids
