"""Stage 2, hierarchical geometry aggregation (enel-method.md §3, docs/aggregation.md), on tiny random Llamas.

What is proved here:

* with one token per group and the gate at 0, aggregation then propagation is the identity (grid and FPS);
* with the gate at 0 an aggregated token is exactly the pooling of its members (max, mean, maxmean), the
  sequence really is shorter between aggregation and propagation, text tokens keep their positions, empty slots
  of a sample with fewer cells are masked, and propagation copies each group back to its members (one cell,
  several cells per sample with different counts in one batch, 128 cells);
* KV-cached greedy generation equals uncached generation with aggregation on (grid, FPS, l = 2 and 3, two
  blocks); a padded batch (with a text-only sample) equals its samples run one by one;
* schedules: the paper's 32-layer schedule mapped onto 30 layers, refusal of colliding mappings and of
  schedules that do not close;
* stage-2 settings: loading from a stage-1 folder, gradients to the gate and then to the attention weights,
  bf16 autocast.
"""

import math
import os
from contextlib import contextmanager

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from enel.data.conversation import build_prompt, tokenize_prompts  # noqa: E402
from enel.errors import ConfigError  # noqa: E402
from enel.model.aggregation import (  # noqa: E402
    GatedGroupAttention,
    HierarchicalAggregation,
    _pool,
    _pool_segments,
    coarsest_layers,
    resolve_schedule,
)
from enel.model.backbones import tiny_backbone_config, tiny_tokenizer  # noqa: E402
from enel.model.configuration_enel import AggregationConfig  # noqa: E402
from enel.model.modeling_enel import EnelForCausalLM  # noqa: E402

N_POINTS = 512  # the smallest cloud the "small" embedding takes without cycling points
ONE_BLOCK = [{"aggregate_after": [1], "propagate_after": [3]}]
SINGLETON_GRID = {"grid_alpha": 1e-4, "grid_min": 1e-4, "grid_max": 1e-4}
QUESTIONS = ["What is this?", "Describe this object in a few words, please."]


# ---- helpers ----------------------------------------------------------------------------------------------
def agg_config(reference_layers=4, schedule=ONE_BLOCK, **kw) -> dict:
    return {"enabled": True, "schedule": schedule, "reference_layers": reference_layers, **kw}


def build(aggregation=None, backbone="tiny-llama", like=None, gate=None):
    """An eval-mode model; ``like``: copy the shared weights of that model; ``gate``: set every gate α."""
    model, tok = EnelForCausalLM.from_backbone(backbone, point_config="small", aggregation_config=aggregation)
    if like is not None:
        result = model.load_state_dict(like.state_dict(), strict=False)
        assert not result.unexpected_keys
        assert all(k.startswith("model.aggregation.") for k in result.missing_keys)
    if gate is not None:
        with torch.no_grad():
            for attn in model.model.aggregation.attn:
                attn.gate.fill_(gate)
    return model.eval(), tok


def make_clouds(scales, seed=0, n=N_POINTS) -> torch.Tensor:
    """``(len(scales), n, 6)``: xyz uniform in ``[0, scale)³`` (non-negative, so a large cell holds them all)."""
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(len(scales), n, 6, generator=g)
    c[..., :3] *= torch.tensor(scales, dtype=torch.float32)[:, None, None]
    return c


def encode(tok, model, questions, with_points=None):
    with_points = with_points or [True] * len(questions)
    prompts = [build_prompt(tok, q, template="chat", num_point_tokens=model.config.num_point_tokens, with_points=w)
               for q, w in zip(questions, with_points)]
    return dict(tokenize_prompts(tok, prompts, "chat"))


def logits(model, enc, clouds):
    with torch.no_grad():
        return model(**enc, point_clouds=clouds).logits


@contextmanager
def record_layers(model):
    """Inputs (hidden, position ids, additive mask) and outputs of every decoder layer, in call order."""
    rec = {"inputs": [], "positions": [], "masks": [], "outputs": []}

    def pre(module, args, kwargs):
        rec["inputs"].append(args[0].detach().clone())
        rec["positions"].append(kwargs["position_ids"].clone())
        rec["masks"].append(kwargs["attention_mask"].clone())

    def post(module, args, kwargs, out):
        rec["outputs"].append((out[0] if isinstance(out, tuple) else out).detach().clone())

    layers = model.model.language_model.layers
    handles = [m.register_forward_pre_hook(pre, with_kwargs=True) for m in layers]
    handles += [m.register_forward_hook(post, with_kwargs=True) for m in layers]
    try:
        yield rec
    finally:
        for h in handles:
            h.remove()


def count_attention_calls(model) -> list[int]:
    calls = [0]

    def hook(module, args):
        calls[0] += 1

    for m in model.modules():
        if isinstance(m, GatedGroupAttention):
            m.qkv.register_forward_pre_hook(hook)  # both paths (padded groups, disjoint cells) project q/k/v once
    return calls


