"""The point token embedding: shapes, the few-points rule, batch independence, dtypes, gradients, configs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from enel.errors import ConfigError
from enel.model import embedding
from enel.model.configuration_enel import PointEmbeddingConfig
from enel.model import embedding_fused
from enel.model.embedding import PointProjector, PointTokenEmbedding, count_parameters, triangular_encoding
from enel.model.embedding_fused import _StdPerRow, add_encoding, std_per_sample


def cloud(batch: int, n: int, seed: int = 0, color: bool = True) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xyz = torch.randn(batch, n, 3, generator=g)
    xyz = xyz / xyz.norm(dim=-1, keepdim=True).amax(dim=1, keepdim=True)  # unit sphere, as pc_norm
    return torch.cat([xyz, torch.rand(batch, n, 3, generator=g)], -1) if color else xyz


def model(seed: int = 0, warm: bool = True, **overrides) -> PointTokenEmbedding:
    """A small-config embedding in eval mode; ``warm`` gives BatchNorm non-trivial running statistics."""
    torch.manual_seed(seed)
    emb = PointTokenEmbedding(PointEmbeddingConfig.small(**overrides))
    if warm:
        emb.train()
        with torch.no_grad():
            emb(cloud(2, 512, seed=99, color=emb.cfg.use_color))
    return emb.eval()


def is_subset(rows: torch.Tensor, of: torch.Tensor) -> bool:
    """Every row of ``rows (M, 3)`` is exactly a row of ``of (N, 3)``."""
    return set(map(tuple, rows.tolist())) <= set(map(tuple, of.tolist()))


@pytest.fixture(scope="module")
def small():
    return model()


# ----------------------------------------------------------------------------------------------------------
# shapes and the few-points rule
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_points", [512, 1024, 8192, 50_000])
def test_129_tokens_at_any_resolution(small, n_points):
    with torch.no_grad():
        out = small(cloud(1, n_points, seed=n_points))
    assert out.features.shape == (1, 129, 384)
    assert out.centres.shape == (1, 128, 3)
    assert out.patches.shape == (1, 128, 16, 3)
    assert torch.isfinite(out.features).all()
    assert torch.equal(out.features[0, 0], small.class_token[0, 0])
    # centres and patch points are input points (FPS of FPS of the cloud)
    xyz = cloud(1, n_points, seed=n_points)[0, :, :3]
    assert is_subset(out.centres[0], xyz) and is_subset(out.patches[0].reshape(-1, 3), xyz)


def test_paper_config_sizes():
    cfg = PointEmbeddingConfig.paper()
    assert cfg.stage_centres == [512, 256, 128] and cfg.stage_dims == [576, 1152, 2304] and cfg.num_tokens == 129
    emb = PointTokenEmbedding(cfg)
    stage_params = [count_parameters(s) for s in emb.stages]
    # enel-method.md §1.6: 13.97 M in total, 0.67 / 2.66 / 10.64 M per stage; projector 12.85 M (to 4096)
    assert count_parameters(emb) / 1e6 == pytest.approx(13.97, abs=0.01)
    assert [round(p / 1e6, 2) for p in stage_params] == [0.67, 2.66, 10.64]
    assert count_parameters(PointProjector(2304, cfg.projector_hidden, 4096)) / 1e6 == pytest.approx(12.85, abs=0.01)


def test_spec_with_a_preset_overrides_only_the_given_fields():
    cfg = PointEmbeddingConfig.from_spec({"preset": "small", "input_points": 512})
    # the small preset's fields (embed_dim 48, k 16, 2048 points, projector 576/576), 64 + 1 tokens
    assert (cfg.embed_dim, cfg.group_size, cfg.num_points, cfg.projector_hidden) == (48, 16, 2048, [576, 576])
    assert cfg.stage_centres == [256, 128, 64] and cfg.num_tokens == 65
    assert PointEmbeddingConfig.from_spec("small") == PointEmbeddingConfig.small()
    assert PointEmbeddingConfig.from_spec(None) == PointEmbeddingConfig.small()
    assert PointEmbeddingConfig.from_spec({"embed_dim": 24}).group_size == 81  # no preset: the paper defaults
    with pytest.raises(ConfigError, match="unknown point embedding preset 'tiny'"):
        PointEmbeddingConfig.from_spec({"preset": "tiny"})
    with pytest.raises(ConfigError, match="unknown point embedding field"):
        PointEmbeddingConfig.from_spec({"preset": "small", "tokens": 65})
    with pytest.raises(ConfigError, match="preset name or a dict"):
        PointEmbeddingConfig.from_spec(65)


def test_cpu_default_recipe_uses_33_point_tokens_and_the_color_skip_after_the_projector():
    from enel.train.recipe import load_recipe

    cfg = PointEmbeddingConfig.from_spec(load_recipe("smollm2_stage1").point_config)
    assert cfg == PointEmbeddingConfig.small(input_points=256, color_skip=True)
    assert cfg.num_tokens == 33


def test_paper_config_forward_bf16():
    torch.manual_seed(0)
    emb = PointTokenEmbedding(PointEmbeddingConfig.paper()).eval().to(torch.bfloat16)
    with torch.no_grad():
        out = emb(cloud(1, 1024))
    assert out.features.shape == (1, 129, 2304) and out.features.dtype == torch.bfloat16
    assert out.patches.shape == (1, 128, 81, 3) and torch.isfinite(out.features).all()


def test_fewer_points_than_the_first_stage_needs_are_cycled(small):
    assert small.cfg.min_points == 512
    few = cloud(1, 100, seed=3)
    padded = few[:, torch.arange(512) % 100]
    with torch.no_grad():
        out, ref = small(few), small(padded)
    assert out.features.shape == (1, 129, 384)
    assert torch.equal(out.features, ref.features) and torch.equal(out.centres, ref.centres)
    # 100 distinct points: 100 distinct tokens, then copies of the first point's token
    assert torch.unique(out.centres[0], dim=0).shape[0] == 100
    assert torch.equal(out.centres[0, 100:], few[0, :1, :3].expand(28, 3))
    torch.testing.assert_close(out.features[0, 101:], out.features[0, 1:2].expand(28, -1), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        single = small(cloud(1, 1, seed=4))
    assert single.features.shape == (1, 129, 384) and torch.isfinite(single.features).all()
    with pytest.raises(ValueError, match="at least one"):
        small(torch.zeros(1, 0, 6))


# ----------------------------------------------------------------------------------------------------------
# batch independence
# ----------------------------------------------------------------------------------------------------------
def test_same_tokens_alone_and_in_a_batch(small):
    batch = cloud(3, 2048, seed=5)
    batch[1, :, :3] *= 0.3  # batch mates with a very different spread
    with torch.no_grad():
        together = small(batch)
        alone = small(batch[:1])
    torch.testing.assert_close(together.features[:1], alone.features, atol=2e-5, rtol=1e-5)
    assert torch.equal(together.centres[:1], alone.centres) and torch.equal(together.patches[:1], alone.patches)


def test_std_mode_batch_depends_on_batch_mates(small):
    released = model(std_mode="batch")
    released.load_state_dict(small.state_dict())
    batch = cloud(3, 2048, seed=5)
    batch[1, :, :3] *= 0.3
    with torch.no_grad():
        together = released(batch).features[:1]
        alone = released(batch[:1]).features
    assert (together - alone).abs().max() > 1e-2
    with torch.no_grad():  # with a single cloud both modes compute the same std
        torch.testing.assert_close(small(batch[:1]).features, alone, atol=2e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# the fused inference path equals the layer-by-layer path
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides",
    [{}, {"std_mode": "batch"}, {"pooling": "maxmean", "lga_blocks": 2, "pos_alpha": 100.0, "pos_beta": 1000.0},
     {"color_skip": True}],
)
def test_fused_inference_equals_autograd_path(overrides):
    emb = model(**overrides)
    x = cloud(2, 1100, seed=6)
    with torch.no_grad():
        fused = emb(x).features
    x.requires_grad_(True)  # forces the layer-by-layer path (eval-mode BatchNorm, same maths)
    plain = emb(x).features
    torch.testing.assert_close(fused, plain, atol=5e-5, rtol=1e-5)


def test_color_skip_after_the_projector_hands_the_patch_colors_on_and_adds_them_in_the_llm_width():
    from enel.model.embedding import PointProjector

    x = cloud(2, 700, seed=14)
    plain, late = model(seed=5), model(seed=5, color_skip=True)
    assert not any("color" in name for name, _ in late.named_parameters())  # its weights live in the projector
    with torch.no_grad():
        a, out = plain(x), late(x)
    torch.testing.assert_close(out.features, a.features)  # the embedding's own output is left alone
    assert a.colors is None
    np.testing.assert_allclose(out.colors.numpy(), _patch_rgb_brute_force(x, out.centres), rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)
    proj = PointProjector(late.cfg.output_dim, [32], 24, color=True)
    with torch.no_grad():
        y, base = proj(out.features, out.colors), proj(out.features)
    w, b = proj.color.weight.detach().numpy(), proj.color.bias.detach().numpy()
    np.testing.assert_allclose(y[:, 0].numpy(), base[:, 0].numpy())  # the class token has no patch
    np.testing.assert_allclose(y[:, 1:].numpy(), base[:, 1:].numpy() + out.colors.numpy() @ w.T + b,
                               rtol=1e-5, atol=1e-6)


def _patch_rgb_brute_force(x: torch.Tensor, centres: torch.Tensor, k: int = 16) -> np.ndarray:
    """Mean rgb of the k input points nearest each centre, minus 0.5, by numpy distances: ``(B, G, 3)``."""
    pts, c = x.numpy().astype(np.float64), centres.numpy().astype(np.float64)
    d = ((c[:, :, None, :] - pts[:, None, :, :3]) ** 2).sum(-1)  # (B, G, N)
    near = np.argsort(d, axis=-1, kind="stable")[..., :k]
    return np.take_along_axis(pts[:, None, :, 3:], near[..., None], axis=2).mean(axis=2) - 0.5


def test_the_color_skip_needs_color():
    with pytest.raises(ConfigError, match="color_skip=True needs use_color=True"):
        PointEmbeddingConfig.small(use_color=False, color_skip=True)


@pytest.mark.parametrize("data, match", [
    ({"class_token": "pooled"}, "class_token='pooled'.*71.1 %"),
    ({"color_token": True}, "color_token=True.*75 %"),
    ({"color_skip": True, "color_skip_at": "features"}, "color_skip_at='features'.*63 %"),
])
def test_a_removed_option_left_on_is_refused_with_the_reason_and_the_fix(data, match):
    with pytest.raises(ConfigError, match=match) as err:
        PointEmbeddingConfig.from_dict(data)
    assert "removed after enel 0.1.0" in str(err.value) and "retrain without it" in str(err.value)


def test_a_removed_option_left_off_loads():
    off = {"class_token": "learned", "color_token": False, "color_skip_at": "features", "color_skip": False}
    assert PointEmbeddingConfig.from_dict(off) == PointEmbeddingConfig()
    skip = PointEmbeddingConfig.from_dict({"color_skip": True, "color_skip_at": "llm"})  # what the skip is now
    assert skip == PointEmbeddingConfig(color_skip=True)


PLAIN_KERNELS = {  # what each kernel of embedding_fused computes, as plain torch
    "std_per_sample": lambda t: t.float().flatten(1).std(dim=1),
    "std_all": lambda t: t.float().std(),
    "max_over_neighbours": lambda y: y.amax(dim=-2),
    "add_encoding": lambda y, rel, beta: y + triangular_encoding(rel, y.shape[-1], 1.0, beta).to(y.dtype),
}


@pytest.mark.parametrize("overrides", [{}, {"std_mode": "batch", "pooling": "maxmean", "lga_blocks": 2}])
def test_training_with_the_kernels_equals_training_with_plain_torch(monkeypatch, overrides):
    """The custom autograd functions and the matmul encoding give the layer-by-layer path the outputs and the
    gradients of the plain torch expressions they stand for."""
    x = cloud(2, 700, seed=15).double()  # fp64 features (the coordinates stay fp32): no near-tie of a max flips
    weights = torch.randn(2, 129, 384, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def step():
        emb = model(seed=7, **overrides).double().train()
        points = x.clone().requires_grad_(True)
        features = emb(points).features
        (features * weights).sum().backward()
        grads = {name: p.grad for name, p in emb.named_parameters()}
        return features.detach(), grads, points.grad

    fast = step()
    for name, plain in PLAIN_KERNELS.items():
        monkeypatch.setattr(embedding_fused, name, plain)
    reference = step()
    # the same to the rounding of the fp32 coordinates' std (measured: 3e-7 of the largest value, 1e-5 for the
    # gradients); a wrong gradient is off by the size of the gradient
    def close(a, b, tol):
        return float((a - b).abs().max()) <= tol * float(b.abs().max())

    assert close(fast[0], reference[0], 1e-5)
    assert fast[1].keys() == reference[1].keys()
    scale = max(float(g.abs().max()) for g in reference[1].values())  # biases before a BatchNorm have grad 0
    for name in fast[1]:
        assert float((fast[1][name] - reference[1][name]).abs().max()) <= 1e-4 * scale, name
    assert close(fast[2], reference[2], 1e-4)


# ----------------------------------------------------------------------------------------------------------
# dtypes
# ----------------------------------------------------------------------------------------------------------
def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().float() - b.float()).norm() / b.float().norm())


def test_bf16_model_forward(small):
    x = cloud(2, 1024, seed=7)
    with torch.no_grad():
        ref = small(x).features
    half = model()
    half.load_state_dict(small.state_dict())
    half = half.to(torch.bfloat16)
    with torch.no_grad():
        fused = half(x).features
    plain = half(x.requires_grad_(True)).features
    for out in (fused, plain):
        assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
        assert _rel_err(out, ref) < 0.05


def test_autocast_bf16_forward_and_backward(small):
    x = cloud(2, 1024, seed=8)
    with torch.no_grad():
        ref = small(x).features
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fused = small(x).features
    assert fused.dtype == torch.bfloat16 and _rel_err(fused, ref) < 0.05
    trainer = model()
    trainer.load_state_dict(small.state_dict())
    trainer.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = trainer(x).features
    assert out.dtype == torch.bfloat16
    out.float().square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainer.parameters())


# ----------------------------------------------------------------------------------------------------------
# gradients, colour, random start
# ----------------------------------------------------------------------------------------------------------
def test_gradients_reach_every_parameter():
    emb = model(warm=False).train()
    out = emb(cloud(2, 1024, seed=9))
    (out.features.square().mean() + out.features[:, 1:].mean()).backward()
    for name, p in emb.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name
    assert not out.centres.requires_grad and not out.patches.requires_grad


def test_xyz_only_model():
    emb = model(use_color=False)
    assert emb.cfg.in_channels == 3 and emb.raw_embed.linear.weight.shape == (48, 3)
    x = cloud(2, 1024, seed=10)
    with torch.no_grad():
        from_xyz = emb(x[..., :3])
        from_xyzrgb = emb(x)  # colour is ignored
    assert from_xyz.features.shape == (2, 129, 384)
    assert torch.equal(from_xyz.features, from_xyzrgb.features)
    with pytest.raises(ValueError, match="use_color=True"):
        model()(x[..., :3])
    with pytest.raises(ValueError, match="channels"):
        emb(x[..., :4])
    with pytest.raises(ValueError, match=r"\(B, N, C\)"):
        emb(x[0])


def test_random_fps_start_in_training_is_seeded():
    emb = model(fps_random_start=True).train()
    x = cloud(2, 600, seed=11)
    a = emb(x, generator=torch.Generator().manual_seed(1)).centres
    b = emb(x, generator=torch.Generator().manual_seed(1)).centres
    c = emb(x, generator=torch.Generator().manual_seed(2)).centres
    assert torch.equal(a, b) and not torch.equal(a, c)
    emb.eval()
    with torch.no_grad():  # evaluation always starts at point 0
        assert torch.equal(emb(x, generator=torch.Generator().manual_seed(1)).centres, emb(x).centres)


def test_projector():
    proj = PointProjector(384, [576, 576], 576)
    assert proj(torch.zeros(2, 129, 384)).shape == (2, 129, 576)
    assert count_parameters(proj) == 384 * 576 + 576 + 2 * (576 * 576 + 576)


# ----------------------------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides, err",
    [
        ({"num_stages": 0}, "num_stages"),
        ({"dim_expansion": 3}, "dim_expansion"),
        ({"embed_dim": 50}, "divisible by 6"),
        ({"embed_dim": 0}, "embed_dim"),
        ({"pooling": "mean"}, "pooling"),
        ({"std_mode": "global"}, "std_mode"),
        ({"group_size": 1}, "group_size"),
        ({"group_size": 300}, "exceeds"),
        ({"input_points": 4}, "no centres"),
        ({"lga_blocks": -1}, "lga_blocks"),
        ({"projector_hidden": [0]}, "projector_hidden"),
    ],
)
def test_config_validation(overrides, err):
    with pytest.raises(ConfigError, match=err):  # refused where the config is built, before any module sees it
        PointEmbeddingConfig.small(**overrides)
    with pytest.raises(ConfigError, match=err):
        PointEmbeddingConfig.from_dict({**PointEmbeddingConfig.small().to_dict(), **overrides})


def test_config_round_trip_and_presets():
    cfg = PointEmbeddingConfig.small()
    assert PointEmbeddingConfig.from_dict(cfg.to_dict()) == cfg
    assert PointEmbeddingConfig.preset("paper") == PointEmbeddingConfig.paper()
    with pytest.raises(ConfigError, match="unknown point embedding field"):
        PointEmbeddingConfig.from_dict({"embed_dims": 3})
    with pytest.raises(ConfigError, match="unknown point embedding preset"):
        PointEmbeddingConfig.preset("huge")


def test_flops_equals_a_hand_count():
    cfg = PointEmbeddingConfig(
        embed_dim=6, num_stages=2, group_size=4, input_points=32, lga_blocks=1, projector_hidden=[10], num_points=50
    )
    assert cfg.stage_centres == [16, 8] and cfg.stage_dims == [12, 24]
    raw = 2 * 50 * 6 * 6  # 3600
    stage1 = 2 * (16 * 4) * 12 * 12 + 2 * (16 * 4) * (12 * 6 + 6 * 12)  # linear1 + bottleneck = 36864
    stage2 = 2 * (8 * 4) * 24 * 24 + 2 * (8 * 4) * (24 * 12 + 12 * 24)  # 73728
    assert cfg.flops() == raw + stage1 + stage2 == 114192
    assert cfg.flops(10) == cfg.flops(16) == 2 * 16 * 6 * 6 + stage1 + stage2  # padded to min_points = 16
    assert cfg.projector_flops(7) == 2 * 9 * (24 * 10 + 10 * 7)


def linear_flops(counter: FlopCounterMode) -> int:
    """FLOPs of the counted ``mm`` / ``addmm`` calls (the std's blocked dot products run as ``bmm``)."""
    counts = counter.get_flop_counts()["Global"]
    return sum(v for op, v in counts.items() if str(op).split(".")[-1] in ("mm", "addmm"))


def test_flops_match_the_executed_matmuls(monkeypatch):
    """flops() counts the released layers; the forward skips the redundant centre half of linear1 and adds
    the encoding as a K = 6 matmul."""
    cfg = PointEmbeddingConfig.small()
    emb = PointTokenEmbedding(cfg).train()
    x = cloud(1, 2048, seed=12)
    with FlopCounterMode(display=False) as counter:
        emb(x)
    assert linear_flops(counter) > 0
    stages = list(zip(cfg.stage_centres, cfg.stage_dims))
    saved = sum(2 * g * (cfg.group_size - 1) * (d // 2) * d for g, d in stages)
    encoding = sum(2 * g * cfg.group_size * 6 * d for g, d in stages)
    assert linear_flops(counter) == cfg.flops(2048) - saved + encoding
    # the fused inference path runs the same matmuls (counted here without the oneDNN fused calls, which the
    # flop counter does not know; it does not count the in-place addmm_ of the encoding either)
    monkeypatch.setattr(embedding_fused, "_MKLDNN_OK", {torch.float32: False})
    emb.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        emb(x)
    assert linear_flops(counter) == cfg.flops(2048) - saved


def test_std_from_sums_matches_torch_std_and_its_gradient():
    x = torch.randn(3, 5, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _StdPerRow.apply(t.reshape(3, -1)), (x,))
    big = torch.relu(torch.randn(2, 512 * 81 * 3, generator=torch.Generator().manual_seed(14))) * 2 - 0.3
    torch.testing.assert_close(std_per_sample(big), big.double().std(dim=1).float(), rtol=1e-6, atol=0)
    odd = torch.randn(2, 1001, generator=torch.Generator().manual_seed(15))  # no 256-value blocks
    torch.testing.assert_close(std_per_sample(odd), odd.std(dim=1), rtol=1e-6, atol=0)
    flat = torch.zeros(2, 4096, requires_grad=True)  # a degenerate neighbourhood: finite, zero gradient
    std_per_sample(flat).sum().backward()
    assert torch.equal(flat.grad, torch.zeros_like(flat))


# ----------------------------------------------------------------------------------------------------------
# positional encoding
# ----------------------------------------------------------------------------------------------------------
def pose_geo(knn_xyz: torch.Tensor, out_dim: int, alpha: float, beta: float) -> torch.Tensor:
    """Point-PN's ``PosE_Geo`` position embedding, written out: ``(B, 3, G, K) -> (B, out_dim, G, K)``."""
    b, in_dim, g, k = knn_xyz.shape
    feat_dim = out_dim // (in_dim * 2)
    feat_range = torch.arange(feat_dim).float()
    dim_embed = torch.pow(alpha, feat_range / feat_dim)
    div_embed = torch.div(beta * knn_xyz.unsqueeze(-1), dim_embed)
    sin_embed, cos_embed = torch.sin(div_embed), torch.cos(div_embed)
    position_embed = torch.stack([sin_embed, cos_embed], dim=5).flatten(4)
    return position_embed.permute(0, 1, 4, 2, 3).reshape(b, out_dim, g, k)


@pytest.mark.parametrize("alpha, beta", [(1.0, 1.0), (100.0, 1000.0), (1.0, 1000.0)])
def test_triangular_encoding_matches_pose_geo(alpha, beta):
    offsets = torch.randn(2, 5, 7, 3, generator=torch.Generator().manual_seed(13))  # (B, G, K, 3)
    ours = triangular_encoding(offsets, 24, alpha, beta)  # (B, G, K, 24)
    ref = pose_geo(offsets.permute(0, 3, 1, 2), 24, alpha, beta)  # (B, 24, G, K)
    torch.testing.assert_close(ours, ref.permute(0, 2, 3, 1), atol=1e-5, rtol=1e-5)
    if alpha == 1.0:  # the K = 6 matmul the model uses for the released alpha equals adding the encoding
        feats = torch.randn(2, 5, 7, 24)
        torch.testing.assert_close(add_encoding(feats, offsets, beta), feats + ours)
    with pytest.raises(ValueError, match="divisible by 6"):
        triangular_encoding(offsets, 20, alpha, beta)


def test_released_encoding_is_plain_sin_cos():
    offsets = torch.tensor([[0.5, -1.0, 2.0]])
    pe = triangular_encoding(offsets, 12, 1.0, 1.0)
    expected = [math.sin(0.5), math.cos(0.5)] * 2 + [math.sin(-1.0), math.cos(-1.0)] * 2
    expected += [math.sin(2.0), math.cos(2.0)] * 2
    np.testing.assert_allclose(pe[0].numpy(), expected, rtol=1e-6)
