"""Resolution sweep: table, JSON and plot for a tiny model; the dense-cloud rule above the stored resolution."""

from __future__ import annotations

import json
import os
import zlib

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from conftest import save_tiny_model_and_data  # noqa: E402
from enel.errors import ConfigError  # noqa: E402
from enel.eval.generate import load_benchmark  # noqa: E402
from enel.eval.resolution import (_Clouds, _resolve_dense, plot_resolution, resolution_sweep,  # noqa: E402
                                  write_resolution_table)
from enel.eval.results import ResultsFile, read_results  # noqa: E402



class HashEncoder:
    """A deterministic stand-in for Sentence-BERT: unit-norm bag-of-words hashes (identical texts → cosine 1)."""

    name = "hash-bow"

    def encode(self, texts):
        out = np.zeros((len(texts), 64), np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, zlib.crc32(w.encode()) % 64] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)



@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from enel.inference import Assistant

    root = tmp_path_factory.mktemp("res")
    _, _, model_dir, data = save_tiny_model_and_data(root)
    return {"model": model_dir, "data": data, "assistant": Assistant.from_folder(model_dir)}


def test_sweep_writes_table_json_and_plot_and_reuses_finished_runs(tiny, tmp_path):
    out = tmp_path / "resolution"
    kw = dict(data_dir=tiny["data"], sizes=(2048, 512, 1024), max_objects=2, batch_size=2, max_new_tokens=2,
              sbert=HashEncoder(), assistant=tiny["assistant"], log=None)
    doc = resolution_sweep(tiny["model"], out, **kw)
    assert doc["sizes"] == [512, 1024, 2048]
    assert [r["num_points"] for r in doc["rows"]] == [512, 1024, 2048]
    assert doc["metrics"][:2] == ["category_accuracy", "caption_sbert"]
    assert doc["headline"] == ["category_accuracy", "caption_sbert"]
    for row in doc["rows"]:
        assert 0.0 <= row["category_accuracy"] <= 100.0 and -100.0 <= row["caption_sbert"] <= 100.0
    meta = doc["meta"]
    assert meta["dense"] == "mesh" and meta["train_points"] == 1024 and meta["objects"] == 2
    assert "2048 surface points" in meta["points_rule"] and meta["sbert"] == "hash-bow"

    for name in ("resolution.json", "resolution.md", "resolution.png"):
        assert (out / name).is_file()
    assert (out / "resolution.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "resolution.json").read_text())["rows"] == doc["rows"]
    table = (out / "resolution.md").read_text()
    assert "| score | 512 | 1K (train) | 2K |" in table and "category accuracy (%)" in table
    assert "seed 0" in table and "resolution_sweep(" in table  # provenance travels with the numbers
    at_2k = read_results(out / "2048" / "procedural_test_captioning_prompt2.json")
    assert at_2k.metadata["num_points"] == 2048 and len(at_2k.results) == 2
    assert (out / "2048" / "procedural_test_captioning_prompt2_evaluated_traditional.json").is_file()

    def no_generation(*a, **k):
        raise AssertionError("finished results must be reused, not regenerated")

    asked = tiny["assistant"].ask
    tiny["assistant"].ask = no_generation
    try:
        again = resolution_sweep(tiny["model"], out, **kw)
    finally:
        tiny["assistant"].ask = asked
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in again["rows"]] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in doc["rows"]]


def test_mesh_rule_gives_distinct_points_above_the_stored_count(tiny):
    bench = load_benchmark("procedural", "captioning", data_dir=tiny["data"], limit=1)
    item = bench.items[0]
    assert bench.stored_points == 1024
    assert _resolve_dense("auto", bench, [1024, 2048]) == "mesh"
    assert _resolve_dense("auto", bench, [512, 1024]) == "stored"
    mesh = _Clouds("mesh", 2048, bench.data["generator"])
    stored = _Clouds("stored", 2048, None)
    up_mesh, up_stored = mesh(item, 2048), stored(item, 2048)
    assert up_mesh.shape == up_stored.shape == (2048, 6)
    assert len(np.unique(up_mesh[:, :3], axis=0)) == 2048  # true surface samples
    assert len(np.unique(up_stored[:, :3], axis=0)) == 1024  # the duplicate rule adds no new points
    down = mesh(item, 512)
    assert len(np.unique(down[:, :3], axis=0)) == 512
    # the same object: the rebuilt cloud's colours are the stored cloud's part colours
    stored_colors = {tuple(c) for c in np.round(item.load(None)[:, 3:], 4)}
    assert {tuple(c) for c in np.round(up_mesh[:, 3:], 4)} <= stored_colors
    np.testing.assert_allclose(np.linalg.norm(down[:, :3], axis=1).max(), 1.0, atol=1e-5)  # pc_norm'd
    with pytest.raises(ConfigError, match="dense must be one of"):
        _resolve_dense("dup", bench, [512])


def test_table_and_plot_from_a_hand_made_sweep(tmp_path):
    doc = {"meta": {"model": "m", "source": "modelnet", "split": "test", "seed": 1, "objects": 3, "command": "c",
                    "train_points": 8192, "points_rule": "stored points"},
           "sizes": [1024, 8192, 16384], "metrics": ["modelnet_exact_accuracy"],
           "headline": ["modelnet_exact_accuracy"],
           "rows": [{"num_points": 1024, "modelnet_exact_accuracy": 10.0, "seconds": 1.0},
                    {"num_points": 8192, "modelnet_exact_accuracy": 33.333, "seconds": 2.0},
                    {"num_points": 16384, "seconds": 3.0}]}
    text = write_resolution_table(doc, tmp_path / "t.md").read_text()
    assert "| ModelNet40 exact-match accuracy (%) | 10.00 | 33.33 | – |" in text
    assert "| score | 1K | 8K (train) | 16K |" in text
    assert plot_resolution(doc, tmp_path / "p.png").stat().st_size > 1000


def test_modelnet_scores_without_sbert():
    from enel.eval.resolution import score_results

    rf = ResultsFile("What is this?", [
        {"object_id": 0, "ground_truth": 8, "model_output": "A chair.", "label_name": "chair"},
        {"object_id": 1, "ground_truth": 33, "model_output": "A lamp.", "label_name": "table"}])
    assert score_results(rf, "classification", "modelnet", sbert=False) == {"modelnet_exact_accuracy": 50.0}


def test_cli_resolution(tiny, tmp_path, capsys):
    from enel.cli import main

    out = tmp_path / "sweep"
    assert main(["eval", "resolution", "--model", str(tiny["model"]), "--data", str(tiny["data"]), "--sizes", "512",
                 "--tasks", "classification", "--objects", "1", "--max-new-tokens", "1", "--no-sbert",
                 "--out", str(out)]) == 0
    assert "| category accuracy (%) | " in capsys.readouterr().out
    assert json.loads((out / "resolution.json").read_text())["meta"]["command"].startswith("enel.eval.")