def grid_cells(centres: torch.Tensor, size: float) -> list[list[int]]:
    """Reference grouping of one sample's ``(P, 3)`` centres: member lists, cells in order of first member."""
    cells: dict[tuple, list[int]] = {}
    for i, c in enumerate(centres.double().tolist()):
        cells.setdefault(tuple(math.floor(x / size) for x in c), []).append(i)
    return list(cells.values())


def generate(model, enc, clouds, use_cache, n=3):
    return model.generate(**enc, point_clouds=clouds, max_new_tokens=n, do_sample=False, use_cache=use_cache,
                          output_scores=True, return_dict_in_generate=True, pad_token_id=0)


def assert_cached_equals_uncached(model, enc, clouds, n=3):
    cached = generate(model, enc, clouds, True, n)
    plain = generate(model, enc, clouds, False, n)
    assert torch.equal(cached.sequences, plain.sequences)
    for a, b in zip(cached.scores, plain.scores):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module", autouse=True)
def memoised_point_embedding():
    """Reuse the point tokens of a cloud already embedded by an identical embedding in eval mode.

    Only for speed (uncached generation re-embeds the clouds at every step): the embedding is deterministic in
    eval mode and has its own tests; the key holds the cloud's bytes and a fingerprint of the embedding's weights.
    In training mode, or with gradients on, the embedding always runs.
    """
    from enel.model.modeling_enel import EnelModel

    original = EnelModel.embed_points
    cache: dict = {}

    def embed_points(self, clouds, generator=None):
        if self.training or torch.is_grad_enabled() or not isinstance(clouds, torch.Tensor):
            return original(self, clouds, generator=generator)
        with torch.no_grad():
            weights = tuple(round(float(p.double().sum()), 9) for p in self.point_embedding.parameters())
            weights += tuple(round(float(b.double().sum()), 9) for b in self.point_embedding.buffers())
        key = (weights, tuple(clouds.shape), clouds.numpy().tobytes())
        if key not in cache:
            cache[key] = original(self, clouds, generator=generator)
        return cache[key]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(EnelModel, "embed_points", embed_points)
        yield


@pytest.fixture(scope="module")
def base():
    return build()


@pytest.fixture(scope="module")
def tiny8(tmp_path_factory):
    """A local folder with an 8-layer tiny random Llama (room for nested and two-block schedules)."""
    folder = tmp_path_factory.mktemp("tiny8")
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(tiny_backbone_config("tiny-llama", num_hidden_layers=8)).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return str(folder)


# ---- configuration and schedule ----------------------------------------------------------------------------
def test_grid_cell_sizes_follow_the_paper_formula():
    cfg = AggregationConfig(enabled=True, grid_theta=[0.3, -1.2, 2.0])
    a, lo, hi, levels = 0.02, math.log(0.02 / 0.02), math.log(1.0 / 0.02), 3
    gamma, centre = (hi - lo) / (2 * levels), (hi + lo) / (2 * levels)
    expected, total = [], 0.0
    for theta in (0.3, -1.2, 2.0):
        total += gamma * math.tanh(theta) + centre
        expected.append(a * math.exp(total))
    assert cfg.cell_sizes() == pytest.approx(expected)
    assert gamma == pytest.approx(math.log(50) / 6)  # ≈ 0.652, enel-method.md §3.2
    # clamped to [s_min, s_max] (an α above s_max overshoots at the first levels)
    clamped = AggregationConfig(enabled=True, grid_alpha=1.0, grid_min=0.1, grid_max=0.6, grid_theta=[3, 3, 3])
    assert clamped.cell_sizes() == [0.6, 0.6, pytest.approx(0.6, abs=5e-3)]
    # default θ_j = 1: the paper's ~1/8 reduction on unit-sphere objects (cells ≈ 0.063, 0.199, 0.627)
    assert AggregationConfig(enabled=True).cell_sizes() == pytest.approx([0.0629, 0.1985, 0.6266], abs=1e-3)
    # θ drawn from N(0, 1) with a recorded seed: reproducible, and another seed gives other sizes
    drawn = AggregationConfig(enabled=True, grid_theta_seed=0).cell_sizes()
    assert drawn == AggregationConfig(enabled=True, grid_theta_seed=0).cell_sizes()
    assert drawn != AggregationConfig(enabled=True, grid_theta_seed=1).cell_sizes()


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"grouping": "kmeans"}, "grouping must be 'grid' or 'fps'"),
        ({"pooling": "sum"}, "pooling must be"),
        ({"attn_dim": 30, "attn_heads": 4}, "not divisible"),
        ({"grid_min": 0.5, "grid_max": 0.1}, "grid_min <= grid_max"),
        ({"grouping": "fps", "fps_centres": [64, 32], "fps_k": [8]}, "one entry per aggregation level"),
        ({"grouping": "fps", "fps_centres": [32, 64, 16], "fps_k": [8, 8, 8]}, "shrink level by level"),
        ({"grouping": "fps", "fps_centres": [64], "fps_k": [8]}, "has only 1 levels"),
        ({"grid_theta": [0.1]}, "grid_theta needs 3 values"),
        ({"colour": 1}, "unknown aggregation field"),
        ({"residual": "skip"}, "residual must be one of"),
    ],
)
def test_bad_settings_are_refused(fields, message):
    with pytest.raises(ConfigError, match=message):
        AggregationConfig.from_dict({"enabled": True, **fields})


