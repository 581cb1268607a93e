"""Freezing rules of stages 1 and 2 and the optimiser's parameter groups (enel-method.md §2.1, §4).

The expected trainable sets are written out here by parameter *name*, independently of how
``enel.train.freezing`` classifies parameters, and checked against the gradients of a real backward pass.
"""

from __future__ import annotations

import json
import math
import time

import pytest
import torch

from conftest import labelled_batch
from enel.errors import ConfigError
from enel.model import EnelForCausalLM
from enel.model.configuration_enel import PointEmbeddingConfig
from enel.model.embedding import PointTokenEmbedding
from enel.model.objectives import EmbeddingTeacher
from enel.train.freezing import FreezeReport, apply_stage, parameter_groups, trainable_layer_indices

POINTS = {"embed_dim": 12, "group_size": 8, "projector_hidden": [64], "num_points": 256, "input_points": 256}
N_TOKENS = 33
TINY_LAYERS = 4



def make_clouds(batch: int, n_points: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    pc = torch.rand(batch, n_points, 6, generator=g)
    pc[..., :3] = pc[..., :3] * 2 - 1
    pc[..., 3:] = (torch.rand(batch, 1, 3, generator=g) + 0.1 * pc[..., 3:]).clamp(0, 1)
    return pc


def build(objective: dict, aggregation: dict | None = None):
    objective = dict(objective)
    if objective.get("name") == "distillation":
        objective["teacher_dim"] = PointEmbeddingConfig.from_dict(POINTS).output_dim
    model, tok = EnelForCausalLM.from_backbone("tiny-llama", point_config=POINTS, objective_config=objective,
                                               aggregation_config=aggregation, seed=0)
    if objective.get("name") == "distillation":
        torch.manual_seed(1)
        model.set_distillation_teacher(EmbeddingTeacher(PointTokenEmbedding(PointEmbeddingConfig.from_dict(POINTS))))
    return model, tok


def backward(model, tok, batch: int = 2):
    ids, mask, labels = labelled_batch(tok, N_TOKENS, ["A red chair.", "A small blue table.", "A lamp.", "A car."][:batch])
    model.train()
    out = model(input_ids=ids, attention_mask=mask, point_clouds=make_clouds(batch, 256), labels=labels,
                point_generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    return out


def expected_stage1(name: str, layers: list[int], train_embedding: bool) -> bool:
    """The stage-1 rule, by parameter name."""
    if name.startswith("model.point_embedding."):
        return train_embedding
    if name.startswith(("model.point_projector.", "model.point_pos_embed.", "model.objectives.")) or \
            name == "model.point_special_embeds":
        return True
    if name.startswith("model.language_model.layers."):
        return int(name.split(".")[3]) in layers
    return False  # embed_tokens (= tied lm_head), the other layers, the final norm


def assert_gradients_exactly_on_trainable_set(model, expected) -> None:
    """Trainable parameters: flagged and with a non-zero gradient; the rest: not flagged, no gradient."""
    for name, p in model.named_parameters():
        want = expected(name)
        assert p.requires_grad is want, f"{name}: requires_grad {p.requires_grad}, expected {want}"
        if want:
            assert p.grad is not None and float(p.grad.abs().sum()) > 0, f"{name} trainable but no gradient"
        else:
            assert p.grad is None or float(p.grad.abs().sum()) == 0, f"{name} frozen but has a gradient"


# ---- stage 1 -------------------------------------------------------------------------------------------
STAGE1 = [
    ({"name": "hybrid"}, 4, True),  # the default: K = 4 (= every layer of the tiny backbone)
    ({"name": "hybrid"}, 2, True),
    ({"name": "hybrid", "per_layer_pe": True}, 1, True),
    ({"name": "hybrid"}, 2, False),  # frozen token embedding
    ({"name": "masked", "masked_target": "patch"}, 2, True),
    ({"name": "masked", "masked_target": "feature"}, -1, True),  # the last layer only
    ({"name": "reconstruction", "recon_target": "patch"}, -2, True),
    ({"name": "reconstruction", "recon_target": "feature"}, 3, True),
    ({"name": "contrastive"}, 2, True),
    ({"name": "distillation"}, 2, True),
    ({"name": "none"}, 0, True),  # PointLLM's stage 1: no decoder layer trains
]


@pytest.mark.parametrize(
    "objective,k,train_embedding", STAGE1,
    ids=[f"{'-'.join(str(v) for v in o.values())}-K{k}{'' if e else '-frozen-embedding'}" for o, k, e in STAGE1],
)
def test_stage1_gradients_are_nonzero_exactly_on_the_trainable_set(objective, k, train_embedding):
    model, tok = build(objective)
    report = apply_stage(model, 1, trainable_layers=k, train_embedding=train_embedding)
    layers = list(range(k)) if k >= 0 else list(range(TINY_LAYERS + k, TINY_LAYERS))
    assert report.trainable_layers == layers
    backward(model, tok, batch=4 if objective["name"] == "contrastive" else 2)
    assert_gradients_exactly_on_trainable_set(model, lambda n: expected_stage1(n, layers, train_embedding))


def test_stage1_keeps_the_tied_vocabulary_and_lm_head_frozen():
    model, _ = build({"name": "hybrid"})
    embed = model.model.language_model.embed_tokens.weight
    assert model.lm_head.weight is embed  # tied for the tiny backbones (and SmolLM2)
    apply_stage(model, 1)
    assert not embed.requires_grad and not model.lm_head.weight.requires_grad
    assert model.model.point_special_embeds.requires_grad  # the point tokens have their own embeddings
    apply_stage(model, 2)
    assert embed.requires_grad and model.lm_head.weight.requires_grad


def test_a_frozen_point_embedding_stays_in_eval_mode():
    model, tok = build({"name": "hybrid"})
    apply_stage(model, 1, train_embedding=False)
    bn = model.model.point_embedding.raw_embed.norm
    before = bn.running_mean.clone()
    backward(model, tok)
    assert not model.model.point_embedding.training  # switched by the hook on every forward
    assert torch.equal(bn.running_mean, before)  # BatchNorm statistics untouched
    apply_stage(model, 1, train_embedding=True)  # and back: the hook is gone
    backward(model, tok)
    assert model.model.point_embedding.training
    assert not torch.equal(bn.running_mean, before)


def test_trainable_layer_counts_and_refusals():
    assert trainable_layer_indices(30, 4) == [0, 1, 2, 3]
    assert trainable_layer_indices(30, -2) == [28, 29]
    assert trainable_layer_indices(30, 0) == []
    assert trainable_layer_indices(4, 4) == [0, 1, 2, 3]
    for bad in (5, -5, 2.0, True, "4"):
        with pytest.raises(ConfigError):
            trainable_layer_indices(4, bad)
    model, _ = build({"name": "hybrid"})
    with pytest.raises(ConfigError, match="only 4 decoder layers"):
        apply_stage(model, 1, trainable_layers=8)
    for stage in (0, 3, "1"):
        with pytest.raises(ConfigError, match="stage must be"):
            apply_stage(model, stage)
    with pytest.raises(ConfigError, match="ENEL model"):
        apply_stage(torch.nn.Linear(2, 2), 1)


def test_stage1_rules_on_a_qwen2_backbone_and_on_the_bare_enel_model():
    model, _ = EnelForCausalLM.from_backbone("tiny-qwen2", point_config=POINTS, objective_config={"name": "hybrid"},
                                             seed=0)
    report = apply_stage(model, 1, trainable_layers=2)
    for name, p in model.named_parameters():
        assert p.requires_grad is expected_stage1(name, [0, 1], True), name
    assert any(n.endswith("q_proj.bias") for n, p in model.named_parameters() if p.requires_grad)  # Qwen2 biases
    # the base model (without lm_head) follows the same rules
    base_report = apply_stage(model.model, 1, trainable_layers=2)
    assert base_report.groups == report.groups


# ---- stage 2 -------------------------------------------------------------------------------------------
def test_stage2_trains_every_llm_weight_and_the_aggregation():
    aggregation = {"enabled": True, "grouping": "fps", "reference_layers": TINY_LAYERS, "attn_dim": 16,
                   "attn_heads": 2, "schedule": [{"aggregate_after": [1], "propagate_after": [2]}]}
    model, tok = build({"name": "none"}, aggregation)
    with torch.no_grad():  # the gates start closed (tanh 0 = 0): open them so the attention gets gradient
        for attn in model.model.aggregation.attn:
            attn.gate.fill_(0.5)
    report = apply_stage(model, 2, trainable_layers=2)  # K has no meaning in stage 2
    assert report.trainable_layers == [0, 1, 2, 3]
    assert report.trainable == report.total
    backward(model, tok)
    assert_gradients_exactly_on_trainable_set(model, lambda n: True)


def test_stage2_freezes_leftover_objective_heads():
    model, tok = build({"name": "hybrid"})
    apply_stage(model, 2)
    backward(model, tok)
    assert_gradients_exactly_on_trainable_set(model, lambda n: not n.startswith("model.objectives."))


def test_stage2_can_freeze_the_point_embedding():
    model, tok = build({"name": "none"})
    apply_stage(model, 2, train_embedding=False)
    backward(model, tok)
    assert_gradients_exactly_on_trainable_set(model, lambda n: not n.startswith("model.point_embedding."))


# ---- report and optimiser groups -----------------------------------------------------------------------
def test_freeze_report_counts_by_group():
    model, _ = build({"name": "hybrid"})
    report = apply_stage(model, 1, trainable_layers=2)
    assert isinstance(report, FreezeReport)
    unique = {id(p): p for p in model.parameters()}
    assert report.total == sum(p.numel() for p in unique.values())
    assert report.trainable == sum(p.numel() for p in unique.values() if p.requires_grad)
    layers = model.model.language_model.layers
    per_layer = sum(p.numel() for p in layers[0].parameters())
    assert report.groups["llm_layers"] == (2 * per_layer, 4 * per_layer)
    assert report.groups["llm_embed_tokens"][0] == 0 and report.groups["llm_norm"][0] == 0
    assert report.groups["objectives"][0] == report.groups["objectives"][1] > 0
    text = str(report)
    assert "stage 1" in text and "1-2 of 4" in text and "point_embedding" in text
    json.dumps(report.as_dict())


def test_parameter_groups_split_new_modules_from_the_llm():
    model, _ = build({"name": "hybrid", "per_layer_pe": True})
    apply_stage(model, 1, trainable_layers=2)
    groups = parameter_groups(model, lr_new=2e-3, lr_llm=4e-4)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"new", "llm"}
    assert by_name["new"]["lr"] == 2e-3 and by_name["llm"]["lr"] == 4e-4
    names = {id(p): n for n, p in model.named_parameters()}
    llm_names = {names[id(p)] for p in by_name["llm"]["params"]}
    new_names = {names[id(p)] for p in by_name["new"]["params"]}
    assert llm_names and all(n.startswith(("model.language_model.layers.0.", "model.language_model.layers.1."))
                             for n in llm_names)
    assert all(not n.startswith("model.language_model.") for n in new_names)
    assert {"model.objectives.mask_token", "model.point_special_embeds", "model.point_pos_embed.0.weight"} <= new_names
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert llm_names | new_names == trainable and not llm_names & new_names  # each trainable tensor once
    # the optimiser takes them and steps with the right rates
    opt = torch.optim.AdamW(groups, lr=1.0)
    assert [g["lr"] for g in opt.param_groups] == [2e-3, 4e-4]


def test_parameter_groups_weight_decay_spares_biases_norms_and_learned_tokens():
    model, _ = build({"name": "hybrid"})
    apply_stage(model, 2)
    groups = {g["name"]: g for g in parameter_groups(model, lr_new=1e-3, lr_llm=1e-4, weight_decay=0.1)}
    assert set(groups) == {"new", "new_no_decay", "llm", "llm_no_decay"}
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[id(p)] for k in ("new_no_decay", "llm_no_decay") for p in groups[k]["params"]}
    decay = {names[id(p)] for k in ("new", "llm") for p in groups[k]["params"]}
    assert groups["new"]["weight_decay"] == 0.1 and groups["llm_no_decay"]["weight_decay"] == 0.0
    assert {"model.point_special_embeds", "model.point_embedding.class_token",
            "model.language_model.norm.weight"} <= no_decay
    assert "model.objectives.mask_token" not in decay | no_decay  # frozen in stage 2
    assert all(not n.endswith(("bias", "norm.weight", "layernorm.weight")) for n in decay)
    assert "model.language_model.embed_tokens.weight" in decay
    assert "model.language_model.layers.0.self_attn.q_proj.weight" in decay


