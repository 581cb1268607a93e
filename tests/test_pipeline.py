"""The quickstart end to end on a tiny backbone: both datasets, both stages, both evaluations, reproducibly."""

import json

import numpy as np
import pytest

from enel.data.labels import MODELNET40_CLASSES

TINY_STAGE1 = ["word_prealign.steps=2", "word_prealign.batch_size=4"]  # the recipe's 350 x 64 clouds: minutes
TINY_STAGE2 = ["aggregation.schedule=[{aggregate_after: [1], propagate_after: [3]}]", "aggregation.reference_layers=4"]


def _archive(path):
    """A stand-in ModelNet40 training archive: 3 boxes of random proportions per class, z-up, unit sphere."""
    rng = np.random.default_rng(0)
    pts, labels, ids = [], [], []
    for c, name in enumerate(MODELNET40_CLASSES):
        for k in range(3):
            p = rng.uniform(-0.5, 0.5, size=(256, 3)) * rng.uniform(0.2, 1.0, size=3)
            pts.append(p / np.linalg.norm(p, axis=1).max())
            labels.append(c)
            ids.append(f"{name.replace(' ', '_')}_{k:04d}")
    np.savez(path, points=np.asarray(pts, np.float16), labels=np.asarray(labels, np.int16),
             class_names=np.asarray(MODELNET40_CLASSES), object_ids=np.asarray(ids))
    return path


def _run(tmp_path, out):
    from enel.pipeline import quickstart

    return quickstart(out=tmp_path / out, data_dir=tmp_path / "data", modelnet40=_archive(tmp_path / "mn.npz"),
                      modelnet40_dir=tmp_path / "modelnet40", steps={1: 4, 2: 2}, objects_per_category=3,
                      backbone="tiny-llama", eval_objects=6, modelnet_eval_per_class=1, threads=1,
                      extra_overrides={1: TINY_STAGE1, 2: TINY_STAGE2}, log=lambda *a: None)


@pytest.mark.slow
def test_quickstart_trains_fixed_steps_evaluates_both_and_is_reproducible(tmp_path):
    from enel import pipeline

    first, second = _run(tmp_path, "a"), _run(tmp_path, "b")
    for record in (first, second):
        assert {s: v["steps"] for s, v in record["stages"].items()} == {"stage1": 4, "stage2": 2}
        assert not any(v["stopped_early"] for v in record["stages"].values())
        assert record["real_data"] and record["evaluation"]["modelnet40_val"]["objects"] == 40
        assert set(record["evaluation"]["modelnet40_val"]) >= {"what", "completion"}
    # the same seed trains the same steps: the held-out answers are identical
    for name in ("procedural_test_classification.json", "procedural_test_colour.json",
                 "modelnet40_val_what.json", "modelnet40_val_completion.json"):
        a, b = (json.loads((tmp_path / run / "eval" / name).read_text()) for run in ("a", "b"))
        assert [r["model_output"] for r in a["results"]] == [r["model_output"] for r in b["results"]], name
    report = (tmp_path / "a" / "report.md").read_text()
    assert "ModelNet40 `modelnet40_val`" in report and "mean per-class accuracy" in report
    assert "split `unknown`" not in report and "split `val`" in report  # every results file says its split
    assert json.loads((tmp_path / "a" / "quickstart.json").read_text())["steps"] == {"1": 4, "2": 2}
    assert first["stages"]["stage1"]["word_prealign"]["steps"] == 2 and "word_prealign" not in first["stages"]["stage2"]
    lines = pipeline._closing_lines(first)
    assert lines[0].startswith("[quickstart] stage1: 4 steps in") and "after 2 pre-alignment steps in" in lines[0]


def test_quickstart_without_real_data_says_how_to_add_it(tmp_path, monkeypatch):
    from enel.pipeline import _real_shapes

    monkeypatch.setattr("enel.data.modelnet_import.modelnet40_source", lambda: None)
    lines = []
    assert _real_shapes(None, tmp_path / "modelnet40", lines.append) is None
    assert len(lines) == 1 and "enel data modelnet40 --from FILE" in lines[0] and "ENEL_MODELNET40" in lines[0]


def test_closing_lines_say_when_a_cap_cut_the_steps():
    from enel.pipeline import _closing_lines

    record = {"minutes_cap": 5.0, "timings": {"total_seconds": 600},
              "stages": {"stage1": {"steps": 40, "planned_steps": 1300, "stopped_early": True, "minutes": 4.2,
                                    "seconds_per_step": 6.3},
                         "stage2": {"steps": 100, "planned_steps": 100, "stopped_early": False, "minutes": 0.8,
                                    "seconds_per_step": 0.5}},
              "evaluation": {"procedural": {"objects": 180, "category_accuracy": 50.0, "colour_accuracy": 40.0,
                                            "caption_sbert": 30.0}}}
    lines = _closing_lines(record)
    assert "stopped early by the 5-minute cap at 40 of 1300 steps" in lines[0]
    assert "stopped early" not in lines[1]
