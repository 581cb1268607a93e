"""The PointLLM-style encoder baseline (enel.model.baseline): tokens, PointLLM's checkpoint names, the frozen
encoder in stage 1, save / load / generate, and masked point modelling.

References are independent of the module: brute-force kNN over all squared distances, Point-BERT's convolution layout
for the patch encoder, the parameter table of checkpoint-layouts.md §1.4 written out by hand.
"""

from __future__ import annotations

import pytest
import torch

from conftest import labelled_batch
from enel.data.conversation import build_prompt, tokenize_prompts
from enel.errors import ConfigError
from enel.model import EnelConfig, EnelForCausalLM
from enel.model.baseline import FeatureStandardizer, MiniPointNet, PointBertEncoder, pretrain_mae
from enel.model.configuration_enel import PointBertConfig

ENCODER = {"preset": "small", "num_group": 32, "group_size": 8, "trans_dim": 48, "depth": 2, "num_heads": 2,
           "projector_hidden": [64]}
POINTS = {"num_points": 1024}


def make(**kw):
    model, tok = EnelForCausalLM.from_backbone("tiny-llama", point_config=POINTS, point_encoder="pointbert",
                                               encoder_config=ENCODER, seed=0, **kw)
    return model.eval(), tok


def clouds(n, points=1024, seed=0):
    g = torch.Generator().manual_seed(seed)
    pc = torch.rand(n, points, 6, generator=g)
    pc[..., :3] = pc[..., :3] * 2 - 1
    return pc


def prompts(tok, model, questions):
    texts = [build_prompt(tok, q, template="chat", num_point_tokens=model.config.num_point_tokens) for q in questions]
    return tokenize_prompts(tok, texts, "chat")


@pytest.fixture(scope="module")
def tiny():
    return make()


# ---- tokens -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_points", [1024, 8192])
def test_the_paper_size_encoder_gives_513_tokens_of_384_at_1k_and_8k_points(n_points):
    torch.manual_seed(0)
    cfg = PointBertConfig.from_spec("paper")
    encoder = PointBertEncoder(cfg, 6).eval()
    pc = clouds(1, n_points)
    with torch.no_grad():
        tokens = encoder(pc)
    assert cfg.num_tokens == 513
    assert tokens.features.shape == (1, 513, 384)
    assert tokens.centres.shape == (1, 512, 3) and tokens.patches.shape == (1, 512, 32, 3)
    assert torch.isfinite(tokens.features).all()
    # the centres are distinct input points; each patch holds its centre's 32 nearest points (brute force)
    xyz = pc[0, :, :3]
    d = (tokens.centres[0, :, None] - xyz[None]).pow(2).sum(-1)  # exact squared distances (G, N)
    assert torch.all(d.min(dim=1).values == 0)
    assert len({tuple(c) for c in tokens.centres[0].tolist()}) == 512
    some = torch.arange(0, 512, 37)
    expected = xyz[d[some].topk(32, largest=False).indices]  # (S, 32, 3)
    got = tokens.patches[0, some]
    for e, g in zip(expected, got):  # the same sets of points (order among ties aside)
        assert torch.allclose(torch.sort(e.sum(-1)).values, torch.sort(g.sum(-1)).values, atol=1e-6)


@pytest.mark.parametrize("n_points", [1024, 8192])
def test_the_token_count_follows_the_groups_through_the_whole_model(tiny, n_points):
    model, tok = tiny
    enc = prompts(tok, model, ["What is this?"])
    assert model.config.num_point_tokens == 33
    with torch.no_grad():
        tokens = model.model.embed_points(clouds(1, n_points))
        out = model(**enc, point_clouds=clouds(1, n_points))
    assert tokens.features.shape == (1, 33, 48)
    assert out.logits.shape[:2] == enc["input_ids"].shape
    ids = model.model.point_token_ids
    assert int((enc["input_ids"] == ids.patch).sum()) == 33


def test_the_patch_encoder_is_point_berts_convolutions():
    torch.manual_seed(0)
    net = MiniPointNet(6, 40).train()
    for bn in (net.first_conv[1], net.second_conv[1]):  # non-trivial statistics for eval mode
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    net.eval()
    patches = torch.randn(5, 16, 6)

    def reference(x):  # dvae.py Encoder.forward, on (R, C, k)
        f = net.first_conv(x.transpose(2, 1))
        g = torch.max(f, dim=2, keepdim=True)[0]
        f = net.second_conv(torch.cat([g.expand(-1, -1, x.shape[1]), f], dim=1))
        return torch.max(f, dim=2)[0]

    with torch.no_grad():
        torch.testing.assert_close(net(patches), reference(patches), rtol=1e-5, atol=1e-5)


