"""The encoder baseline through ``enel train``: masked point modelling first, then stage 1 with the encoder frozen."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from enel.errors import ConfigError
from enel.train.recipe import load_recipe
from enel.train.run import build_model, train

POINTS = 1024
ENCODER = ["encoder_config.num_group=32", "encoder_config.group_size=8", "encoder_config.trans_dim=48",
           "encoder_config.depth=1", "encoder_config.num_heads=2", "encoder_config.projector_hidden=[64]"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from enel.data.procedural import synthesize

    root = tmp_path_factory.mktemp("procedural")
    synthesize(root, objects_per_category=3, seed=0, num_points=POINTS, progress=False, categories=["chair", "mug"])
    return root


def recipe(data: Path, out: Path, *extra: str):
    return load_recipe("baseline_smollm2_stage1", [
        "backbone=tiny-llama", f"data.root={data}", f"data.points={POINTS}_npy",
        f"data.point_file_pattern={{object_id}}_{POINTS}.npy", f"data.num_points={POINTS}", "data.anno=[anno/brief_train.json]",
        "data.modelnet40.weight=0", "data.preview=null", "data.max_length=256", f"train.output_dir={out}",
        "train.batch_size=2", "train.bf16=false", "train.save_steps=100", "train.preview_every=0", *ENCODER, *extra])


def test_the_bundled_recipe_builds_a_baseline_with_its_encoder_frozen(tiny_data, tmp_path):
    r = recipe(tiny_data, tmp_path / "x")
    assert r.point_encoder == "pointbert" and r.encoder_pretrain["steps"] == 200
    model, _, report = build_model(r)
    assert model.config.point_encoder == "pointbert" and model.config.num_point_tokens == 33
    assert report.groups["point_encoder"][0] == 0 and report.groups["projector"][0] > 0
    with pytest.raises(ConfigError, match="caption loss"):
        recipe(tiny_data, tmp_path / "y", "objective.name=hybrid")
    with pytest.raises(ConfigError, match="encoder_pretrain"):
        load_recipe("tiny_stage1", ["encoder_pretrain.steps=5"])


def test_enel_train_pretrains_the_encoder_then_keeps_it_frozen(tiny_data, tmp_path):
    from enel.model.saving import load_model

    r = recipe(tiny_data, tmp_path / "run", "encoder_pretrain.steps=3", "encoder_pretrain.batch_size=2",
               "encoder_pretrain.clouds=4", "train.max_steps=2")
    initial = build_model(r)[0].model.point_backbone.state_dict()
    out = train(r, log=lambda *_: None)
    pre = json.loads((tmp_path / "run" / "encoder_pretrain.json").read_text())
    assert pre["steps"] == 3 and len(pre["losses"]) == 3 and pre["clouds"] == 4
    saved, _ = load_model(out.model_dir)
    assert saved.config.training_state["encoder_pretrain"]["steps"] == 3
    after = saved.model.point_backbone.state_dict()
    assert not torch.equal(after["blocks.blocks.0.attn.qkv.weight"], initial["blocks.blocks.0.attn.qkv.weight"])
    # stage 1 left the pre-trained encoder alone: the in-memory model after MAE + training equals the saved one,
    # and its BatchNorm statistics are the ones MAE left (eval mode throughout stage 1)
    trained = out.model.model.point_backbone.state_dict()
    for k, v in after.items():
        assert torch.equal(v, trained[k]), k
    # the standardisation between encoder and projector was fitted after the pre-training and saved with the model
    norm = saved.model.point_feature_norm
    assert not torch.equal(norm.mean, torch.zeros_like(norm.mean)) and not torch.equal(norm.std, torch.ones_like(norm.std))
    assert torch.equal(norm.mean, out.model.model.point_feature_norm.mean)
    assert set(pre["token_spread"]) == {"raw", "standardized"}