def test_paper_schedule_maps_onto_30_layers():
    """The default is the paper's two blocks with H = 2 layers on the coarsest sequence (events at the end of
    their layers); the old reading (propagate after 6-8 / 16-18, H = 3) is what smollm2_stage2 pins."""
    cfg = AggregationConfig(enabled=True)
    same = resolve_schedule(cfg, 32)
    assert [(layer + 1, kind) for layer, kind, _, _ in same] == [
        (1, "aggregate"), (2, "aggregate"), (3, "aggregate"), (5, "propagate"), (6, "propagate"), (7, "propagate"),
        (11, "aggregate"), (12, "aggregate"), (13, "aggregate"), (15, "propagate"), (16, "propagate"),
        (17, "propagate"),
    ]
    assert coarsest_layers(cfg, 32) == [[4, 5], [14, 15]]  # H = 2 per block
    # round_half_up(l · 30 / 32): 1 2 3 | 5 6 7 | 10 11 12 | 14 15 16
    mapped = resolve_schedule(cfg, 30)
    assert [layer + 1 for layer, _, _, _ in mapped] == [1, 2, 3, 5, 6, 7, 10, 11, 12, 14, 15, 16]
    assert coarsest_layers(cfg, 30) == [[4, 5], [13, 14]]  # H = 2 survives the mapping
    # levels: aggregations build the stack 0, 1, 2; propagations undo it 2, 1, 0; blocks 0 then 1
    assert [(b, lvl) for _, _, b, lvl in mapped[:6]] == [(0, 0), (0, 1), (0, 2), (0, 2), (0, 1), (0, 0)]
    assert {b for _, _, b, _ in mapped[6:]} == {1}
    agg = HierarchicalAggregation(cfg, hidden=16, num_layers=30)
    assert agg.event_after(0) == ("aggregate", 0, 0) and agg.event_after(15) == ("propagate", 1, 0)
    assert agg.event_after(3) is None and len(agg.attn) == 6


def test_the_default_recipe_pins_the_schedule_it_was_measured_with():
    """smollm2_stage2 keeps the schedule of its measurements (H = 3), so the quickstart does not change."""
    from enel.train.recipe import load_recipe

    cfg = AggregationConfig.from_dict(load_recipe("smollm2_stage2").aggregation)
    assert [layer + 1 for layer, _, _, _ in resolve_schedule(cfg, 30)] == [1, 2, 3, 6, 7, 8, 10, 11, 12, 15, 16, 17]
    assert coarsest_layers(cfg, 30) == [[4, 5, 6], [13, 14, 15]]


def test_colliding_mapping_is_refused_with_a_hint():
    with pytest.raises(ConfigError, match=r"two events after the same layer.*reference_layers=4"):
        resolve_schedule(AggregationConfig(enabled=True), 4)
    with pytest.raises(ConfigError, match="two events after the same layer"):
        EnelForCausalLM.from_backbone("tiny-llama", point_config="small", aggregation_config={"enabled": True})


@pytest.mark.parametrize(
    "schedule, message",
    [
        ([{"aggregate_after": [1, 2], "propagate_after": [3]}], "does not close: every aggregation needs one"),
        ([{"aggregate_after": [1], "propagate_after": [4]}], r"does not close.*before the last layer \(4\)"),
        ([{"aggregate_after": [2], "propagate_after": [1]}], "does not close: the propagation after layer 1"),
        ([{"aggregate_after": [1, 2], "propagate_after": [3, 2]}], "two events after the same layer"),
        ([{"aggregate_after": [1]}], "does not close"),
        ([{"aggregate_after": [1], "propagate_after": [3]}, {"aggregate_after": [2], "propagate_after": [3]}],
         "two events after the same layer"),
        ([{"aggregate_after": [0], "propagate_after": [2]}], "before layer 1"),
        ([{"aggregate_after": [1], "propagate_after": [2], "keep": True}], "use 'aggregate_after'"),
    ],
)
def test_schedule_that_does_not_close_is_refused(schedule, message):
    with pytest.raises(ConfigError, match=message):
        cfg = AggregationConfig.from_dict(agg_config(schedule=schedule))
        resolve_schedule(cfg, 4)