def test_the_attention_is_point_berts():
    torch.manual_seed(0)
    encoder = PointBertEncoder(PointBertConfig.from_spec(ENCODER), 6).eval()
    attn = encoder.blocks.blocks[0].attn
    x = torch.randn(2, 7, 48)
    b, t, d = x.shape
    qkv = attn.qkv(x).reshape(b, t, 3, 2, d // 2).permute(2, 0, 3, 1, 4)  # point_encoder.py l.45
    q, k, v = qkv[0], qkv[1], qkv[2]
    a = (q @ k.transpose(-2, -1)) * (d // 2) ** -0.5
    ref = attn.proj((a.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, t, d))
    with torch.no_grad():
        torch.testing.assert_close(attn(x), ref, rtol=1e-5, atol=1e-5)


# ---- PointLLM's checkpoint ----------------------------------------------------------------------------------
def pointllm_table(hidden: int) -> dict[str, tuple[int, ...]]:
    """checkpoint-layouts.md §1.4, ``model.point_backbone.*`` and ``model.point_proj.*`` of PointLLM v1.2."""
    t = {"model.point_backbone.cls_token": (1, 1, 384), "model.point_backbone.cls_pos": (1, 1, 384)}
    enc = "model.point_backbone.encoder."
    t |= {enc + "first_conv.0.weight": (128, 6, 1), enc + "first_conv.0.bias": (128,)}
    for s in ("weight", "bias", "running_mean", "running_var"):
        t[enc + f"first_conv.1.{s}"] = (128,)
        t[enc + f"second_conv.1.{s}"] = (512,)
    t[enc + "first_conv.1.num_batches_tracked"] = ()
    t[enc + "second_conv.1.num_batches_tracked"] = ()
    t |= {enc + "first_conv.3.weight": (256, 128, 1), enc + "first_conv.3.bias": (256,),
          enc + "second_conv.0.weight": (512, 512, 1), enc + "second_conv.0.bias": (512,),
          enc + "second_conv.3.weight": (256, 512, 1), enc + "second_conv.3.bias": (256,)}
    pb = "model.point_backbone."
    t |= {pb + "reduce_dim.weight": (384, 256), pb + "reduce_dim.bias": (384,),
          pb + "pos_embed.0.weight": (128, 3), pb + "pos_embed.0.bias": (128,),
          pb + "pos_embed.2.weight": (384, 128), pb + "pos_embed.2.bias": (384,),
          pb + "norm.weight": (384,), pb + "norm.bias": (384,)}
    for k in range(12):
        b = f"{pb}blocks.blocks.{k}."
        t |= {b + "norm1.weight": (384,), b + "norm1.bias": (384,), b + "norm2.weight": (384,),
              b + "norm2.bias": (384,), b + "attn.qkv.weight": (1152, 384), b + "attn.proj.weight": (384, 384),
              b + "attn.proj.bias": (384,), b + "mlp.fc1.weight": (1536, 384), b + "mlp.fc1.bias": (1536,),
              b + "mlp.fc2.weight": (384, 1536), b + "mlp.fc2.bias": (384,)}
    pp = "model.point_proj."
    t |= {pp + "0.weight": (1024, 384), pp + "0.bias": (1024,), pp + "2.weight": (2048, 1024), pp + "2.bias": (2048,),
          pp + "4.weight": (hidden, 2048), pp + "4.bias": (hidden,)}
    return t


def test_pointllm_checkpoint_names_and_shapes_load_strictly():
    model, _ = EnelForCausalLM.from_backbone("tiny-llama", point_config=POINTS, point_encoder="pointbert",
                                             encoder_config="paper", seed=0)
    table = pointllm_table(model.config.text_config.hidden_size)
    assert len([k for k in table if ".point_backbone." in k]) == 160  # the doc's count check
    g = torch.Generator().manual_seed(1)
    state = {k: (torch.randint(0, 9, s, generator=g) if k.endswith("num_batches_tracked") else torch.randn(s, generator=g))
             for k, s in table.items()}
    mine = {k for k in model.state_dict() if k.startswith(("model.point_backbone.", "model.point_proj."))}
    assert mine == set(table)
    for prefix, module in (("model.point_backbone.", model.model.point_backbone), ("model.point_proj.", model.model.point_proj)):
        module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)
    loaded = model.state_dict()
    for k, v in state.items():
        assert torch.equal(loaded[k], v.to(loaded[k].dtype)), k


# ---- configuration ------------------------------------------------------------------------------------------
def test_the_config_says_which_point_path_a_model_uses(tiny):
    model, _ = tiny
    assert model.config.point_encoder == "pointbert"
    assert model.config.encoder.num_group == 32
    plain = EnelConfig()
    assert plain.point_encoder == "embedding" and plain.encoder_config is None
    with pytest.raises(ConfigError, match="point_encoder"):
        EnelConfig(point_encoder="pointnet")
    with pytest.raises(ConfigError, match="pointbert"):
        EnelConfig(encoder_config={"num_group": 8})
    with pytest.raises(ConfigError, match="caption loss"):
        make(objective_config={"name": "hybrid"})
    assert not hasattr(model.model, "point_embedding") and not hasattr(model.model, "point_projector")


# ---- stage 1 ------------------------------------------------------------------------------------------------
def test_stage1_freezes_the_encoder_and_trains_the_projector():
    from enel.train.freezing import apply_stage, classify_parameters
    model, tok = make()
    report = apply_stage(model, 1, trainable_layers=1)
    assert report.groups["point_encoder"][0] == 0 and report.groups["projector"][0] == report.groups["projector"][1]
    assert {n for n, _, _ in classify_parameters(model)["point_encoder"]} == {
        n for n, _ in model.named_parameters() if n.startswith("model.point_backbone.")}
    model.train()
    bn = model.model.point_backbone.encoder.first_conv[1]
    before = bn.running_mean.clone()
    ids, mask, labels = labelled_batch(tok, model.config.num_point_tokens, ["A red chair.", "A blue table."])
    out = model(input_ids=ids, attention_mask=mask, labels=labels, point_clouds=clouds(2))
    out.loss.backward()
    for name, p in model.model.point_backbone.named_parameters():
        assert p.grad is None, name
    for name, p in model.model.point_proj.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert model.model.language_model.layers[0].self_attn.q_proj.weight.grad is not None
    assert torch.equal(bn.running_mean, before)  # kept in eval mode: BatchNorm statistics untouched
    assert not model.model.point_backbone.training


# ---- the standardisation between the frozen encoder and the projector ------------------------------------------
def test_the_feature_standardizer_is_the_identity_until_fitted_then_standardizes_each_channel():
    norm = FeatureStandardizer(5)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, 5, generator=g) * torch.tensor([1.0, 10.0, 0.1, 3.0, 0.02]) + torch.arange(5.0) * 4
    assert torch.equal(norm(x), x)
    norm.fit(x)
    flat = x.reshape(-1, 5).double().numpy()
    mean, std = flat.mean(0), flat.std(0, ddof=1)  # numpy, over every cloud and token
    torch.testing.assert_close(norm.mean, torch.from_numpy(mean).float())
    torch.testing.assert_close(norm.std, torch.from_numpy(std).float())
    y = norm(x).reshape(-1, 5)
    torch.testing.assert_close(y.mean(0), torch.zeros(5), atol=1e-4, rtol=0)
    torch.testing.assert_close(y.std(0), torch.ones(5), atol=1e-4, rtol=0)


