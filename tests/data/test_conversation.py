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


def test_chat_no_system_drops_the_templates_default_system_prompt(tok):
    # the tiny tokenizer's ChatML template, as SmolLM2's, adds a default system prompt when there is none
    with_default = tok.decode(encode_conversation(tok, CONV, template="chat", num_point_tokens=3).input_ids)
    assert with_default.startswith("<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n<|im_start|>user\n")
    enc = encode_conversation(tok, CONV, template="chat_no_system", num_point_tokens=3)
    text = tok.decode(enc.input_ids)
    assert text == "<|im_start|>system\n<|im_end|>\n" + with_default[with_default.index("<|im_start|>user"):]
    # the same answers are labelled, and nothing else
    assert labelled(enc) == labelled(encode_conversation(tok, CONV, template="chat", num_point_tokens=3))
    assert all(lab in (IGNORE_INDEX, i) for i, lab in zip(enc.input_ids, enc.labels))


def test_chat_no_system_generation_prompt_ends_where_the_answer_starts(tok):
    prompt = build_prompt(tok, "What is this?", template="chat_no_system", num_point_tokens=5)
    assert prompt.startswith("<|im_start|>system\n<|im_end|>\n<|im_start|>user\n<point_start>")
    enc = encode_conversation(tok, CONV[:2], template="chat_no_system", num_point_tokens=5)
    first_label = next(i for i, lab in enumerate(enc.labels) if lab != IGNORE_INDEX)
    assert enc.input_ids[:first_label] == tok(prompt, add_special_tokens=False).input_ids


def test_chat_no_system_refused_clearly_by_a_template_without_a_system_role(tok):
    tok.chat_template = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
                         "{% endif %}{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}")
    assert encode_conversation(tok, CONV, template="chat", num_point_tokens=3).has_points  # the plain one still works
    with pytest.raises(ConversationError, match="refuses an empty system turn.*conversation_template='chat'"):
        encode_conversation(tok, CONV, template="chat_no_system", num_point_tokens=3)
    with pytest.raises(ConversationError, match="'chat_no_system'"):
        encode_conversation(tok, CONV, template="chatml", num_point_tokens=3)


def test_cpu_default_grounding_sample_is_62_smollm2_tokens_without_the_system_prompt():
    """The default recipe's samples per minute rest on this (docs/training.md, "Samples per minute")."""
    from transformers import AutoTokenizer

    from enel.model.backbones import resolve_backbone
    from enel.model.configuration_enel import PointEmbeddingConfig
    from enel.train.recipe import load_recipe

    recipe = load_recipe("smollm2_stage1")
    smollm2 = AutoTokenizer.from_pretrained(resolve_backbone(recipe.backbone))
    add_point_tokens(smollm2)
    n_tokens = PointEmbeddingConfig.from_spec(recipe.point_config).num_tokens
    conv = [{"from": "human", "value": "<point>\nWhat is this?"}, {"from": "gpt", "value": "This is a night stand."}]
    enc = encode_conversation(smollm2, conv, template=recipe.conversation_template, num_point_tokens=n_tokens)
    assert "You are a helpful AI assistant" not in smollm2.decode(enc.input_ids)
    assert len(enc.input_ids) == 62  # the point block (33 + 2), 27 of text
    plain = encode_conversation(smollm2, conv, template="chat", num_point_tokens=n_tokens)
    assert len(plain.input_ids) == 62 + 16  # SmolLM2's default system prompt