def test_parameter_groups_refusals():
    model, _ = build({"name": "hybrid"})
    apply_stage(model, 1)
    for kwargs in ({"lr_new": -1.0, "lr_llm": 1e-4}, {"lr_new": 1e-3, "lr_llm": math.nan},
                   {"lr_new": 1e-3, "lr_llm": 1e-4, "weight_decay": -0.1}):
        with pytest.raises(ConfigError):
            parameter_groups(model, **kwargs)
    model.requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        parameter_groups(model, lr_new=1e-3, lr_llm=1e-4)


# ---- the real backbone -------------------------------------------------------------------------------
@pytest.mark.slow
def test_smollm2_stage1_hybrid_logs_three_loss_terms():
    """Three optimiser steps of stage 1 with the Hybrid Semantic Loss on SmolLM2-135M, bf16 autocast."""
    t0 = time.time()
    model, tok = EnelForCausalLM.from_backbone("smollm2", objective_config={"name": "hybrid"}, seed=0)
    report = apply_stage(model, 1)
    assert report.trainable_layers == [0, 1, 2, 3] and report.num_layers == 30
    n_tokens = model.config.num_point_tokens
    assert n_tokens == 129
    ids, mask, labels = labelled_batch(tok, n_tokens, ["A red wooden chair with four legs.", "A small blue table."])
    clouds = make_clouds(2, 2048)
    opt = torch.optim.AdamW(parameter_groups(model, lr_new=4e-4, lr_llm=4e-4), lr=4e-4)
    gen = torch.Generator().manual_seed(0)
    frozen_before = model.model.language_model.layers[10].mlp.up_proj.weight.clone()
    trained_before = model.model.language_model.layers[0].mlp.up_proj.weight.clone()
    model.train()
    logs = []
    for _ in range(3):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(input_ids=ids, attention_mask=mask, point_clouds=clouds, labels=labels, point_generator=gen)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        logs.append({k: float(v.detach()) for k, v in out.loss_terms.items()})
    for terms in logs:
        assert set(terms) == {"loss_ce", "loss_mask", "loss_recon"}
        assert all(math.isfinite(v) for v in terms.values()), terms
    assert torch.equal(model.model.language_model.layers[10].mlp.up_proj.weight, frozen_before)
    assert not torch.equal(model.model.language_model.layers[0].mlp.up_proj.weight, trained_before)
    print(f"smollm2 stage-1 hybrid, 3 steps in {time.time() - t0:.1f} s: {logs}")
