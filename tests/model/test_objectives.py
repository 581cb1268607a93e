"""Stage-1 objectives (enel-method.md §2): masking mechanics, heads, losses, and that each objective learns.

Point configs are narrower than the ``small`` preset so the whole file runs in well under a minute on two
shared cores: ``POINTS_129`` keeps the paper's token layout (1024 → 512 / 256 / 128 centres, 129 tokens) with
thin widths, ``POINTS_33`` (256 → 128 / 64 / 32 centres, 33 tokens) drives the 50-step overfitting runs.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from enel.data.conversation import encode_conversation
from enel.errors import ConfigError
from enel.model import EnelForCausalLM
from enel.model.configuration_enel import ObjectiveConfig, PointEmbeddingConfig
from enel.model.embedding import PointTokenEmbedding
from enel.model.objectives import EmbeddingTeacher, PointObjectives, info_nce
from enel.points import ops
from enel.points.ops import chamfer_l2
from enel.train.freezing import apply_stage, parameter_groups

POINTS_129 = {"embed_dim": 12, "group_size": 8, "projector_hidden": [64], "num_points": 512}
POINTS_33 = {"embed_dim": 12, "group_size": 8, "projector_hidden": [64], "num_points": 256, "input_points": 256}



# ---- helpers -------------------------------------------------------------------------------------------
def make_model(objective: dict, points: dict = POINTS_33, backbone: str = "tiny-llama"):
    model, tok = EnelForCausalLM.from_backbone(backbone, point_config=points, objective_config=objective, seed=0)
    return model, tok


def make_clouds(batch: int, n_points: int, seed: int = 0) -> torch.Tensor:
    """``(B, N, 6)``: xyz uniform in a cube inside the unit sphere, each cloud with its own colour (+ noise)."""
    g = torch.Generator().manual_seed(seed)
    pc = torch.rand(batch, n_points, 6, generator=g)
    pc[..., :3] = (pc[..., :3] * 2 - 1) / 3**0.5
    base = torch.rand(batch, 1, 3, generator=g)
    pc[..., 3:] = (base + 0.1 * pc[..., 3:]).clamp(0, 1)
    return pc


ANSWERS = ["A red chair.", "A small blue table.", "A lamp.", "A green car with four wheels."]


def make_batch(tok, n_tokens: int, batch: int, *, padding: str = "right", prefixes=None, answers=None):
    """Token ids, attention mask and labels (-100 on padding and non-answers) for ``batch`` conversations.

    ``prefixes[i]`` is text put before ``<point>`` in sample i, so ``<point_start>`` moves.
    """
    prefixes = prefixes or [""] * batch
    answers = answers or [ANSWERS[i % len(ANSWERS)] for i in range(batch)]
    encs = [
        encode_conversation(
            tok,
            [{"from": "human", "value": prefixes[i] + "<point>\nWhat is this?"}, {"from": "gpt", "value": answers[i]}],
            template="chat",
            num_point_tokens=n_tokens,
        )
        for i in range(batch)
    ]
    length = max(len(e.input_ids) for e in encs)
    ids = torch.full((batch, length), tok.pad_token_id)
    labels = torch.full((batch, length), -100)
    mask = torch.zeros(batch, length, dtype=torch.long)
    for i, e in enumerate(encs):
        n = len(e.input_ids)
        sl = slice(0, n) if padding == "right" else slice(length - n, length)
        ids[i, sl] = torch.tensor(e.input_ids)
        labels[i, sl] = torch.tensor(e.labels)
        mask[i, sl] = 1
    return ids, mask, labels


def point_start(ids: torch.Tensor, model) -> torch.Tensor:
    return (ids == model.config.point_start_token_id).long().argmax(1)


# ---- Chamfer-L2 and InfoNCE ------------------------------------------------------------------------------
def _chamfer_numpy(a: np.ndarray, b: np.ndarray) -> float:
    """Brute force: squared distances, min per point, mean over every point of every set, both directions."""
    fwd, bwd = [], []
    for s in range(a.shape[0]):
        for p in a[s]:
            fwd.append(min(float(((p - q) ** 2).sum()) for q in b[s]))
        for q in b[s]:
            bwd.append(min(float(((q - p) ** 2).sum()) for p in a[s]))
    return float(np.mean(fwd) + np.mean(bwd))


def test_chamfer_l2_matches_numpy_brute_force():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 7, 3))
    b = rng.normal(size=(3, 11, 3)) * 0.5 + 0.2
    got = chamfer_l2(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32))
    assert float(got) == pytest.approx(_chamfer_numpy(a, b), rel=1e-5)
    # a set against a permutation of itself is at distance 0; the measure is symmetric
    perm = torch.tensor(a[:, ::-1].copy(), dtype=torch.float32)
    assert float(chamfer_l2(torch.tensor(a, dtype=torch.float32), perm)) == pytest.approx(0.0, abs=1e-6)
    ta, tb = torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32)
    assert float(chamfer_l2(ta, tb)) == pytest.approx(float(chamfer_l2(tb, ta)), rel=1e-6)


def test_info_nce_matches_its_formula():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    tau = 0.2
    an, bn = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    sim = an @ bn.t() / tau
    expected = -(sim.diag() - sim.logsumexp(dim=1)).mean()
    assert float(info_nce(a, b, tau)) == pytest.approx(float(expected), rel=1e-5)


def _info_nce_brute_force(a: np.ndarray, b: np.ndarray, tau: float) -> float:
    """Eq. 3 pair by pair in float64: row i of ``a`` against every row j of ``b``, the positive being j = i."""
    def cosine(u, v):
        return float(u @ v) / (np.sqrt(float(u @ u)) * np.sqrt(float(v @ v)))

    total = 0.0
    for i in range(len(a)):
        exps = [np.exp(cosine(a[i], b[j]) / tau) for j in range(len(b))]
        total += -np.log(exps[i] / sum(exps))
    return total / len(a)


def test_contrastive_loss_is_info_nce_of_the_models_own_pooled_outputs():
    """``loss_contrast`` of a training forward, recomputed from what the model returns: its final hidden states
    (views a in rows 0..B-1, views b of the same clouds in rows B..2B-1), pooled over the point block (located by
    the ``<point_patch>`` ids: the class token and the geometric tokens), through the contrastive head, then
    InfoNCE pair by pair."""
    tau = 0.05  # sharp enough that the random model's near-parallel outputs give a loss far from log B
    model, tok = make_model({"name": "contrastive", "temperature": tau})
    model.train()
    batch = 3
    ids, mask, labels = make_batch(tok, 33, batch)
    clouds = make_clouds(batch, 256, seed=2)
    out = model(input_ids=ids, attention_mask=mask, point_clouds=clouds, labels=labels, output_hidden_states=True,
                point_generator=torch.Generator().manual_seed(0))
    final = out.hidden_states[-1].detach().double()  # after the final norm (head_layer -1, the paper's)
    assert final.shape[0] == 2 * batch, "one row per view"
    head = next(m for name, m in model.named_modules() if name.endswith("contrast_head"))
    head = copy.deepcopy(head).double()
    pooled = []
    for row in range(2 * batch):
        where = (ids[row % batch] == model.config.point_patch_token_id).nonzero().flatten()
        assert len(where) == 33
        pooled.append(final[row, where].mean(0))
    with torch.no_grad():
        z = head(torch.stack(pooled)).numpy()
    expected = _info_nce_brute_force(z[:batch], z[batch:], tau)
    got = float(out.loss_terms["loss_contrast"].detach())
    assert got == pytest.approx(expected, rel=1e-4)
    # the pairs matter: the same vectors with the positives shuffled give another value
    assert _info_nce_brute_force(z[:batch], np.roll(z[batch:], 1, axis=0), tau) != pytest.approx(got, rel=1e-2)


def _invariant_descriptor(views: torch.Tensor) -> torch.Tensor:
    """A rigid-motion-invariant summary of ``(B, N, 6)`` clouds: centroid-distance quantiles + mean colour."""
    xyz = views[..., :3]
    d = (xyz - xyz.mean(1, keepdim=True)).norm(dim=-1)
    q = torch.quantile(d, torch.linspace(0.05, 0.95, 10), dim=1).t()
    return torch.cat([q - q.mean(1, keepdim=True), views[..., 3:].mean(1)], dim=1)


def test_info_nce_is_lower_for_two_views_of_one_cloud_than_for_two_clouds():
    obj = PointObjectives(ObjectiveConfig(name="contrastive"), hidden=16, group_size=8)
    g = torch.Generator().manual_seed(3)
    clouds = make_clouds(4, 512, seed=3)
    clouds[..., :3] *= torch.tensor([1.0, 0.6, 0.8, 0.4]).view(4, 1, 1)  # different shapes too
    view_a, view_b = obj.contrastive_views(clouds, generator=g)
    # the views are rigid motions of the clouds: distances kept, colour untouched, coordinates moved
    for v in (view_a, view_b):
        exact = "donot_use_mm_for_euclid_dist"
        assert torch.allclose(torch.cdist(v[..., :3], v[..., :3], compute_mode=exact),
                              torch.cdist(clouds[..., :3], clouds[..., :3], compute_mode=exact), atol=1e-5)
        assert torch.equal(v[..., 3:], clouds[..., 3:])
    assert not torch.allclose(view_a[..., :3], view_b[..., :3], atol=1e-2)
    fa, fb = _invariant_descriptor(view_a), _invariant_descriptor(view_b)
    same = info_nce(fa, fb, 0.1)  # positives: two views of one cloud
    other = info_nce(fa, fb.roll(1, dims=0), 0.1)  # "positives": views of two different clouds
    assert float(same) < 0.5 * float(other)


# ---- masking ---------------------------------------------------------------------------------------------
def _block_inputs(batch: int, hidden: int = 32, g: int = 128, k: int = 4, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(batch, 1 + g, hidden, generator=gen)
    centres = torch.randn(batch, g, 3, generator=gen)
    patches = torch.randn(batch, g, k, 3, generator=gen)
    return feats, centres, patches


@pytest.mark.parametrize("ratio,expected", [(0.3, 38), (0.6, 76)])
def test_hybrid_masks_int_ratio_times_128_per_sample_and_never_the_class_token(ratio, expected):
    obj = PointObjectives(ObjectiveConfig(name="hybrid", mask_ratio=ratio), hidden=32, group_size=4)
    with torch.no_grad():
        obj.mask_token.fill_(7.0)  # recognisable
    feats, centres, patches = _block_inputs(6)
    block = obj.prepare_block(feats, centres, patches, training=True, generator=torch.Generator().manual_seed(1))
    assert expected == int(ratio * 128)
    assert block.features.shape == (6, 129, 32)  # the count stays 129
    assert block.masked_index.shape == (6, expected) and block.n_visible == 128 - expected
    assert torch.equal(block.features[:, 0], feats[:, 0])  # class token first, untouched
    for b in range(6):
        vis, msk = block.visible_index[b].tolist(), block.masked_index[b].tolist()
        assert sorted(vis + msk) == list(range(128))  # a partition of the 128 geometric tokens
        assert vis == sorted(vis) and msk == sorted(msk)  # original order kept
        # visible tokens first (their own features), then the mask tokens
        assert torch.equal(block.features[b, 1 : 1 + len(vis)], feats[b, 1:][vis])
        assert torch.all(block.features[b, 1 + len(vis) :] == 7.0)
        # each slot carries the centre of the token it holds or stands for
        assert torch.equal(block.centres[b], centres[b][vis + msk])
    assert not torch.equal(block.masked_index[0], block.masked_index[1])  # drawn per sample


def test_mask_sampling_is_seeded():
    obj = PointObjectives(ObjectiveConfig(name="hybrid"), hidden=8, group_size=4)
    m1 = obj.sample_masks(4, 128, "cpu", torch.Generator().manual_seed(5))
    m2 = obj.sample_masks(4, 128, "cpu", torch.Generator().manual_seed(5))
    m3 = obj.sample_masks(4, 128, "cpu", torch.Generator().manual_seed(6))
    assert torch.equal(m1, m2) and not torch.equal(m1, m3)
    assert m1.sum(1).tolist() == [38] * 4
    torch.manual_seed(11)
    g1 = obj.sample_masks(4, 128, "cpu")
    torch.manual_seed(11)
    assert torch.equal(g1, obj.sample_masks(4, 128, "cpu"))  # the global RNG, when seeded, too


def test_a_mask_ratio_that_masks_nothing_is_refused():
    obj = PointObjectives(ObjectiveConfig(name="masked", mask_ratio=0.005), hidden=8, group_size=4)
    feats, centres, patches = _block_inputs(2, hidden=8)
    with pytest.raises(ConfigError, match="masks no token"):
        obj.prepare_block(feats, centres, patches, training=True)


def test_mask_tokens_sit_after_the_visible_tokens_in_the_sequence_at_any_offset():
    """Left padding and different prompt lengths: every sample's block is cls, 90 visible, 38 mask tokens."""
    model, tok = make_model({"name": "hybrid"}, POINTS_129)
    with torch.no_grad():
        model.model.objectives.mask_token.fill_(0.25)
    ids, mask, _ = make_batch(tok, 129, 3, padding="left", prefixes=["", "Look at this object: ", "Hi. "])
    starts = point_start(ids, model)
    assert len(set(starts.tolist())) == 3  # three different offsets
    model.train()
    out = model.model(input_ids=ids, attention_mask=mask, point_clouds=make_clouds(3, 512),
                      output_hidden_states=True, point_generator=torch.Generator().manual_seed(0))
    emb = out.hidden_states[0]  # the input of the first decoder layer
    block = out.point_block
    assert block.masked_index.shape == (3, 38)
    for b, s in enumerate(starts.tolist()):
        assert int(ids[b, s + 130]) == model.config.point_end_token_id
        assert torch.allclose(emb[b, s + 1 : s + 92], block.features[b, :91])  # cls + 90 visible
        assert torch.all(emb[b, s + 92 : s + 130] == 0.25)  # the 38 mask tokens, appended
        vis = ops.gather(block.target_features[b : b + 1], block.visible_index[b : b + 1])[0]
        assert torch.allclose(emb[b, s + 2 : s + 92], vis)