def test_interleaved_blocks_and_unordered_levels_are_refused():
    schedule = [{"aggregate_after": [1], "propagate_after": [4]}, {"aggregate_after": [2], "propagate_after": [3]}]
    with pytest.raises(ConfigError, match="block 1 starts before block 0 is propagated"):
        resolve_schedule(AggregationConfig.from_dict(agg_config(8, schedule)), 8)
    with pytest.raises(ConfigError, match="propagations must undo aggregations in reverse order"):
        resolve_schedule(AggregationConfig.from_dict(agg_config(8, [{"aggregate_after": [1, 2],
                                                                      "propagate_after": [6, 5]}])), 8)
    with pytest.raises(ConfigError, match="out of order"):
        resolve_schedule(AggregationConfig.from_dict(agg_config(8, [{"aggregate_after": [2, 1],
                                                                      "propagate_after": [4, 5]}])), 8)


# ---- the gated attention and the pooling -------------------------------------------------------------------
def test_gated_attention_equals_a_per_slot_reference_and_ignores_padding():
    torch.manual_seed(0)
    attn = GatedGroupAttention(hidden=8, attn_dim=12, heads=3, gate=True)
    with torch.no_grad():
        attn.gate.fill_(0.7)
        attn.norm.weight.uniform_(0.5, 1.5)
    tokens = torch.randn(2, 5, 8)
    members = torch.tensor([[[0, 1, 2], [3, 4, -1]], [[4, -1, -1], [0, 2, 3]]])
    valid = members >= 0
    out = attn(tokens, members, valid)
    # reference: every real member slot projected separately, softmax over the real members only
    for b in range(2):
        for g in range(2):
            idx = members[b, g][valid[b, g]]
            f = tokens[b, idx]
            q, k, v = attn.qkv(attn.norm(f)).chunk(3, -1)
            heads = [torch.softmax(qh @ kh.T / math.sqrt(4), -1) @ vh
                     for qh, kh, vh in zip(q.split(4, -1), k.split(4, -1), v.split(4, -1))]
            ref = f + math.tanh(0.7) * attn.out(torch.cat(heads, -1))
            torch.testing.assert_close(out[b, g][valid[b, g]], ref, atol=1e-5, rtol=1e-5)
    # more padding slots change nothing for the real ones
    wide = torch.cat([members, torch.full((2, 2, 4), -1)], -1)
    torch.testing.assert_close(attn(tokens, wide, wide >= 0)[..., :3, :][valid], out[valid])
    # a closed gate is the identity, bit for bit
    with torch.no_grad():
        attn.gate.zero_()
    assert torch.equal(attn(tokens, members, valid)[valid], tokens[torch.arange(2)[:, None, None], members][valid])


@pytest.mark.parametrize("how", ["max", "mean", "maxmean"])
def test_disjoint_groups_per_token_equal_the_padded_groups(how):
    """The grid path (per token, "same cell" mask, segment pooling) equals the padded path, values and gradients."""
    torch.manual_seed(1)
    attn = GatedGroupAttention(hidden=8, attn_dim=12, heads=3, gate=True)
    with torch.no_grad():
        attn.gate.fill_(0.7)
    group_of = torch.tensor([[0, 1, 0, 2, 1, 0, -1], [1, 1, 0, 1, -1, -1, -1]])  # sample 1: group 2 is empty
    n_groups = 3
    members = torch.full((2, n_groups, 3), -1)
    for b in range(2):
        for g in range(n_groups):
            idx = (group_of[b] == g).nonzero().flatten()
            members[b, g, : len(idx)] = idx
    valid = members >= 0
    tokens = torch.randn(2, 7, 8, requires_grad=True)
    padded = _pool(attn(tokens, members, valid).reshape(6, 3, 8), valid.reshape(6, 3), how).reshape(2, 3, 8)
    per_token = _pool_segments(attn.forward_partition(tokens, group_of), group_of, n_groups, how)
    torch.testing.assert_close(per_token, padded, atol=1e-6, rtol=1e-6)
    assert torch.equal(per_token[1, 2], torch.zeros(8))  # an empty group pools to 0
    weights = torch.randn(2, 3, 8)
    g_padded, = torch.autograd.grad((padded * weights).sum(), tokens)
    g_token, = torch.autograd.grad((per_token * weights).sum(), tokens)
    torch.testing.assert_close(g_token, g_padded, atol=1e-6, rtol=1e-6)


def test_pooling_uses_real_members_only():
    groups = torch.tensor([[[1.0, -2.0], [3.0, 0.0], [100.0, 100.0]]])
    valid = torch.tensor([[True, True, False]])
    assert _pool(groups, valid, "max").tolist() == [[3.0, 0.0]]
    assert _pool(groups, valid, "mean").tolist() == [[2.0, -1.0]]
    assert _pool(groups, valid, "maxmean").tolist() == [[2.5, -0.5]]
    single = torch.tensor([[[1.5, -0.5]]])
    for how in ("max", "mean", "maxmean"):  # a group of one token pools to itself
        assert torch.equal(_pool(single, torch.tensor([[True]]), how), single[:, 0])