def test_the_projector_reads_the_standardized_encoder_tokens():
    model, _ = make()
    norm = model.model.point_feature_norm
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        norm.mean.copy_(torch.randn(norm.mean.shape, generator=g))
        norm.std.copy_(torch.rand(norm.std.shape, generator=g) + 0.5)
    pc = clouds(2, seed=1)
    with torch.no_grad():
        raw = model.model.point_backbone(pc).features
        fed = model.model.embed_points(pc).features
        listed = model.model.embed_points([pc[0], pc[1]]).features
    torch.testing.assert_close(fed, (raw - norm.mean) / norm.std)
    torch.testing.assert_close(listed, fed)


# ---- save, load, generate -----------------------------------------------------------------------------------
def test_a_baseline_model_saves_loads_and_generates_the_same(tmp_path):
    from enel.model.saving import load_model, save_model

    model, tok = make()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():  # as after pre-training: no buffer or token left at its initial value
        for name, t in model.model.point_backbone.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.is_floating_point():
                t.add_(0.1 * torch.randn(t.shape, generator=g))
        model.model.point_feature_norm.fit(torch.randn(4, 3, model.config.encoder.trans_dim, generator=g))
    enc = prompts(tok, model, ["What is this?"])
    pc = clouds(1, seed=3)
    save_model(model, tok, tmp_path / "m")
    again, _ = load_model(tmp_path / "m")
    assert again.config.point_encoder == "pointbert" and again.config.encoder == model.config.encoder
    with torch.no_grad():
        a = model(**enc, point_clouds=pc).logits
        b = again(**enc, point_clouds=pc).logits
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    gen = dict(point_clouds=pc, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    assert torch.equal(model.generate(**enc, **gen), again.generate(**enc, **gen))


# ---- masked point modelling ---------------------------------------------------------------------------------
def test_masked_point_modelling_lowers_its_loss_and_restores_the_encoder():
    torch.manual_seed(0)
    cfg = PointBertConfig.from_spec({**ENCODER, "drop_path_rate": 0.0})
    encoder = PointBertEncoder(cfg, 6).eval().requires_grad_(False)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    batch = clouds(2, 256, seed=5)
    losses = pretrain_mae(encoder, batch, steps=40, batch_size=2, lr=2e-3, seed=0)
    assert len(losses) == 40
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.6 * first, (first, last)
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
    changed = [k for k, v in encoder.state_dict().items() if not torch.equal(v, before[k])]
    assert "cls_token" in changed and "encoder.first_conv.0.weight" in changed and "blocks.blocks.0.attn.qkv.weight" in changed
