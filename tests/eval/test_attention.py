"""Attention maps: the right columns, masses that add up, the nearest-centre mapping, files, aggregated layers."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from conftest import TINY_POINTS, save_tiny_model_and_data  # noqa: E402
from enel.errors import ConfigError  # noqa: E402
from enel.eval.attention import (attention_for_objects, point_token_attention, procedural_files,  # noqa: E402
                                 resolve_layer, tokens_to_points)

AGGREGATION = {"enabled": True, "grouping": "grid", "schedule": [{"aggregate_after": [1], "propagate_after": [3]}],
               "reference_layers": 4, "attn_dim": 32, "attn_heads": 2, "grid_alpha": 0.3, "grid_min": 0.2}



@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("att")
    model, tok, model_dir, data = save_tiny_model_and_data(root, objects_per_category=2)
    cloud = np.load(procedural_files(data, "test", 1)[0]).astype(np.float32)
    return {"model": model, "tok": tok, "dir": model_dir, "data": data, "cloud": cloud}


def test_nearest_centre_mapping_on_a_constructed_case():
    centres = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]], dtype=np.float64)
    weights = np.array([0.1, 0.2, 0.3, 0.4])
    pts = np.array([[0.9, 0.05, 0], [-0.8, 0, 0.1], [0, 0.7, 0], [0.1, -2, 0], [0.5, 0.5, 0], [1, 0, 0]])
    # the fifth point is equally far from centres 0 and 2: the lower token index wins
    np.testing.assert_allclose(tokens_to_points(weights, centres, pts), [0.1, 0.2, 0.3, 0.4, 0.1, 0.1])
    blend = tokens_to_points(weights, centres, pts, mapping="idw")
    assert blend[5] == pytest.approx(0.1)  # a point on a centre keeps that centre's weight
    a, b = np.sqrt(0.5), np.sqrt(2.5)  # (0.5, 0.5, 0): centres 0 and 2 at a, then centre 1 (lower index) at b
    assert blend[4] == pytest.approx((0.1 / a + 0.3 / a + 0.2 / b) / (2 / a + 1 / b))
    with pytest.raises(ConfigError, match="mapping"):
        tokens_to_points(weights, centres, pts, mapping="chain")


def test_layer_numbers():
    assert resolve_layer(-1, 4) == 3 and resolve_layer(1, 4) == 0 and resolve_layer(-4, 4) == 0
    for bad in (0, 5, -5):
        with pytest.raises(ConfigError, match="decoder layers"):
            resolve_layer(bad, 4)


def test_weights_come_from_the_geometric_token_columns(tiny):
    from enel.data.conversation import build_prompt, tokenize_prompts

    model, tok = tiny["model"], tiny["tok"]
    att = point_token_attention(model, tok, tiny["cloud"], "What is this?", layer=-1, answer_tokens=0)
    assert att.layer == 4 and att.block_tokens == 128 and att.answer is None
    prompt = build_prompt(tok, "What is this?", template=model.config.conversation_template,
                          num_point_tokens=model.config.num_point_tokens)
    ids = tokenize_prompts(tok, [prompt], model.config.conversation_template)["input_ids"][0]
    patches = np.flatnonzero(ids.numpy() == model.config.point_patch_token_id)
    np.testing.assert_array_equal(att.key_index, patches[1:])  # the 128 geometric tokens, not the class token
    end = int(np.flatnonzero(ids.numpy() == model.config.point_end_token_id)[0])
    np.testing.assert_array_equal(att.query_index, np.arange(end + 1, len(ids)))  # the text after <point_end>
    assert att.token_weights.shape == (128,) and att.token_weights.sum() == pytest.approx(1.0)
    assert att.point_mass + att.class_mass + att.text_mass == pytest.approx(1.0, abs=1e-5)
    assert 0 < att.point_mass < 1
    # the model is left as it was: sdpa attention, eval mode
    assert model.model.language_model.config._attn_implementation == "sdpa" and not model.training
    same = point_token_attention(model, tok, tiny["cloud"], "What is this?", layer=4, answer_tokens=0)
    np.testing.assert_allclose(same.token_weights, att.token_weights)
    other = point_token_attention(model, tok, tiny["cloud"], "What is this?", layer=1, answer_tokens=0)
    assert not np.allclose(other.token_weights, att.token_weights)

    both = point_token_attention(model, tok, tiny["cloud"], "What is this?", queries="both", answer_tokens=3)
    assert both.answer is not None and len(both.query_index) > len(att.query_index)
    with pytest.raises(ConfigError, match="answer_tokens"):
        point_token_attention(model, tok, tiny["cloud"], "What is this?", queries="answer", answer_tokens=0)


def test_each_token_centre_point_carries_its_tokens_weight(tiny):
    att = point_token_attention(tiny["model"], tiny["tok"], tiny["cloud"], "What is this?", answer_tokens=0)
    xyz = att.points[:, :3]
    point_w = tokens_to_points(att.token_weights, att.centres, xyz)
    # every token centre is one of the input points (FPS picks input points): find it and check its weight
    for j, c in enumerate(att.centres):
        hits = np.flatnonzero(np.all(np.isclose(xyz, c, atol=1e-6), axis=1))
        assert len(hits) >= 1
        assert point_w[hits[0]] == pytest.approx(att.token_weights[j])
    # and every point's weight is that of its nearest centre
    nearest = np.argmin(((xyz[:, None] - att.centres[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_allclose(point_w, att.token_weights[nearest])


def test_attention_for_objects_writes_png_html_and_weights(tiny, tmp_path):
    files = procedural_files(tiny["data"], "test", 2)
    out = tmp_path / "attention"
    paths = attention_for_objects(tiny["dir"], files, out, layer=-1, answer_tokens=2, model=tiny["model"],
                                  tokenizer=tiny["tok"], log=None)
    assert len(paths) == 2
    for p in paths:
        assert p["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        page = p["html"].read_text()
        assert "<canvas" in page and "const D = " in page
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing fetched from a network
        doc = json.loads(p["json"].read_text())
        assert sum(doc["token_weights"]) == pytest.approx(1.0) and len(doc["centres"]) == 128
        assert doc["layer"] == 4 and doc["meta"]["seed"] == 0 and doc["meta"]["num_points"] == 1024
        arrays = np.load(p["npz"])
        assert arrays["points"].shape == (1024, 6) and arrays["point_weights"].shape == (1024,)
        assert arrays["token_weights"].shape == (128,)
    index = json.loads((out / "attention.json").read_text())
    assert [o["name"] for o in index["objects"]] == ["proc_chair_00001", "proc_table_00001"]
    assert index["meta"]["layer"] == 4 and index["objects"][0]["png"] == "proc_chair_00001/attention.png"


def test_aggregated_layers_map_group_tokens_back(tmp_path):
    from enel.model import EnelForCausalLM

    model, tok = EnelForCausalLM.from_backbone("tiny-llama", point_config=TINY_POINTS, seed=0,
                                               aggregation_config=AGGREGATION)
    model.eval()
    rng = np.random.default_rng(0)
    cloud = np.concatenate([rng.uniform(-0.6, 0.6, (1024, 3)), rng.random((1024, 3))], 1).astype(np.float32)
    inside = point_token_attention(model, tok, cloud, "What is this?", layer=2, answer_tokens=0)
    assert inside.info["aggregated_layer"] and inside.block_tokens < 128
    assert inside.token_weights.shape == (128,) and inside.token_weights.sum() == pytest.approx(1.0)
    assert inside.point_mass + inside.class_mass + inside.text_mass == pytest.approx(1.0, abs=1e-5)
    # a group's mass is split equally among its members: at most one distinct weight per group token
    assert len(np.unique(np.round(inside.token_weights, 9))) <= inside.block_tokens
    last = point_token_attention(model, tok, cloud, "What is this?", layer=-1, answer_tokens=0)
    assert not last.info["aggregated_layer"] and last.block_tokens == 128


def test_cli_attention(tiny, tmp_path, capsys):
    from enel.cli import main

    out = tmp_path / "maps"
    assert main(["eval", "attention", "--model", str(tiny["dir"]), "--data", str(tiny["data"]), "--objects", "1",
                 "--layer", "2", "--out", str(out)]) == 0
    png, page = capsys.readouterr().out.split()
    assert png.endswith("attention.png") and page.endswith("attention.html")
    assert json.loads((out / "attention.json").read_text())["meta"]["layer"] == 2
    assert main(["eval", "attention", "--model", str(tiny["dir"])]) == 2
    assert "give point cloud files" in capsys.readouterr().err