def test_evaluation_and_generation_see_all_129_tokens():
    model, tok = make_model({"name": "hybrid"}, POINTS_129)
    with torch.no_grad():
        model.model.objectives.mask_token.fill_(0.25)
    ids, mask, labels = make_batch(tok, 129, 2)
    clouds = make_clouds(2, 512)
    seen = []
    model.model.register_forward_hook(lambda mod, args, out: seen.append(out.point_block))
    model.eval()
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, point_clouds=clouds, labels=labels)
        tokens = model.model.embed_points(clouds)
        projected = model.model.point_projector(tokens.features)
    assert set(out.loss_terms) == {"loss_ce"}  # no objective outside training
    block = seen[-1]
    assert block.masked_index is None and block.n_visible == 128
    assert torch.allclose(block.features, projected)
    assert not torch.any(block.features == 0.25)
    from enel.data.conversation import build_prompt, tokenize_prompts

    prompt = build_prompt(tok, "What is this?", template="chat", num_point_tokens=129)
    enc = tokenize_prompts(tok, [prompt], "chat")
    seen.clear()
    with torch.no_grad():
        model.generate(**enc, point_clouds=clouds[:1], max_new_tokens=2, do_sample=False)
    assert seen[0] is not None and seen[0].masked_index is None and seen[0].features.shape[1] == 129


