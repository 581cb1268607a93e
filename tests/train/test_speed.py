"""enel.train.speed: the frozen layers' bf16 weight copies give autocast's own results, and follow weight changes."""

from __future__ import annotations

import copy
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from enel.model import EnelForCausalLM  # noqa: E402
from enel.train.freezing import apply_stage  # noqa: E402
from enel.train.speed import cache_frozen_bf16, cached_layers  # noqa: E402

from conftest import TINY_POINTS  # noqa: E402


@pytest.fixture(scope="module")
def stage1():
    model, _ = EnelForCausalLM.from_backbone("tiny-llama", point_config=TINY_POINTS, seed=0,
                                             objective_config={"name": "hybrid", "mask_ratio": 0.3})
    apply_stage(model, 1, trainable_layers=1)
    ids = model.model.point_token_ids
    n = model.config.num_point_tokens
    row = [1, 5, ids.start] + [ids.patch] * n + [ids.end, 7, 8, 9, 10, 11]
    input_ids = torch.tensor([row, row])
    labels = input_ids.clone()
    labels[:, : len(row) - 4] = -100
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels,
             "point_clouds": torch.rand(2, TINY_POINTS["num_points"], 6, generator=g)}
    return model.train(), batch


def _loss_and_grads(model, batch, bf16=True):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model(**batch, point_generator=torch.Generator().manual_seed(1)).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_cached_copies_give_autocasts_loss_and_gradients_bit_for_bit(stage1):
    model, batch = stage1
    cached = copy.deepcopy(model)
    assert cache_frozen_bf16(cached) > 0
    ref_loss, ref_grads = _loss_and_grads(model, batch)
    loss, grads = _loss_and_grads(cached, batch)
    assert torch.equal(loss, ref_loss)
    assert grads.keys() == ref_grads.keys() and grads
    for name in grads:
        assert torch.equal(grads[name], ref_grads[name]), name
    # frozen linears hold a copy (layers 2-4, the tied lm_head); the trainable first layer's do not
    layers = cached.model.language_model.layers
    assert layers[1].mlp.up_proj._enel_bf16[0].dtype == torch.bfloat16
    assert layers[0].mlp.up_proj._enel_bf16 is None
    assert cached.lm_head._enel_bf16 is not None
    assert cached_layers(cached) == 7 * (len(layers) - 1) + 1


def test_a_changed_frozen_weight_is_copied_again(stage1):
    model, batch = stage1
    cached = copy.deepcopy(model)
    reference = copy.deepcopy(model)
    cache_frozen_bf16(cached)
    _loss_and_grads(cached, batch)  # copies made
    for m in (cached, reference):  # in place, as load_state_dict or a later stage's optimiser would
        with torch.no_grad():
            m.model.language_model.layers[2].mlp.down_proj.weight.mul_(3.0)
    loss, _ = _loss_and_grads(cached, batch)
    ref_loss, _ = _loss_and_grads(reference, batch)
    assert torch.equal(loss, ref_loss)
    before, _ = _loss_and_grads(model, batch)
    assert not torch.equal(loss, before)  # the change mattered: a stale copy would have given `before`


def test_outside_bf16_autocast_and_once_trainable_the_usual_path_runs(stage1):
    model, batch = stage1
    cached = copy.deepcopy(model)
    cache_frozen_bf16(cached)
    loss, grads = _loss_and_grads(cached, batch, bf16=False)
    ref_loss, ref_grads = _loss_and_grads(model, batch, bf16=False)
    assert torch.equal(loss, ref_loss) and cached_layers(cached) == 0
    apply_stage(cached, 2)  # every weight trains: autocast casts them every step, as it must
    stage2 = copy.deepcopy(model)
    apply_stage(stage2, 2)
    loss, grads = _loss_and_grads(cached, batch)
    ref_loss, ref_grads = _loss_and_grads(stage2, batch)
    assert torch.equal(loss, ref_loss)
    name = "model.language_model.embed_tokens.weight"  # tied to lm_head
    assert torch.equal(grads[name], ref_grads[name])
    cache_frozen_bf16(cached, enable=False)
    assert "forward" not in vars(cached.lm_head)


def test_a_fixed_seed_50_step_run_keeps_todays_loss_curve(tmp_path, monkeypatch):
    """The tiny recipe under bf16 autocast, 50 steps, with the speed-ups (cloud cache, bf16 copies of the frozen
    weights) and without them: the same losses at every step (both are the same maths, bit for bit)."""
    import json

    from enel.data import pointllm
    from enel.data.procedural import synthesize
    from enel.train import speed
    from enel.train.recipe import load_recipe
    from enel.train.run import train

    data = tmp_path / "data"
    synthesize(data, objects_per_category=3, seed=0, num_points=1024, progress=False, categories=["chair", "mug"])

    def curve(name):
        out = tmp_path / name
        recipe = load_recipe("tiny_stage1", [
            f"data.root={data}", "data.points=1024_npy", "data.point_file_pattern={object_id}_1024.npy",
            "data.num_points=1024", f"train.output_dir={out}", "train.max_steps=50", "train.logging_steps=1",
            "train.save_steps=1000", "train.bf16=true", "train.point_reliance=false"])
        train(recipe, log=lambda *_: None)
        history = json.loads((out / "train_summary.json").read_text())["log_history"]
        return [e["loss"] for e in history if "loss" in e]

    copies = []
    real = speed.cache_frozen_bf16
    with monkeypatch.context() as m:
        m.setattr(speed, "cache_frozen_bf16", lambda model, enable=True: copies.append(real(model, enable)))
        fast = curve("fast")
    assert copies and copies[0] > 0  # the run did use the copies
    with monkeypatch.context() as m:  # today's step: no bf16 copies, every cloud prepared again
        m.setattr(speed, "cache_frozen_bf16", lambda model, enable=True: 0)
        m.setattr(pointllm, "CLOUD_CACHE_BYTES", 0)
        today = curve("today")
    assert len(today) == len(fast) == 50
    assert fast == today
    assert sum(today[-10:]) < sum(today[:10])  # it trains
