"""EnelForCausalLM on tiny random Llama and Qwen2 backbones: splice, generation, cache, padding, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from enel.data.conversation import build_prompt, tokenize_prompts
from enel.model import EnelForCausalLM
from enel.model.configuration_enel import PointEmbeddingConfig
from enel.model.splice import SpliceError, expand_point_placeholder

BACKBONES = ["tiny-llama", "tiny-qwen2"]


def make(backbone="tiny-llama", **kw):
    torch.manual_seed(0)
    model, tok = EnelForCausalLM.from_backbone(backbone, point_config={"embed_dim": 24, "group_size": 8,
                                                                        "projector_hidden": [64], "num_points": 1024},
                                               **kw)
    return model.eval(), tok


def prompts(tok, model, questions):
    texts = [build_prompt(tok, q, template="chat", num_point_tokens=model.config.num_point_tokens) for q in questions]
    return tokenize_prompts(tok, texts, "chat")


def clouds(n, points=1024, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, points, 6, generator=g)


@pytest.fixture(scope="module", params=BACKBONES)
def tiny(request):
    return make(request.param)


def test_point_token_count_is_independent_of_resolution(tiny):
    model, tok = tiny
    enc = prompts(tok, model, ["What is this?"])
    assert model.config.num_point_tokens == 129
    for n in (1024, 16384):
        with torch.no_grad():
            tokens = model.model.embed_points(clouds(1, n))
            out = model(**enc, point_clouds=clouds(1, n))
        assert tokens.features.shape[1] == 129
        assert out.logits.shape[1] == enc["input_ids"].shape[1]


def test_cached_generation_equals_recomputation(tiny):
    model, tok = tiny
    enc = prompts(tok, model, ["What is this?"])
    pc = clouds(1)
    kw = dict(point_clouds=pc, max_new_tokens=10, do_sample=False, output_logits=True,
              return_dict_in_generate=True, pad_token_id=tok.pad_token_id)
    cached = model.generate(**enc, use_cache=True, **kw)
    uncached = model.generate(**enc, use_cache=False, **kw)
    assert torch.equal(cached.sequences, uncached.sequences)
    for a, b in zip(cached.logits, uncached.logits):
        assert torch.allclose(a, b, atol=1e-4, rtol=0)
    # and against one explicit forward over the whole generated sequence
    seq = cached.sequences
    with torch.no_grad():
        full = model(input_ids=seq, attention_mask=torch.ones_like(seq), point_clouds=pc).logits
    start = enc["input_ids"].shape[1] - 1
    for i, step_logits in enumerate(cached.logits):
        assert torch.allclose(full[:, start + i], step_logits, atol=1e-4, rtol=0)


def test_prompt_alone_equals_prompt_in_padded_batch(tiny):
    model, tok = tiny
    questions = ["What is this?", "How many legs does the chair have and what colour is its seat?"]
    pcs = clouds(2)
    batch = prompts(tok, model, questions)
    assert (batch["attention_mask"] == 0).any(), "the short prompt must be left-padded"
    gen = dict(max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    together = model.generate(**batch, point_clouds=pcs, **gen)[:, batch["input_ids"].shape[1]:]
    for i, q in enumerate(questions):
        alone_enc = prompts(tok, model, [q])
        alone = model.generate(**alone_enc, point_clouds=pcs[i : i + 1], **gen)[:, alone_enc["input_ids"].shape[1]:]
        assert torch.equal(alone[0], together[i])
        with torch.no_grad():
            la = model(**alone_enc, point_clouds=pcs[i : i + 1]).logits[0, -1]
            lb = model(**batch, point_clouds=pcs).logits[i, -1]
        assert torch.allclose(la, lb, atol=1e-4, rtol=0)


def test_save_load_gives_identical_logits(tmp_path, tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from enel.model.saving import load_model, save_model

    model, tok = tiny
    enc = prompts(tok, model, ["What is this?"])
    pc = clouds(1)
    with torch.no_grad():
        ref = model(**enc, point_clouds=pc).logits
    save_model(model, tok, tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file()
    loaded, tok2 = load_model(tmp_path / "m")
    auto = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    assert type(auto) is EnelForCausalLM
    assert AutoTokenizer.from_pretrained(tmp_path / "m").convert_tokens_to_ids("<point_start>") == \
        model.config.point_start_token_id
    with torch.no_grad():
        assert torch.equal(loaded(**enc, point_clouds=pc).logits, ref)
        assert torch.equal(auto(**enc, point_clouds=pc).logits, ref)
    assert tok2("<point_patch>", add_special_tokens=False).input_ids == [model.config.point_patch_token_id]


def test_special_token_embeddings_start_at_the_mean(tiny):
    model, _ = tiny
    mean = model.model.language_model.embed_tokens.weight.mean(0)
    assert torch.allclose(model.model.point_special_embeds, mean.expand(3, -1))


def test_batch_cloud_independence_and_list_input(tiny):
    model, tok = tiny
    enc = prompts(tok, model, ["What is this?", "What is this?"])
    pcs = clouds(2)
    with torch.no_grad():
        stacked = model(**enc, point_clouds=pcs).logits
        listed = model(**enc, point_clouds=[pcs[0], pcs[1]]).logits
        single = model(**prompts(tok, model, ["What is this?"]), point_clouds=pcs[1:]).logits
    assert torch.allclose(stacked, listed, atol=1e-5)
    assert torch.allclose(stacked[1], single[0], atol=1e-5)


def test_mixed_batch_with_a_text_only_sample(tiny):
    model, tok = tiny
    texts = [
        build_prompt(tok, "What is this?", template="chat", num_point_tokens=129),
        build_prompt(tok, "Tell me a joke.", template="chat", num_point_tokens=129, with_points=False),
    ]
    enc = tokenize_prompts(tok, texts, "chat")
    pc = clouds(1)
    with torch.no_grad():
        out = model(**enc, point_clouds=[pc[0], None]).logits
        text_alone = model(**tokenize_prompts(tok, texts[1:], "chat")).logits
        via_tensor = model(**enc, point_clouds=pc).logits  # a tensor is matched to the samples with a block
    assert torch.allclose(out[1, -1], text_alone[0, -1], atol=1e-4)
    assert torch.allclose(out, via_tensor, atol=1e-5)
    model.train()
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    loss = model(**enc, point_clouds=[pc[0], None], labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    model.zero_grad()
    model.eval()


def test_splice_errors(tiny):
    model, tok = tiny
    enc = prompts(tok, model, ["What is this?"])
    with pytest.raises(SpliceError, match="no point cloud"):
        model(**enc)
    text_only = tokenize_prompts(tok, [build_prompt(tok, "hi", template="chat", num_point_tokens=129,
                                                     with_points=False)], "chat")
    with pytest.raises(SpliceError, match="but no <point> block"):
        model(**text_only, point_clouds=[clouds(1)[0]])
    with pytest.raises(SpliceError, match="1 samples contain a point block"):
        model(**enc, point_clouds=clouds(2))
    with pytest.raises(SpliceError, match="one point cloud per sample"):
        expand_point_placeholder("<point> and <point>", 129)
    two = torch.cat([enc["input_ids"], enc["input_ids"]], dim=1)
    with pytest.raises(SpliceError, match="2 point blocks"):
        model(input_ids=two, point_clouds=clouds(1))
    cut = enc["input_ids"][:, :60]
    with pytest.raises(SpliceError, match="exactly 129"):
        model(input_ids=cut, point_clouds=clouds(1))


def test_sampling_is_reproducible_with_a_seed_and_beam_search_runs(tiny):
    from enel.inference import Assistant, GenerationSettings

    model, tok = tiny
    pcs = clouds(2).numpy()
    sample = GenerationSettings(max_new_tokens=8, do_sample=True, temperature=1.5, seed=3)
    a = Assistant(model, tok, sample).ask(pcs, ["What is this?"] * 2)
    b = Assistant(model, tok, sample).ask(pcs, ["What is this?"] * 2)
    c = Assistant(model, tok, GenerationSettings(max_new_tokens=8, do_sample=True, temperature=1.5, seed=4)).ask(
        pcs, ["What is this?"] * 2)
    assert a == b and a != c
    beams = Assistant(model, tok, GenerationSettings(max_new_tokens=6, num_beams=3)).ask(pcs, ["What is this?"] * 2)
    assert len(beams) == 2


def test_streaming_matches_ask(tiny):
    from enel.inference import Assistant, GenerationSettings

    model, tok = tiny
    pc = clouds(1).numpy()
    assistant = Assistant(model, tok, GenerationSettings(max_new_tokens=12))
    streamed = "".join(assistant.stream(pc[0], "What is this?")).strip()
    assert streamed == assistant.ask(pc, ["What is this?"])[0]


def test_multi_turn_history_changes_the_prompt(tiny):
    model, tok = tiny
    one = build_prompt(tok, "and its colour?", template="chat", num_point_tokens=129,
                       history=[("What is this?", "A chair.")])
    assert one.count("<point_start>") == 1 and one.index("<point_start>") < one.index("What is this?")
    assert "A chair." in one and one.endswith("<|im_start|>assistant\n")


@pytest.mark.slow
def test_real_smollm2_generates_text_for_a_point_cloud():
    from enel.inference import Assistant, GenerationSettings

    torch.manual_seed(0)
    model, tok = EnelForCausalLM.from_backbone("smollm2", point_config="small")
    model.eval()
    pc = np.random.default_rng(0).random((1, 2048, 6)).astype(np.float32)
    out = Assistant(model, tok, GenerationSettings(max_new_tokens=12)).ask(pc, ["Caption this 3D model in detail."])
    assert isinstance(out[0], str) and len(out[0].split()) >= 2
    assert model.config.num_hidden_layers if hasattr(model.config, "num_hidden_layers") else True
    assert model.config.text_config.num_hidden_layers == 30


def test_new_point_tokens_start_at_the_word_embedding_scale(tiny):
    model, _ = tiny
    target = model.model.language_model.embed_tokens.weight.detach().pow(2).mean().sqrt()
    g = torch.Generator().manual_seed(1)  # a different batch from the one used to calibrate
    pc = torch.rand(3, 1024, 6, generator=g)
    with torch.no_grad():
        feats = model.model.point_projector(model.model.embed_points(pc).features)
    rms = feats.pow(2).mean().sqrt()
    assert 0.5 < float(rms / target) < 2.0


def test_match_token_scale_off_leaves_the_projector_as_initialised():
    on, _ = EnelForCausalLM.from_backbone("tiny-llama", point_config={"preset": "small"}, seed=0)
    off, _ = EnelForCausalLM.from_backbone("tiny-llama", point_config={"preset": "small", "match_token_scale": False},
                                           seed=0)
    assert off.config.point.match_token_scale is False and on.config.point.match_token_scale is True
    last_on, last_off = on.model.point_projector.net[-1], off.model.point_projector.net[-1]
    ratio = float(last_on.weight.detach().norm() / last_off.weight.detach().norm())
    assert abs(ratio - 1.0) > 0.1  # on tiny-llama the switch changes the scale
    torch.testing.assert_close(last_on.weight.detach(), last_off.weight.detach() * ratio, rtol=1e-5, atol=1e-7)
    assert 0.015 < float(last_off.weight.detach().std()) < 0.025  # the plain N(0, 0.02) init, not rescaled
    on_state, off_state = on.state_dict(), off.state_dict()
    changed = [k for k in on_state if not torch.equal(on_state[k], off_state[k])]
    assert set(changed) <= {"model.point_projector.net.4.weight", "model.point_projector.net.4.bias"}, changed


def test_training_loss_on_labelled_positions_equals_full_cross_entropy(tiny):
    from enel.data.collate import EnelCollator
    from enel.data.conversation import encode_conversation

    model, tok = tiny
    conv = [{"from": "human", "value": "<point>\nWhat is this?"}, {"from": "gpt", "value": "A red chair."}]
    enc = encode_conversation(tok, conv, template="chat", num_point_tokens=129)
    batch = EnelCollator.from_tokenizer(tok, return_extras=False)(
        [{"input_ids": torch.tensor(enc.input_ids), "labels": torch.tensor(enc.labels),
          "point_cloud": clouds(1)[0], "object_id": "a"}] * 2)
    model.train()  # both in training mode (BatchNorm uses batch statistics there)
    try:
        with torch.no_grad():
            full = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
            out = model(**batch)
    finally:
        model.eval()
    reference = torch.nn.functional.cross_entropy(full[:, :-1].reshape(-1, full.shape[-1]),
                                                  batch["labels"][:, 1:].reshape(-1), ignore_index=-100)
    assert out.logits is None
    assert torch.allclose(out.loss, reference, atol=1e-5)


def test_point_token_spread_against_hand_values():
    from enel.model.modeling_enel import point_token_spread

    x = torch.randn(1, 5, 4)
    assert point_token_spread(x) is None  # one cloud: nothing to compare
    assert float(point_token_spread(x.expand(3, 5, 4))) == pytest.approx(0.0, abs=1e-7)  # identical clouds
    assert float(point_token_spread(torch.cat([x, -x]))) == pytest.approx(1.0)  # mean 0: all energy differs
    # tokens [1, 1] and [3, 3] (one slot, one channel pair): mean [2, 2], deviations ±1 → 4 / (2 + 18)
    pair = torch.tensor([[[1.0, 1.0]], [[3.0, 3.0]]])
    assert float(point_token_spread(pair)) == pytest.approx(4 / 20)


def test_training_forward_reports_point_spread_outside_the_loss(tiny):
    from enel.data.collate import EnelCollator
    from enel.data.conversation import encode_conversation

    model, tok = tiny
    conv = [{"from": "human", "value": "<point>\nWhat is this?"}, {"from": "gpt", "value": "A red chair."}]
    enc = encode_conversation(tok, conv, template="chat", num_point_tokens=129)
    items = [{"input_ids": torch.tensor(enc.input_ids), "labels": torch.tensor(enc.labels), "point_cloud": c,
              "object_id": str(i)} for i, c in enumerate(clouds(2))]
    batch = EnelCollator.from_tokenizer(tok, return_extras=False)(items)
    model.train()
    try:
        with torch.no_grad():
            out = model(**batch)
            feats = model.model.point_projector(model.model.embed_points(batch["point_clouds"]).features)
    finally:
        model.eval()
    geo = feats[:, 1:].float()
    expected = (geo - geo.mean(0)).pow(2).sum() / geo.pow(2).sum()
    assert set(out.diagnostics) == {"point_spread"} and "point_spread" not in out.loss_terms
    assert float(out.diagnostics["point_spread"]) == pytest.approx(float(expected), rel=1e-4)
    with torch.no_grad():
        assert model(**batch).diagnostics is None  # evaluation mode: no diagnostics


def test_point_reliance_is_the_loss_gap_of_swapped_clouds(tiny):
    """The trainer's ``point_reliance``: CE with the clouds rolled along the batch minus CE with the right ones,
    0 for identical clouds, and free of side effects on the RNG."""
    from enel.data.collate import EnelCollator
    from enel.data.conversation import encode_conversation
    from enel.train.trainer import point_reliance

    model, tok = tiny
    convs = [[{"from": "human", "value": "<point>\nWhat is this?"}, {"from": "gpt", "value": a}]
             for a in ("A red chair.", "A tall blue lamp.", "A green mug.")]
    items = []
    for i, (conv, c) in enumerate(zip(convs, clouds(3, seed=4))):
        enc = encode_conversation(tok, conv, template="chat", num_point_tokens=129)
        items.append({"input_ids": torch.tensor(enc.input_ids), "labels": torch.tensor(enc.labels), "point_cloud": c,
                      "object_id": str(i)})
    batch = EnelCollator.from_tokenizer(tok, return_extras=False)(items)
    with torch.no_grad():
        real = model(**batch)
        rolled = model(**{**batch, "point_clouds": batch["point_clouds"][[2, 0, 1]]})  # sample b gets cloud b-1
        torch.manual_seed(11)
        gap = point_reliance(model, batch, real)
        after = torch.rand(3)
        torch.manual_seed(11)
        assert torch.equal(after, torch.rand(3)), "the extra forward must not move the RNG"
        assert gap == pytest.approx(float(rolled.loss - real.loss), abs=1e-5)
        same = {**batch, "point_clouds": batch["point_clouds"][[0, 0, 0]]}
        assert point_reliance(model, same, model(**same)) == pytest.approx(0.0, abs=1e-6)
        one = {k: v[:1] for k, v in batch.items()}
        assert point_reliance(model, one, model(**one)) is None  # one cloud: nothing to swap
        assert point_reliance(model, {k: v for k, v in batch.items() if k != "labels"}, real) is None


def test_color_skip_after_the_projector_starts_at_its_documented_scale_and_survives_a_save(tmp_path):
    COLOR_SKIP_LLM_STD = PointEmbeddingConfig().color_skip_std
    torch.manual_seed(0)
    model, tok = EnelForCausalLM.from_backbone("tiny-llama", point_config={"preset": "small", "color_skip": True})
    color = model.model.point_projector.color.requires_grad_(False)
    assert 0.8 * COLOR_SKIP_LLM_STD < float(color.weight.std()) < 1.2 * COLOR_SKIP_LLM_STD  # not the N(0, 0.02)
    assert float(color.bias.abs().max()) == 0.0
    model.save_pretrained(tmp_path)
    again = EnelForCausalLM.from_pretrained(tmp_path)
    torch.testing.assert_close(again.model.point_projector.color.weight, color.weight)
    assert again.config.point.color_skip



@pytest.mark.parametrize("use_reentrant", [False, True])
@pytest.mark.parametrize("setting", ["stage1-pe", "stage2-grid"])
def test_gradient_checkpointing_gives_the_same_gradients(setting, use_reentrant):
    """The 7B recipes train with gradient checkpointing: the decoder loop (per-layer positional encoding, the
    aggregation between layers) must give the gradients it gives without it, every parameter, in training mode."""
    from enel.data.collate import EnelCollator
    from enel.data.conversation import encode_conversation

    kw = ({"objective_config": {"name": "hybrid", "per_layer_pe": True}} if setting == "stage1-pe" else
          {"aggregation_config": {"enabled": True, "schedule": [{"aggregate_after": [1], "propagate_after": [3]}],
                                  "reference_layers": 4, "attn_dim": 32, "attn_heads": 2, "grid_alpha": 0.25,
                                  "grid_min": 0.25, "grid_max": 0.25}})
    model, tok = make(**kw)
    if setting == "stage2-grid":
        with torch.no_grad():
            for attn in model.model.aggregation.attn:
                attn.gate.fill_(0.5)  # open: the in-group attention takes part in the gradient
    conv = [{"from": "human", "value": "<point>\nWhat is this?"}, {"from": "gpt", "value": "A red chair."}]
    enc = encode_conversation(tok, conv, template="chat", num_point_tokens=129)
    batch = EnelCollator.from_tokenizer(tok, return_extras=False)(
        [{"input_ids": torch.tensor(enc.input_ids), "labels": torch.tensor(enc.labels), "point_cloud": c,
          "object_id": str(i)} for i, c in enumerate(clouds(2, seed=5))])

    def grads():
        model.zero_grad(set_to_none=True)
        loss = model(**batch, point_generator=torch.Generator().manual_seed(0)).loss
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.train()
    try:
        plain = grads()
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": use_reentrant})
        assert all(layer.gradient_checkpointing for layer in model.model.language_model.layers)
        checkpointed = grads()
    finally:
        model.activation_checkpointing_disable()
        model.zero_grad(set_to_none=True)
        model.eval()
    assert any(n.startswith("model.point_embedding.") for n in plain)  # gradients reach the point embedding
    assert plain.keys() == checkpointed.keys()
    for name, g in plain.items():
        torch.testing.assert_close(checkpointed[name], g, atol=1e-6, rtol=1e-5, msg=name)