# ---- the model with aggregation ----------------------------------------------------------------------------
@pytest.mark.parametrize("grouping", ["grid", "fps"])
def test_singleton_groups_with_closed_gate_are_the_identity(base, grouping):
    model0, tok = base
    extra = SINGLETON_GRID if grouping == "grid" else {"grouping": "fps", "fps_centres": [128], "fps_k": [1]}
    model, _ = build(agg_config(**extra), like=model0)
    assert all(float(a.gate.detach()) == 0.0 for a in model.model.aggregation.attn)
    calls = count_attention_calls(model)
    enc = encode(tok, model, QUESTIONS)
    clouds = make_clouds([1.0, 0.5])
    with record_layers(model) as rec:
        got = logits(model, enc, clouds)
    assert calls[0] == 1  # the aggregation did run
    assert [x.shape[1] for x in rec["inputs"]] == [enc["input_ids"].shape[1]] * 4  # 128 groups of one
    real = enc["attention_mask"].bool()
    torch.testing.assert_close(got[real], logits(model0, enc, clouds)[real], atol=1e-5, rtol=1e-5)


def _pooled_reference(fine_block: torch.Tensor, members: list[int], how: str) -> torch.Tensor:
    x = fine_block[members]
    mx, mean = x.max(0).values, x.mean(0)
    return {"max": mx, "mean": mean, "maxmean": 0.5 * (mx + mean)}[how]


@pytest.mark.parametrize(
    "size, pooling",
    [(10.0, "maxmean"), (0.25, "max"), (0.25, "mean"), (0.25, "maxmean"), (1e-4, "maxmean")],
    ids=["one-cell", "cells-max", "cells-mean", "cells-maxmean", "128-cells"],
)
def test_closed_gate_aggregated_token_is_the_pooling_of_its_members(base, size, pooling):
    """One cell, several cells (a compact and a spread cloud: different counts in one batch), 128 cells."""
    model0, tok = base
    model, _ = build(agg_config(grid_alpha=size, grid_min=size, grid_max=size, pooling=pooling), like=model0)
    enc = encode(tok, model, QUESTIONS)
    clouds = make_clouds([0.3, 1.0])
    with torch.no_grad():
        centres = model.model.embed_points(clouds).centres  # the coordinates the aggregation groups by
    with record_layers(model) as rec:
        out = logits(model, enc, clouds)
    assert torch.isfinite(out).all()
    cells = [grid_cells(centres[b], size) for b in range(2)]
    n_cells = [len(c) for c in cells]
    if size == 10.0:
        assert n_cells == [1, 1]
    elif size == 1e-4:
        assert n_cells == [128, 128]
    else:
        assert 1 < n_cells[0] < n_cells[1] < 128  # samples with different numbers of cells share a batch
    length = enc["input_ids"].shape[1]
    coarse_len = length - 128 + max(n_cells)
    # the sequence really is shorter between aggregation (after layer 1) and propagation (after layer 3)
    assert [x.shape[1] for x in rec["inputs"]] == [length, coarse_len, coarse_len, length]

    fine, coarse, coarse_out = rec["outputs"][0], rec["inputs"][1], rec["outputs"][2]
    fine_pos, coarse_pos = rec["positions"][0], rec["positions"][1]
    mask = rec["masks"][1]
    starts = (enc["input_ids"] == model.config.point_start_token_id).int().argmax(1)
    for b in range(2):
        s = int(starts[b]) + 2  # first geometric token (after <point_start> and the class token)
        fine_block = fine[b, s : s + 128]
        for j, members in enumerate(cells[b]):
            expected = _pooled_reference(fine_block, members, pooling)
            torch.testing.assert_close(coarse[b, s + j], expected, atol=1e-5, rtol=1e-5)
            assert int(coarse_pos[b, s + j]) == int(fine_pos[b, s + members[0]])  # the smallest member position
        # empty slots of the sample with fewer cells are masked out as keys for every query
        for j in range(n_cells[b], max(n_cells)):
            assert bool((mask[b, 0, :, s + j] == torch.finfo(mask.dtype).min).all())
        # text before and after the block: same states, same positions
        assert torch.equal(coarse[b, :s], fine[b, :s])
        assert torch.equal(coarse_pos[b, :s], fine_pos[b, :s])
        g = max(n_cells)
        assert torch.equal(coarse[b, s + g :], fine[b, s + 128 :])
        assert torch.equal(coarse_pos[b, s + g :], fine_pos[b, s + 128 :])
        # propagation (after layer 3) copies each group's state back to all of its members
        regrown = rec["inputs"][3]
        for j, members in enumerate(cells[b]):
            for m in members:
                assert torch.equal(regrown[b, s + m], coarse_out[b, s + j])
        assert torch.equal(regrown[b, s + 128 :], coarse_out[b, s + g :])