# ---- named terms, weights, layer choice ----------------------------------------------------------------
OBJECTIVE_TERMS = [
    ({"name": "none"}, {"loss_ce"}),
    ({"name": "hybrid"}, {"loss_ce", "loss_mask", "loss_recon"}),
    ({"name": "hybrid", "masked_target": "patch", "recon_target": "feature"}, {"loss_ce", "loss_mask", "loss_recon"}),
    ({"name": "masked", "masked_target": "feature"}, {"loss_ce", "loss_mask"}),
    ({"name": "masked", "masked_target": "patch", "mask_ratio": 0.6}, {"loss_ce", "loss_mask"}),
    ({"name": "reconstruction", "recon_target": "patch"}, {"loss_ce", "loss_recon"}),
    ({"name": "reconstruction", "recon_target": "feature"}, {"loss_ce", "loss_recon"}),
    ({"name": "contrastive"}, {"loss_ce", "loss_contrast"}),
    ({"name": "distillation"}, {"loss_ce", "loss_distill"}),
]
WEIGHTS = {"loss_ce": "weight_ce", "loss_mask": "weight_mask", "loss_recon": "weight_recon",
           "loss_contrast": "weight_contrast", "loss_distill": "weight_distill"}


def _teacher_dim() -> int:
    return PointEmbeddingConfig.from_dict(POINTS_33).output_dim


