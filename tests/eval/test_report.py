"""The run report: every section from a complete fake run, notes instead of failures for partial ones."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from enel.errors import ConfigError
from enel.eval.attention import render_attention_html, render_attention_png
from enel.eval.report import write_report
from enel.eval.resolution import plot_resolution
from enel.eval.results import ResultsFile, atomic_write_json, write_results

COMMAND = "enel quickstart --out runs/qs --minutes 5"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from enel.data.procedural.generate import load_objects, synthesize

    root = tmp_path_factory.mktemp("report-data")
    synthesize(root, objects_per_category=2, categories=["chair", "table"], num_points=1024, progress=False,
               val_fraction=0.0, test_fraction=0.5)
    return root, load_objects(root, "test")


def _stage(run, name, steps, losses):
    hist = [{"loss": l, "loss_ce": l - 0.5, "loss_mask": 0.5, "learning_rate": 1e-4, "step": (i + 1) * 10}
            for i, l in enumerate(losses)] + [{"train_runtime": 60.0, "train_loss": float(np.mean(losses)),
                                               "step": steps}]
    (run / name).mkdir(parents=True)
    (run / name / "train_summary.json").write_text(json.dumps({
        "recipe": {"name": f"smollm2-{name}", "backbone": "smollm2", "data": {"root": "data/procedural"},
                   "train": {"seed": 0, "output_dir": str(run / name)}},
        "global_step": steps, "train_loss": float(np.mean(losses)), "minutes": 1.5, "seconds_per_step": 4.5,
        "log_history": hist}))


def make_run(tmp_path, data_dir, objects) -> "Path":  # noqa: F821
    run = tmp_path / "qs"
    (run / "model").mkdir(parents=True)
    (run / "model" / "config.json").write_text(json.dumps({"backbone": "smollm2",
                                                           "training_state": {"stage": 2, "steps": 40}}))
    (run / "quickstart.json").write_text(json.dumps({
        "command": COMMAND, "model": str(run / "model"), "data": str(data_dir),
        "dataset": {"categories": 2, "objects": {"train": 2, "val": 0, "test": 2}}, "seed": 0, "minutes_budget": 5,
        "timings": {"data_seconds": 0.5, "stage1_seconds": 90.0}}))
    _stage(run, "stage1", 20, [4.0, 3.0])
    _stage(run, "stage2", 20, [2.5, 2.0])
    ev = run / "eval"
    meta = {"model": str(run / "model"), "data": str(data_dir), "split": "test", "seed": 0, "command": COMMAND}
    atomic_write_json(ev / "procedural_test_summary.json", {
        **meta, "objects": 2, "category_accuracy": 55.0, "colour_accuracy": 40.0, "caption_sbert": 47.25,
        "caption_metrics": {"bleu-1": 12.5, "rouge-l": 20.0}, "per_category_accuracy": {"chair": 100.0, "table": 10.0}})
    write_results(ev / "procedural_test_captioning.json", ResultsFile(
        "Caption this 3D model in detail.",
        [{"object_id": o["object_id"], "ground_truth": o["caption"], "model_output": f"a {o['category']} (model)"}
         for o in objects], metadata=meta))
    atomic_write_json(ev / "procedural_test_captioning_evaluated_traditional.json",
                      {"summary": {"sbert_similarity": 47.25, "bleu-1": 12.5}})
    atomic_write_json(ev / "procedural_test_captioning_evaluated_qwen2.5-7b.json", {"summary": {"average_score": 61.5}})
    write_results(ev / "ModelNet_classification_prompt0.json", ResultsFile(
        "What is this?", [{"object_id": 0, "ground_truth": 8, "model_output": "a chair", "label_name": "chair"}],
        metadata={**meta, "split": "test", "num_points": 8192, "complete": False, "completed": 1, "objects": 2}))
    res = {"meta": {**meta, "source": "procedural", "objects": 2, "train_points": 1024,
                    "points_rule": "procedural objects rebuilt by the generator"},
           "sizes": [1024, 2048], "metrics": ["category_accuracy", "caption_sbert"],
           "headline": ["category_accuracy", "caption_sbert"],
           "rows": [{"num_points": 1024, "category_accuracy": 50.0, "caption_sbert": 41.5, "seconds": 3.0},
                    {"num_points": 2048, "category_accuracy": 25.0, "caption_sbert": 39.75, "seconds": 4.0}]}
    (ev / "resolution").mkdir()
    atomic_write_json(ev / "resolution" / "resolution.json", res)
    plot_resolution(res, ev / "resolution" / "resolution.png")
    cloud = np.load(data_dir / "1024_npy" / f"{objects[0]['object_id']}_1024.npy")
    weights = np.linspace(0, 1, len(cloud))
    name = objects[0]["object_id"]
    render_attention_png(cloud, weights, ev / "attention" / name / "attention.png", max_points=256)
    render_attention_html(cloud, weights, ev / "attention" / name / "attention.html", max_points=256)
    atomic_write_json(ev / "attention" / "attention.json", {
        "meta": {"model": str(run / "model"), "layer": 30, "num_layers": 30, "question": "What is this?",
                 "queries": "question", "mapping": "nearest", "seed": 0, "command": "enel eval attention x.ply"},
        "objects": [{"name": name, "answer": "a chair", "layer": 30, "point_mass": 0.25,
                     "png": f"{name}/attention.png", "html": f"{name}/attention.html"}]})
    return run


def test_full_run_report(tmp_path, data):
    data_dir, objects = data
    run = make_run(tmp_path, data_dir, objects)
    paths = write_report(run)
    md = paths["markdown"].read_text()
    page = paths["html"].read_text()
    # provenance travels with the numbers
    assert COMMAND in md and f"model `{run / 'model'}`" in md and "split `test`" in md and "seed 0" in md
    assert "| category accuracy (%) | 55.00 |" in md and "| caption Sentence-BERT | 47.25 |" in md
    assert "| chair | 100.00 | table | 10.00 |" in md
    assert "sbert_similarity 47.25" in md and "average_score (qwen2.5-7b) 61.50" in md
    assert "incomplete: 1/2" in md
    assert "| stage1 | smollm2-stage1 | 20 | 1.50 | 4.50 | 3.50 |" in md
    assert "| score | 1K (train) | 2K |" in md and "| caption SBERT | 41.50 | 39.75 |" in md
    assert "![resolution sweep](eval/resolution/resolution.png)" in md
    name = objects[0]["object_id"]
    assert f"[interactive view](eval/attention/{name}/attention.html)" in md and "25.0 %" in md
    for o in objects:  # the grid: rendered cloud, generated caption, ground truth
        assert f"report_files/objects/{o['object_id']}.png" in md and o["caption"] in md
        assert paths[f"object_{o['object_id']}"].read_bytes()[:4] == b"\x89PNG"
    assert paths["loss_curves"].is_file() and "not found" not in md and "Problems" not in md

    # self-contained HTML: images inline, no external resources
    n_images = len(re.findall(r'src="data:image/png;base64,', page))
    assert n_images == 1 + 1 + 1 + len(objects)  # loss curves, resolution, attention, objects
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page) and "<script" not in page
    assert "<code>" + COMMAND + "</code>" in page and f'href="eval/attention/{name}/attention.html"' in page


def test_partial_runs_become_notes(tmp_path, data):
    empty = tmp_path / "empty"
    empty.mkdir()
    md = write_report(empty)["markdown"].read_text()
    for expected in ("quickstart.json` not found", "no evaluation summary", "no PointLLM-format results files",
                     "nothing was trained", "no resolution sweep", "no attention maps", "no captioning results"):
        assert expected in md
    assert (empty / "report.html").is_file()

    data_dir, objects = data
    run = make_run(tmp_path, data_dir, objects)
    (run / "eval" / "resolution" / "resolution.json").write_text("{broken")
    (run / "stage2" / "train_summary.json").unlink()
    (run / "eval" / "attention" / objects[0]["object_id"] / "attention.png").unlink()
    meta = json.loads((run / "eval" / "procedural_test_captioning.json").read_text())
    meta["enel"]["data"] = str(tmp_path / "moved")  # the clouds can no longer be found
    (run / "eval" / "procedural_test_captioning.json").write_text(json.dumps(meta))
    out = tmp_path / "elsewhere"
    md = write_report(run, out_dir=out)["markdown"].read_text()
    assert "could not read" in md and "resolution.json" in md
    assert "stage `stage2` did not finish" in md
    assert "attention.png` is missing" in md
    assert "2 of 2 point clouds were not found" in md and objects[0]["caption"] in md
    assert "| category accuracy (%) | 55.00 |" in md  # the rest is still there
    assert (out / "report.html").is_file() and not (run / "report.md").exists()

    with pytest.raises(ConfigError, match="not found"):
        write_report(tmp_path / "does-not-exist")


def test_log_history_without_losses(tmp_path):
    run = tmp_path / "r"
    (run / "stage1").mkdir(parents=True)
    (run / "stage1" / "train_summary.json").write_text(json.dumps({
        "recipe": {"name": "tiny"}, "global_step": 1, "train_loss": 5.0, "minutes": 0.1, "seconds_per_step": 6.0,
        "log_history": [{"train_runtime": 6.0, "train_loss": 5.0, "step": 1}]}))
    paths = write_report(run)
    assert "no per-step losses" in paths["markdown"].read_text() and "loss_curves" not in paths


def test_cli_report(tmp_path, capsys):
    from enel.cli import main

    (tmp_path / "run").mkdir()
    assert main(["eval", "report", str(tmp_path / "run"), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "out" / "report.md"), str(tmp_path / "out" / "report.html")]
    assert main(["eval", "report", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("error: run folder")