def test_the_removed_boolean_residual_loads_when_off_and_is_refused_with_the_fix_when_on():
    assert AggregationConfig.from_dict({"residual": False}).residual == "none"
    assert AggregationConfig.from_dict({}).residual == "none"
    with pytest.raises(ConfigError, match='residual=true .* write residual: "add"'):
        AggregationConfig.from_dict({"residual": True})


@pytest.mark.parametrize("residual", ["add", "detail"])
def test_propagation_residuals(base, residual):
    """add: the copied-back group state plus the member's pre-aggregation state; detail: plus the member's
    difference from its group's pooled state (computed here by hand from the recorded layer outputs)."""
    model0, tok = base
    size = 0.25
    model, _ = build(agg_config(grid_alpha=size, grid_min=size, grid_max=size, residual=residual), like=model0)
    enc = encode(tok, model, QUESTIONS)
    clouds = make_clouds([0.3, 1.0])
    with torch.no_grad():
        centres = model.model.embed_points(clouds).centres
    with record_layers(model) as rec:
        logits(model, enc, clouds)
    fine, coarse_out, regrown = rec["outputs"][0], rec["outputs"][2], rec["inputs"][3]
    starts = (enc["input_ids"] == model.config.point_start_token_id).int().argmax(1)
    merged = 0
    for b in range(2):
        s = int(starts[b]) + 2
        fine_block = fine[b, s : s + 128]
        for j, members in enumerate(grid_cells(centres[b], size)):
            pooled = _pooled_reference(fine_block, members, "maxmean")
            merged += len(members) > 1
            for m in members:
                skip = fine_block[m] - pooled if residual == "detail" else fine_block[m]
                torch.testing.assert_close(regrown[b, s + m], coarse_out[b, s + j] + skip, atol=1e-5, rtol=1e-5)
    assert merged > 0  # some cells hold several tokens, so the two skips differ from each other and from none

@pytest.mark.parametrize("grouping, residual", [("grid", "detail"), ("grid", None), ("fps", None)],
                         ids=["grid-detail", "grid-default", "fps"])
def test_kv_cached_generation_equals_uncached(base, grouping, residual):
    """Grid with the detail skip, grid with the library default (``residual: none``), FPS."""
    model0, tok = base
    extra = ({"grid_alpha": 0.25, "grid_min": 0.25, "grid_max": 0.25} if grouping == "grid"
             else {"grouping": "fps", "fps_centres": [32], "fps_k": [8]})
    if residual is not None:
        extra["residual"] = residual
    model, _ = build(agg_config(**extra), like=model0, gate=0.5)
    assert model.config.aggregation.residual == (residual or "none")
    enc = encode(tok, model, QUESTIONS)
    assert_cached_equals_uncached(model, enc, make_clouds([0.3, 1.0]))


def test_beam_search_with_the_cache_equals_beam_search_without_it(base):
    """``generate`` makes an EnelCache; beam search (3 beams, two clouds with different cell counts) finds the
    same beams and scores with it as by recomputing the whole sequence at every step."""
    from enel.model.layout import EnelCache

    model0, tok = base
    model, _ = build(agg_config(grid_alpha=0.25, grid_min=0.25, grid_max=0.25), like=model0, gate=0.5)
    enc = encode(tok, model, QUESTIONS)
    kw = dict(point_clouds=make_clouds([0.3, 1.0]), max_new_tokens=4, do_sample=False, num_beams=3,
              num_return_sequences=2, output_scores=True, return_dict_in_generate=True, pad_token_id=0)
    cached = model.generate(**enc, use_cache=True, **kw)
    plain = model.generate(**enc, use_cache=False, **kw)
    assert isinstance(cached.cache, EnelCache) and cached.cache.key_masks is not None
    assert torch.equal(cached.sequences, plain.sequences)
    torch.testing.assert_close(cached.sequences_scores, plain.sequences_scores, atol=1e-4, rtol=1e-4)