def _attach_teacher(model) -> None:
    torch.manual_seed(1)
    model.set_distillation_teacher(EmbeddingTeacher(PointTokenEmbedding(PointEmbeddingConfig.from_dict(POINTS_33))))


def _objective_id(objective: dict) -> str:
    return "-".join(str(v) for v in objective.values())


@pytest.mark.parametrize("objective,terms", OBJECTIVE_TERMS, ids=[_objective_id(o) for o, _ in OBJECTIVE_TERMS])
def test_each_objective_returns_its_named_terms_and_weights_them(objective, terms):
    objective = dict(objective)
    if objective["name"] == "distillation":
        objective["teacher_dim"] = _teacher_dim()
    weights = {"weight_ce": 0.5, "weight_mask": 2.0, "weight_recon": 3.0, "weight_contrast": 1.5,
               "weight_distill": 0.25}
    model, tok = make_model({**objective, **weights})
    if objective["name"] == "distillation":
        _attach_teacher(model)
    ids, mask, labels = make_batch(tok, 33, 2)
    model.train()
    out = model(input_ids=ids, attention_mask=mask, point_clouds=make_clouds(2, 256), labels=labels)
    assert set(out.loss_terms) == terms
    for value in out.loss_terms.values():
        assert value.dim() == 0 and torch.isfinite(value) and float(value.detach()) > 0
    if objective["name"] == "none":
        expected = out.loss_terms["loss_ce"]
    else:
        expected = sum(weights[WEIGHTS[k]] * v for k, v in out.loss_terms.items())
    assert float(out.loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)


def test_distillation_without_a_teacher_is_a_config_error():
    model, tok = make_model({"name": "distillation", "teacher_dim": _teacher_dim()})
    ids, mask, labels = make_batch(tok, 33, 2)
    model.train()
    with pytest.raises(ConfigError, match="teacher"):
        model(input_ids=ids, attention_mask=mask, point_clouds=make_clouds(2, 256), labels=labels)


