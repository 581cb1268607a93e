"""Compiled decoding steps (:mod:`enel.model.decoding`, ``EnelForCausalLM.compile_decoding``) on tiny random
backbones: the eager step's greedy tokens and beams, its per-step scores within 1e-4 (the products sum in another
order), with and without aggregation; one compiled graph for every layer and step; a backbone the compiled step does
not cover keeps the eager step; bad input is refused."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from test_aggregation import QUESTIONS, agg_config, build, encode, make_clouds  # noqa: E402
from torch import nn  # noqa: E402


def decode(model, enc, clouds, compiled: bool, **kw):
    """Greedy generation (6 new tokens, scores kept) with the compiled or the eager decoding step."""
    assert model.compile_decoding(compiled) == compiled
    try:
        with torch.no_grad():
            return model.generate(**enc, point_clouds=clouds, max_new_tokens=6, do_sample=False, use_cache=True,
                                  output_scores=True, return_dict_in_generate=True, pad_token_id=0, **kw)
    finally:
        model.compile_decoding(False)


def assert_compiled_equals_eager(model, enc, clouds, **kw):
    eager = decode(model, enc, clouds, False, **kw)
    calls = [0]
    hook = model.model.language_model.layers[0].register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        compiled = decode(model, enc, clouds, True, **kw)
    finally:
        hook.remove()
    assert calls[0] == 1  # the eager layer ran the prompt only; every decoding step went through the compiled one
    assert torch.equal(compiled.sequences, eager.sequences)
    for a, b in zip(compiled.scores, eager.scores):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    if "num_beams" in kw:
        torch.testing.assert_close(compiled.sequences_scores, eager.sequences_scores, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backbone", ["tiny-llama", "tiny-qwen2"])  # Qwen2's q, k, v products have biases
def test_compiled_decoding_generates_the_eager_tokens(backbone):
    model, tok = build(backbone=backbone)
    enc = encode(tok, model, QUESTIONS, with_points=[True, False])  # left padding, a text-only sample
    assert_compiled_equals_eager(model, enc, make_clouds([1.0]))


def test_compiled_decoding_with_aggregation_and_beams_equals_the_eager_step():
    """Layers between aggregation and propagation cached shorter prompts: each keeps its own key mask."""
    model0, tok = build()
    model, _ = build(agg_config(grid_alpha=0.25, grid_min=0.25, grid_max=0.25), like=model0, gate=0.5)
    enc = encode(tok, model, QUESTIONS)
    clouds = make_clouds([0.3, 1.0])
    assert_compiled_equals_eager(model, enc, clouds)
    assert_compiled_equals_eager(model, enc, clouds, num_beams=2, num_return_sequences=2)  # 4 rows


def test_one_compiled_graph_serves_every_layer_and_step():
    torch._dynamo.reset()
    model, tok = build()
    enc = encode(tok, model, QUESTIONS[:1])
    with torch._dynamo.config.patch(error_on_recompile=True):
        decode(model, enc, make_clouds([1.0]), True)


def test_a_backbone_the_compiled_step_does_not_cover_keeps_the_eager_step():
    model, tok = build()
    mlp = model.model.language_model.layers[1].mlp
    biased = nn.Linear(mlp.down_proj.in_features, mlp.down_proj.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(mlp.down_proj.weight)
        biased.bias.normal_()
    mlp.down_proj = biased  # the compiled MLP has no biases
    assert model.compile_decoding() is False
    assert model.model.compiled_decoding is None
    enc = encode(tok, model, QUESTIONS[:1])
    with torch.no_grad():
        out = model.generate(**enc, point_clouds=make_clouds([1.0]), max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert out.shape[1] == enc["input_ids"].shape[1] + 3


def test_compile_decoding_refuses_what_is_not_a_bool():
    model, _ = build()
    with pytest.raises(TypeError, match="True or False"):
        model.compile_decoding("yes")


def test_a_batch_above_max_samples_decodes_with_the_eager_step(monkeypatch):
    from enel.model import decoding

    monkeypatch.setattr(decoding, "MAX_SAMPLES", 1)
    model, tok = build()
    enc = encode(tok, model, QUESTIONS)
    calls = [0]
    model.model.language_model.layers[0].register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    out = decode(model, enc, make_clouds([1.0, 0.5]), True)
    assert calls[0] == out.sequences.shape[1] - enc["input_ids"].shape[1]  # the prompt and every step but the last