def test_reordering_the_cache_permutes_the_prompt_masks(base):
    """A cache reordered like beam search's ``reorder_cache`` continues as if the prompts had come in that order:
    every layer's prompt mask moves with its keys (the two clouds' aggregated layers mask different slots)."""
    from enel.model.layout import EnelCache

    model0, tok = base
    model, _ = build(agg_config(grid_alpha=0.25, grid_min=0.25, grid_max=0.25), like=model0, gate=0.5)
    clouds = make_clouds([0.3, 1.0])
    swap = torch.tensor([1, 0])

    def prompt_then_step(questions, cl, reorder=None):
        enc = encode(tok, model, questions)
        with torch.no_grad():
            out = model(**enc, point_clouds=cl, use_cache=True)
            cache = out.cache
            before = [m.clone() for m in cache.key_masks.masks]
            if reorder is not None:
                cache.reorder_cache(reorder)
            mask = enc["attention_mask"][reorder if reorder is not None else slice(None)]
            nxt = torch.tensor([[5], [7]])
            step = model(input_ids=nxt, attention_mask=torch.cat([mask, torch.ones_like(nxt)], 1), cache=cache,
                         use_cache=True)
        return cache, before, step.logits

    cache, before, reordered = prompt_then_step(QUESTIONS, clouds, reorder=swap)
    assert isinstance(cache, EnelCache)
    coarse = before[1]
    assert not torch.equal(coarse[0], coarse[1]), "the clouds must differ in their aggregated layers' masks"
    _, swapped_before, direct = prompt_then_step(QUESTIONS[::-1], clouds[swap])
    for layer, mask in enumerate(before):
        assert torch.equal(cache.key_masks.masks[layer][:, : mask.shape[1]], mask[swap])
        assert torch.equal(mask[swap], swapped_before[layer])
    torch.testing.assert_close(reordered, direct, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("grouping", ["grid", "fps"])
def test_padded_batch_equals_samples_one_by_one(base, grouping):
    """Left padding, clouds with different cell counts, and a text-only sample in the same batch."""
    model0, tok = base
    extra = ({"grid_alpha": 0.25, "grid_min": 0.25, "grid_max": 0.25} if grouping == "grid"
             else {"grouping": "fps", "fps_centres": [48], "fps_k": [6]})
    model, _ = build(agg_config(**extra), like=model0, gate=0.5)
    questions = [QUESTIONS[0], "Hello, who are you?", QUESTIONS[1]]
    with_points = [True, False, True]
    clouds = make_clouds([0.3, 1.0, 1.0], seed=3)
    cloud_list = [clouds[0], None, clouds[2]]
    enc = encode(tok, model, questions, with_points)
    batch = logits(model, enc, cloud_list)
    real = enc["attention_mask"].bool()
    closed, _ = build(agg_config(**extra), like=model0)
    assert not torch.allclose(batch[0][real[0]], logits(closed, encode(tok, model, questions[:1]), clouds[:1])[0])
    for b in range(3):
        one = encode(tok, model, questions[b : b + 1], with_points[b : b + 1])
        alone = logits(model, one, clouds[b : b + 1] if with_points[b] else None)[0]
        torch.testing.assert_close(batch[b][real[b]], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "schedule, fine_to_coarse",
    [
        ([{"aggregate_after": [1, 2], "propagate_after": [5, 6]}], [0, 64, 96, 96, 96, 64, 0, 0]),
        ([{"aggregate_after": [1, 2, 3], "propagate_after": [5, 6, 7]}], [0, 64, 96, 112, 112, 96, 64, 0]),
        ([{"aggregate_after": [1], "propagate_after": [3]}, {"aggregate_after": [4, 5], "propagate_after": [6, 7]}],
         [0, 64, 64, 0, 64, 96, 64, 0]),
    ],
    ids=["l2", "l3", "two-blocks"],
)
def test_multi_level_schedules(tiny8, schedule, fine_to_coarse):
    """FPS 128 → 64 → 32 → 16: the length each layer sees, and cached generation, for nested and repeated blocks."""
    fps = {"grouping": "fps", "fps_centres": [64, 32, 16], "fps_k": [8, 4, 4]}
    model, tok = build(agg_config(8, schedule, **fps), backbone=tiny8, gate=0.5)
    enc = encode(tok, model, QUESTIONS)
    clouds = make_clouds([1.0, 0.6], seed=1)
    with record_layers(model) as rec:
        out = logits(model, enc, clouds)
    assert torch.isfinite(out).all()
    length = enc["input_ids"].shape[1]
    assert [x.shape[1] for x in rec["inputs"]] == [length - d for d in fine_to_coarse]
    with torch.no_grad():  # the layouts the model reports are the sequences the layers saw
        layouts = model.model(**enc, point_clouds=clouds, output_layouts=True).layouts
    assert [lay.length for lay in layouts] == [length - d for d in fine_to_coarse]
    levels = {0: 0, 64: 1, 96: 2, 112: 3}  # tokens fewer than the full block → aggregations undone to get back
    assert [len(lay.group_maps) for lay in layouts] == [levels[d] for d in fine_to_coarse]
    if len(schedule) > 1 or len(schedule[0]["aggregate_after"]) > 2:  # l = 2 is nested inside l = 3
        assert_cached_equals_uncached(model, enc, clouds, n=3)


def test_multi_level_grid_shrinks_level_by_level(tiny8):
    sizes = {"grid_alpha": 0.15, "grid_min": 0.15, "grid_max": 2.0, "grid_theta": [0.0, 0.0]}
    schedule = [{"aggregate_after": [1, 2], "propagate_after": [4, 5]}]
    model, tok = build(agg_config(8, schedule, **sizes), backbone=tiny8, gate=0.5)
    assert model.model.aggregation._cell_sizes[0] < model.model.aggregation._cell_sizes[1]
    enc = encode(tok, model, QUESTIONS)
    clouds = make_clouds([1.0, 0.5], seed=2)
    with record_layers(model) as rec:
        logits(model, enc, clouds)
    lengths = [x.shape[1] for x in rec["inputs"]]
    assert lengths[0] > lengths[1] > lengths[2] == lengths[3] and lengths[4] == lengths[1]
    assert lengths[5:] == [lengths[0]] * 3


# ---- stage-2 settings --------------------------------------------------------------------------------------
def test_stage2_model_loads_from_a_stage1_folder(tmp_path):
    stage1, tok = EnelForCausalLM.from_backbone("tiny-llama", point_config="small",
                                                objective_config={"name": "hybrid"})
    stage1.save_pretrained(tmp_path)
    stage1.eval()
    model = EnelForCausalLM.from_pretrained(tmp_path, aggregation_config=agg_config(**SINGLETON_GRID),
                                            objective_config={"name": "none"}).eval()
    assert model.model.objectives is None  # the stage-1 heads in the folder are ignored
    agg = model.model.aggregation
    assert agg is not None and len(agg.attn) == 1
    attn = agg.attn[0]
    assert float(attn.gate.detach()) == 0.0
    assert torch.equal(attn.norm.weight, torch.ones_like(attn.norm.weight))
    for w in (attn.qkv.weight, attn.out.weight):  # initialised, not left empty
        assert torch.isfinite(w).all() and 0.005 < float(w.detach().std()) < 0.05
    enc = encode(tok, model, QUESTIONS)
    clouds = make_clouds([1.0, 0.4])
    real = enc["attention_mask"].bool()
    torch.testing.assert_close(logits(model, enc, clouds)[real], logits(stage1, enc, clouds)[real],
                               atol=1e-5, rtol=1e-5)


def _train_batch(tok, model):
    enc = encode(tok, model, QUESTIONS)
    labels = enc["input_ids"].clone()
    labels[(enc["attention_mask"] == 0) | (labels >= model.config.text_config.vocab_size)] = -100
    return enc, labels


def test_gradient_reaches_the_gate_then_the_attention(base):
    model0, tok = base
    model, _ = build(agg_config(grid_alpha=0.25, grid_min=0.25, grid_max=0.25), like=model0)
    model.train()
    attn = model.model.aggregation.attn[0]
    enc, labels = _train_batch(tok, model)
    clouds = make_clouds([0.3, 1.0])
    model(**enc, point_clouds=clouds, labels=labels).loss.backward()
    # at α = 0 only α itself gets a gradient: the attention output is multiplied by tanh(0) = 0
    assert float(attn.gate.grad.abs()) > 0
    assert float(attn.qkv.weight.grad.abs().sum()) == 0.0
    torch.optim.Adam(model.parameters(), lr=1e-3).step()  # Adam: a step of ~lr whatever the gradient's scale
    model.zero_grad()
    assert 0 < abs(float(attn.gate.detach())) < 0.01
    model(**enc, point_clouds=clouds, labels=labels).loss.backward()
    for p in (attn.gate, attn.qkv.weight, attn.out.weight, attn.norm.weight):
        assert float(p.grad.abs().sum()) > 0


def test_bf16_autocast_forward_and_backward(base):
    model0, tok = base
    model, _ = build(agg_config(grid_alpha=0.25, grid_min=0.25, grid_max=0.25), like=model0, gate=0.5)
    model.train()
    enc, labels = _train_batch(tok, model)
    clouds = make_clouds([0.3, 1.0])
    ref = model(**enc, point_clouds=clouds, labels=labels).loss
    with torch.autocast("cpu", dtype=torch.bfloat16), record_layers(model) as rec:
        out = model(**enc, point_clouds=clouds, labels=labels)
    assert rec["inputs"][1].shape[1] < rec["inputs"][0].shape[1]  # the aggregation ran
    loss, ref = float(out.loss.detach()), float(ref.detach())
    assert math.isfinite(loss) and abs(loss - ref) < 0.05 * ref
    out.loss.backward()
    attn = model.model.aggregation.attn[0]
    assert torch.isfinite(attn.qkv.weight.grad).all() and float(attn.gate.grad.abs()) > 0


def test_the_gate_is_held_one_dimensional_and_saved_as_a_scalar(tmp_path):
    """FSDP shards only parameters with a dimension, so α is held as ``(1,)``; files keep the 0-d tensor every
    saved model has (older code reads them), and a reload gets the value back."""
    from safetensors import safe_open

    from enel.model.saving import load_model, save_model

    model, tok = build(agg_config(grouping="grid"), gate=0.25)
    assert model.model.aggregation.attn[0].gate.shape == (1,)
    folder = save_model(model, tok, tmp_path / "m")
    with safe_open(folder / "model.safetensors", "pt") as f:
        stored = f.get_tensor("model.aggregation.attn.0.gate")
    assert stored.shape == () and float(stored) == pytest.approx(0.25)
    again, _ = load_model(folder)
    assert again.model.aggregation.attn[0].gate.shape == (1,)
    assert float(again.model.aggregation.attn[0].gate) == pytest.approx(0.25)