def test_head_layer_picks_the_hidden_states_that_feed_the_heads():
    """With CE weighted 0, the heads fed from layer 1 leave the (trainable) layer 2 without gradient."""
    grads = {}
    for head_layer in (1, -1):
        model, tok = make_model({"name": "hybrid", "head_layer": head_layer, "weight_ce": 0.0})
        apply_stage(model, 1, trainable_layers=2)
        ids, mask, labels = make_batch(tok, 33, 2)
        model.train()
        out = model(input_ids=ids, attention_mask=mask, point_clouds=make_clouds(2, 256), labels=labels,
                    point_generator=torch.Generator().manual_seed(0))
        out.loss.backward()
        layers = model.model.language_model.layers
        grads[head_layer] = [sum(float(p.grad.abs().sum()) for p in layers[i].parameters()) for i in (0, 1)]
    assert grads[1][0] > 0 and grads[1][1] == 0.0
    assert grads[-1][0] > 0 and grads[-1][1] > 0


def test_feature_targets_carry_gradient_unless_detached():
    for detach in (False, True):
        obj = PointObjectives(ObjectiveConfig(name="hybrid", detach_targets=detach), hidden=8, group_size=4)
        feats, centres, patches = _block_inputs(2, hidden=8)
        feats.requires_grad_(True)
        block = obj.prepare_block(feats, centres, patches, training=True)
        assert block.target_features.requires_grad is (not detach)


def test_normalized_feature_targets_are_scale_free():
    """With normalize_targets the masked-feature MSE compares against layer-normed targets (numpy reference),
    so scaling the point tokens by 10 leaves the loss unchanged; without it the loss grows."""
    losses = {}
    for normalize in (False, True):
        obj = PointObjectives(ObjectiveConfig(name="hybrid", normalize_targets=normalize), hidden=8, group_size=4)
        feats, centres, patches = _block_inputs(2, hidden=8)
        hidden = torch.randn(2, 128, 8, generator=torch.Generator().manual_seed(1))
        for scale in (1.0, 10.0):
            block = obj.prepare_block(feats * scale, centres, patches, training=True,
                                      generator=torch.Generator().manual_seed(0))
            nv = block.n_visible
            loss = float(obj.losses(hidden, block)["loss_mask"].detach())
            losses[normalize, scale] = loss
            pred = obj.feature_head(hidden[:, nv:]).detach().numpy()
            gt = np.take_along_axis(block.target_features.numpy(), block.masked_index.numpy()[..., None], axis=1)
            if normalize:
                gt = (gt - gt.mean(-1, keepdims=True)) / np.sqrt(gt.var(-1, keepdims=True) + 1e-5)
            assert loss == pytest.approx(float(((pred - gt) ** 2).mean()), rel=1e-4)
    assert losses[True, 1.0] == pytest.approx(losses[True, 10.0], rel=1e-4)
    assert losses[False, 10.0] > 10 * losses[False, 1.0]


def test_per_layer_pe_is_added_before_every_layer_and_mask_tokens_carry_their_centres_encoding():
    model, tok = make_model({"name": "hybrid", "per_layer_pe": True})
    obj = model.model.objectives
    with torch.no_grad():
        obj.mask_token.fill_(0.25)
    ids, mask, _ = make_batch(tok, 33, 2, padding="left", prefixes=["", "Look: "])
    clouds = make_clouds(2, 256)
    layers = model.model.language_model.layers
    seen = {}
    layers[1].register_forward_hook(lambda mod, args, out: seen.__setitem__("out1", out))
    layers[2].register_forward_pre_hook(lambda mod, args: seen.__setitem__("in2", args[0]))
    model.train()
    out = model.model(input_ids=ids, attention_mask=mask, point_clouds=clouds, output_hidden_states=True,
                      point_generator=torch.Generator().manual_seed(0))
    block = out.point_block
    nv = block.n_visible
    assert block.masked_index.shape == (2, int(0.3 * 32))
    original = model.model.embed_points(clouds).centres  # FPS starts at index 0: the same centres
    with torch.no_grad():
        pe = model.model.point_pos_embed(block.centres)  # (B, 32, H) in slot order
    emb = out.hidden_states[0]
    delta = seen["in2"] - seen["out1"]  # what the model added between layers 2 and 3
    for b, s in enumerate(point_start(ids, model).tolist()):
        # mask slots stand for the masked tokens' centres; visible slots hold their own
        assert torch.equal(block.centres[b, nv:], original[b][block.masked_index[b]])
        assert torch.equal(block.centres[b, :nv], original[b][block.visible_index[b]])
        geo = emb[b, s + 2 : s + 34]
        assert torch.allclose(geo[:nv], block.features[b, 1 : 1 + nv] + pe[b, :nv], atol=1e-6)
        assert torch.allclose(geo[nv:], 0.25 + pe[b, nv:], atol=1e-6)
        assert torch.allclose(delta[b, s + 2 : s + 34], pe[b], atol=1e-5)
        outside = torch.cat([delta[b, : s + 2], delta[b, s + 34 :]])
        assert torch.count_nonzero(outside) == 0  # text, cls and <point_end> get nothing


def test_batches_with_the_block_at_different_offsets_give_the_per_sample_losses():
    """Left / right padding and different prompt lengths: the batch terms are the mean of per-sample terms.

    Masks are fixed (the same per sample in every run) and the point embedding runs in eval mode, so its
    BatchNorm doesn't mix the batch; answers are equal so every sample has as many CE targets.
    """
    model, tok = make_model({"name": "hybrid"}, POINTS_129)
    obj = model.model.objectives
    fixed = obj.sample_masks(3, 128, "cpu", torch.Generator().manual_seed(9))
    rows = {"idx": torch.arange(3)}
    obj.sample_masks = lambda batch, n, device, generator=None: fixed[rows["idx"]].to(device)
    clouds = make_clouds(3, 512)
    prefixes = ["", "Here is a scan of something I found: ", "Hi. "]
    answers = ["A red chair."] * 3
    model.train()
    model.model.point_embedding.eval()
    results = {}
    for padding in ("left", "right"):
        ids, mask, labels = make_batch(tok, 129, 3, padding=padding, prefixes=prefixes, answers=answers)
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, point_clouds=clouds, labels=labels)
        results[padding] = {k: float(v) for k, v in out.loss_terms.items()}
    assert len(set(point_start(ids, model).tolist())) == 3
    singles = []
    for b in range(3):
        rows["idx"] = torch.tensor([b])
        ids, mask, labels = make_batch(tok, 129, 1, prefixes=prefixes[b : b + 1], answers=answers[:1])
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, point_clouds=clouds[b : b + 1], labels=labels)
        singles.append({k: float(v) for k, v in out.loss_terms.items()})
    assert set(results["left"]) == {"loss_ce", "loss_mask", "loss_recon"}
    for name in results["left"]:
        mean = sum(s[name] for s in singles) / 3
        assert results["left"][name] == pytest.approx(mean, rel=1e-4), name
        assert results["right"][name] == pytest.approx(mean, rel=1e-4), name


# ---- every objective learns ----------------------------------------------------------------------------
def _relative(term: str):
    """Feature targets are the (trainable, not detached) projected tokens, whose scale the caption loss moves;
    for them the tracked value is the MSE relative to the targets' mean square (1 = predicting zeros)."""

    def measure(value: float, block) -> float:
        index = block.masked_index if term == "loss_mask" else block.visible_index
        return value / float(ops.gather(block.target_features, index).detach().pow(2).mean())

    return measure


OVERFIT = [
    ({"name": "hybrid"}, {"loss_mask": _relative("loss_mask"), "loss_recon": None}),
    ({"name": "masked", "masked_target": "feature"}, {"loss_mask": _relative("loss_mask")}),
    ({"name": "masked", "masked_target": "patch"}, {"loss_mask": None}),
    ({"name": "reconstruction", "recon_target": "patch"}, {"loss_recon": None}),
    ({"name": "reconstruction", "recon_target": "feature"}, {"loss_recon": _relative("loss_recon")}),
    ({"name": "contrastive"}, {"loss_contrast": None}),
    ({"name": "distillation"}, {"loss_distill": None}),
]


@pytest.mark.parametrize("objective,tracked", OVERFIT, ids=[_objective_id(o) for o, _ in OVERFIT])
def test_each_objective_falls_over_50_steps_of_overfitting(objective, tracked):
    """Stage 1 (2 trainable layers) on a handful of clouds with a tiny random backbone, AdamW lr 1e-3."""
    objective = dict(objective)
    if objective["name"] == "distillation":
        objective["teacher_dim"] = _teacher_dim()
    model, tok = make_model(objective)
    if objective["name"] == "distillation":
        _attach_teacher(model)
    apply_stage(model, 1, trainable_layers=2)
    opt = torch.optim.AdamW(parameter_groups(model, lr_new=1e-3, lr_llm=1e-3), lr=1e-3)
    batch = 4 if objective["name"] == "contrastive" else 2  # InfoNCE needs negatives
    ids, mask, labels = make_batch(tok, 33, batch)
    clouds = make_clouds(batch, 256, seed=1)
    gen = torch.Generator().manual_seed(1)
    seen = {}
    model.model.register_forward_hook(lambda mod, args, out: seen.__setitem__("block", out.point_block))
    history = {name: [] for name in tracked}
    model.train()
    for _ in range(50):
        out = model(input_ids=ids, attention_mask=mask, point_clouds=clouds, labels=labels, point_generator=gen)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        for name, measure in tracked.items():
            value = float(out.loss_terms[name].detach())
            history[name].append(measure(value, seen["block"]) if measure else value)
    for name, values in history.items():
        first, last = np.mean(values[:3]), np.mean(values[-5:])
        assert np.all(np.isfinite(values)), name
        # at least 25 % down (the patch terms level off near 0.65 of their start: k random points per patch)
        assert last < 0.75 * first, f"{name}: {first:.4g} -> {last:.4g}"


def test_objective_config_errors():
    cases = [
        ({"name": "simclr"}, "unknown stage-1 objective"),
        ({"name": "hybrid", "mask_ratio": 0.0}, "mask_ratio"),
        ({"name": "hybrid", "mask_ratio": 1.0}, "mask_ratio"),
        ({"name": "masked", "masked_target": "token"}, "masked_target"),
        ({"name": "reconstruction", "recon_target": "voxel"}, "recon_target"),
        ({"name": "contrastive", "temperature": 0.0}, "temperature"),
        ({"name": "distillation"}, "teacher_dim"),
        ({"name": "hybrid", "head_layer": 0}, "head_layer"),
        ({"name": "hybrid", "mask_rate": 0.3}, "unknown objective field"),
    ]
    for data, match in cases:
        with pytest.raises(ConfigError, match=match):
            ObjectiveConfig.from_dict(data)
    with pytest.raises(ConfigError, match="head_layer=9"):
        make_model({"name": "hybrid", "head_layer": 9})  # the tiny backbone has 4 layers


# ---- class-word alignment ------------------------------------------------------------------------------------
def _word_align_reference(tokens: np.ndarray, words: np.ndarray, emb: np.ndarray, tau: float) -> float:
    """Brute force: each token's softmax over the vocabulary of cos / τ, -log mean_t p_t(w), one sample at a time."""
    losses = []
    for b in range(tokens.shape[0]):
        ws = [w for w in words[b] if w >= 0]
        if not ws:
            continue
        per_word = []
        for w in ws:
            probs = []
            for t in tokens[b]:
                # F.normalize's floor: a zero embedding row (a token added to the vocabulary) reads as cos 0
                cos = emb @ t / (np.maximum(np.linalg.norm(emb, axis=1), 1e-12) * max(np.linalg.norm(t), 1e-12))
                z = np.exp(cos / tau - np.max(cos / tau))
                probs.append(z[w] / z.sum())
            per_word.append(-np.log(np.mean(probs)))
        losses.append(np.mean(per_word))
    return float(np.mean(losses))


def test_word_alignment_loss_matches_a_brute_force_reference_and_skips_rows_without_words():
    from enel.model.objectives import unit_rows, word_alignment_loss

    g = torch.Generator().manual_seed(0)
    tokens, emb = torch.randn(3, 5, 8, generator=g, dtype=torch.float64), torch.randn(20, 8, generator=g,
                                                                                    dtype=torch.float64)
    words = torch.tensor([[4, 7], [-100, -100], [11, -100]])
    got = word_alignment_loss(tokens, words, unit_rows(emb, torch.float64), 0.3)
    want = _word_align_reference(tokens.numpy(), words.numpy(), emb.numpy(), 0.3)
    assert float(got) == pytest.approx(want, rel=1e-6)
    assert word_alignment_loss(tokens, torch.full((3, 2), -100), unit_rows(emb), 0.3) is None


def test_word_alignment_is_lower_when_one_token_is_the_word_and_leaves_the_embeddings_alone():
    from enel.model.objectives import unit_rows, word_alignment_loss

    g = torch.Generator().manual_seed(1)
    emb = torch.randn(50, 16, generator=g, requires_grad=True)
    tokens = torch.randn(1, 6, 16, generator=g)
    words = torch.tensor([[9]])
    hit = tokens.clone()
    hit[0, 3] = emb.detach()[9] * 2.0  # one token points at the word: the others may be anything
    vocab = unit_rows(emb)
    assert float(word_alignment_loss(hit, words, vocab, 0.05)) < float(word_alignment_loss(tokens, words, vocab, 0.05)) - 1
    tokens.requires_grad_(True)
    word_alignment_loss(tokens, words, vocab, 0.05).backward()
    assert tokens.grad.abs().sum() > 0 and emb.grad is None


def test_the_unit_vocabulary_is_kept_until_the_embeddings_change():
    model, _ = make_model({"name": "none", "word_align": 1.0})
    obj, emb = model.model.objectives, model.model.language_model.embed_tokens.weight
    first = obj.unit_vocabulary(emb)
    assert obj.unit_vocabulary(emb) is first  # frozen embeddings: no re-normalising each step
    torch.testing.assert_close(first, torch.nn.functional.normalize(emb.detach().float(), dim=-1))
    with torch.no_grad():
        emb[3] *= 2.0
        emb[4] += 1.0
    again = obj.unit_vocabulary(emb)
    assert again is not first
    torch.testing.assert_close(again, torch.nn.functional.normalize(emb.detach().float(), dim=-1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert obj.unit_vocabulary(emb).dtype == torch.bfloat16


def test_word_align_adds_a_weighted_term_on_the_visible_tokens_of_samples_with_words():
    model, tok = make_model({"name": "hybrid", "word_align": 0.5, "word_align_temperature": 0.1})
    ids, mask, labels = make_batch(tok, 33, 3)
    clouds = make_clouds(3, 256)
    words = torch.tensor([[5, 6], [-100, -100], [7, -100]])
    model.train()
    torch.manual_seed(0)
    out = model(input_ids=ids, attention_mask=mask, point_clouds=clouds, labels=labels, point_words=words)
    assert set(out.loss_terms) == {"loss_ce", "loss_mask", "loss_recon", "loss_align"}
    total = sum(out.loss_terms[k] for k in ("loss_ce", "loss_mask", "loss_recon")) + 0.5 * out.loss_terms["loss_align"]
    assert float(out.loss.detach()) == pytest.approx(float(total.detach()), rel=1e-5)
    # the same tokens the splice used, read by hand: rebuild the block with the same mask draw
    torch.manual_seed(0)
    captured = {}
    handle = model.model.register_forward_hook(lambda m, a, o: captured.update(block=o.point_block))
    try:
        model(input_ids=ids, attention_mask=mask, point_clouds=clouds, labels=labels, point_words=words)
    finally:
        handle.remove()
    block = captured["block"]
    emb = model.model.language_model.embed_tokens.weight.detach()
    want = _word_align_reference(block.features[:, 1:1 + block.n_visible].detach().double().numpy(), words.numpy(),
                                 emb.double().numpy(), 0.1)
    assert float(out.loss_terms["loss_align"]) == pytest.approx(want, rel=1e-4)
    # off by default, and without words
    plain, _ = make_model({"name": "hybrid"})
    plain.train()
    assert "loss_align" not in plain(input_ids=ids, attention_mask=mask, point_clouds=clouds, labels=labels,
                                     point_words=words).loss_terms
    assert "loss_align" not in model(input_ids=ids, attention_mask=mask, point_clouds=clouds, labels=labels).loss_terms


def test_word_align_runs_beside_no_objective_and_its_config_errors():
    model, tok = make_model({"name": "none", "word_align": 1.0})
    ids, mask, labels = make_batch(tok, 33, 2)
    model.train()
    out = model(input_ids=ids, attention_mask=mask, point_clouds=make_clouds(2, 256), labels=labels,
                point_words=torch.tensor([[5], [6]]))
    assert set(out.loss_terms) == {"loss_ce", "loss_align"}
    for data, match in (({"word_align": -1.0}, "word_align is a loss weight"),
                        ({"word_align": 1.0, "word_align_temperature": 0.0}, "word_align_temperature")):
        with pytest.raises(ConfigError, match=match):
            ObjectiveConfig.from_dict(data)


def test_word_align_reads_the_tokens_before_the_colour_skip_and_never_moves_it():
    """A colourless cloud gives every token the same skip input, so an alignment through the skip would train the
    skip's weights for real shapes and move every coloured object's colour signal (docs/training.md)."""
    model, tok = make_model({"name": "hybrid", "word_align": 1.0, "word_align_temperature": 0.1},
                            points={**POINTS_33, "color_skip": True})
    projector = model.model.point_projector
    with torch.no_grad():
        projector.color.weight.normal_(0.0, 0.5)  # a loud skip, so reading after it would change the value
        projector.color.bias.normal_(0.0, 0.5)
    ids, mask, labels = make_batch(tok, 33, 2)
    clouds = make_clouds(2, 256)
    words = torch.tensor([[5, 6], [7, -100]])
    model.train()
    captured = {}
    handle = model.model.register_forward_hook(lambda m, a, o: captured.update(block=o.point_block))
    try:
        torch.manual_seed(0)
        out = model(input_ids=ids, attention_mask=mask, point_clouds=clouds, labels=labels, point_words=words)
    finally:
        handle.remove()
    block = captured["block"]
    # the visible tokens before the skip, in slot order; the spliced ones differ from them by the skip
    geometry = torch.gather(block.geometry, 1, block.visible_index[..., None].expand(-1, -1, block.geometry.shape[-1]))
    skip = (block.features[:, 1:1 + block.n_visible] - geometry).detach()
    assert float(skip.abs().mean()) > 0.05  # the skip is there, and the alignment does not read it
    emb = model.model.language_model.embed_tokens.weight.detach()
    want = _word_align_reference(geometry.detach().double().numpy(), words.numpy(), emb.double().numpy(), 0.1)
    assert float(out.loss_terms["loss_align"]) == pytest.approx(want, rel=1e-4)
    out.loss_terms["loss_align"].backward()
    assert projector.color.weight.grad is None and projector.color.bias.grad is None
    assert projector.net[0].weight.grad.abs().sum() > 0
