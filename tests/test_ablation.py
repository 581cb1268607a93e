"""``enel ablate``: every row builds the recipe it claims, the harness resumes a half-finished table running only
its missing rows, the table shows our numbers beside the paper's, and bad names fail in one line."""

from __future__ import annotations

import json

import pytest
import yaml

from enel.ablation import TABLES, Row, _schedule, row_recipes, run_table
from enel.cli import main

ROWS = [(t, r) for t in TABLES.values() for r in t.rows]


def _field(recipe_dict: dict, dotted: str):
    value = recipe_dict
    for key in dotted.split("."):
        value = value[key]
    return value


@pytest.mark.parametrize("quick", [False, True], ids=["full", "quick"])
@pytest.mark.parametrize("table,row", ROWS, ids=[f"{t.name}-{r.name}" for t, r in ROWS])
def test_every_row_builds_a_valid_recipe_with_its_overrides_applied(table, row, quick, tmp_path):
    recipes = row_recipes(table, row, tmp_path, common=["data.modelnet40.weight=0"], steps={1: 7, 2: 3}, quick=quick)
    assert sorted(recipes) == list(range(1, table.stages + 1))
    for stage, overrides in row.overrides.items():
        d = recipes[stage].to_dict()
        for o in overrides:
            key, value = o.split("=", 1)
            actual = _field(d, key)
            expected = yaml.safe_load(value)
            expected = float(expected) if isinstance(actual, float) else expected
            assert actual == expected, f"{row.name}: {key} is {actual!r}, not {expected!r}"
    assert recipes[1].train.max_steps == 7
    if quick and row.recipe == "baseline_smollm2":
        assert recipes[1].encoder_pretrain["steps"] == 100
    assert recipes[1].point_encoder == ("pointbert" if row.recipe == "baseline_smollm2" else "embedding")
    if table.stages == 2:  # every row's stage 2 starts from the table's one shared stage 1
        assert recipes[2].init_from == str(tmp_path / table.name / "_stage1" / "stage1" / "model")


def test_quick_rows_are_runnable_rows_and_resolution_shares_the_encoder_models(tmp_path):
    for table in TABLES.values():
        assert all(not table.row(r).not_runnable for r in table.quick_rows), table.name
    res, enc = TABLES["resolution"], TABLES["encoder"]
    for row in res.rows:
        kw = dict(common=[], steps={1: 5})
        a, b = row_recipes(res, row, tmp_path, **kw)[1], row_recipes(enc, enc.row(row.name), tmp_path, **kw)[1]
        assert a.train.output_dir == b.train.output_dir == str(tmp_path / "encoder" / row.name / "stage1")


def _without_paths(recipe) -> str:
    d = recipe.to_dict()
    d["train"].pop("output_dir")
    d.pop("init_from", None)
    return json.dumps(d, sort_keys=True, default=str)


@pytest.mark.parametrize("name", list(TABLES))
def test_the_rows_of_a_table_train_different_recipes(name, tmp_path):
    table = TABLES[name]
    if table.resolution:  # both models are trained as the encoder table's; the evaluation differs
        return
    last = table.stages
    built = {r.name: _without_paths(row_recipes(table, r, tmp_path, common=[], steps={1: 5, 2: 5})[last])
             for r in table.rows}
    assert len(set(built.values())) == len(built), name


def test_aggregation_schedules_match_the_paper_default_and_their_h():
    from enel.model.configuration_enel import AggregationConfig

    assert yaml.safe_load(_schedule(3, 2).split("=", 1)[1]) == AggregationConfig().schedule
    for levels, h in ((1, 2), (4, 2), (3, 4), (3, 8)):
        blocks = yaml.safe_load(_schedule(levels, h).split("=", 1)[1])
        layers = [n for b in blocks for n in b["aggregate_after"] + b["propagate_after"]]
        assert len(set(layers)) == len(layers) and max(layers) <= 32
        for b in blocks:
            assert len(b["aggregate_after"]) == len(b["propagate_after"]) == levels
            assert b["propagate_after"][0] - b["aggregate_after"][-1] == h


@pytest.mark.parametrize("row,levels,h", [("l1", 1, 2), ("l2", 2, 2), ("l3", 3, 2), ("l4", 4, 2), ("h4", 3, 4),
                                          ("h8", 3, 8), ("no_gate", 3, 2)])
def test_aggregation_rows_keep_their_l_and_h_on_smollm2_and_deeper_backbones(row, levels, h, tmp_path):
    from enel.model.aggregation import coarsest_layers, resolve_schedule
    from enel.model.configuration_enel import AggregationConfig

    table = TABLES["aggregation"]
    cfg = AggregationConfig(**row_recipes(table, table.row(row), tmp_path, common=[], steps={1: 1, 2: 1})[2].aggregation)
    assert cfg.gate is (row != "no_gate")
    assert [len(span) for span in coarsest_layers(cfg, 30)] == [h, h]  # SmolLM2: the numbers as they are
    for layers in (30, 32):  # mapped onto Vicuna-7B's 32 no two events share a layer
        events = resolve_schedule(cfg, layers)
        assert sum(kind == "aggregate" for _, kind, _, _ in events) == 2 * levels


def _fake_row_runner(calls):
    """Stands in for training: writes a metrics.json whose numbers say which row made them."""

    def run_row(table, row, out, *, seed, steps, **_):
        calls.append(row.name)
        i = [r.name for r in table.rows].index(row.name)
        d = out / table.name / row.name
        d.mkdir(parents=True, exist_ok=True)
        (d / "metrics.json").write_text(json.dumps({
            "seed": seed, "steps": {"stage1": steps[1]}, "wall_seconds": 90.0 + i,
            "metrics": {"category": 11.0 + i, "colour": 21.0 + i, "caption_sbert": 31.0 + i, "modelnet40": 41.0 + i}}))

    return run_row


def test_the_harness_resumes_a_table_running_only_the_missing_row(tmp_path, monkeypatch):
    monkeypatch.setattr("enel.pipeline.prepare_data", lambda *a, **k: ({}, None))
    rows = ["l2_lr2e-3", "l4_lr4e-4", "l8_lr4e-4"]
    calls = []
    kw = dict(rows=rows, steps=3, seed=5, log=lambda *a: None, run_row=_fake_row_runner(calls))
    run_table("layers", tmp_path, **kw)
    assert calls == rows
    (tmp_path / "layers" / "l4_lr4e-4" / "metrics.json").unlink()
    before = {r: (tmp_path / "layers" / r / "metrics.json").stat().st_mtime_ns for r in (rows[0], rows[2])}
    calls.clear()
    path = run_table("layers", tmp_path, **kw)
    assert calls == ["l4_lr4e-4"]
    assert {r: (tmp_path / "layers" / r / "metrics.json").stat().st_mtime_ns for r in before} == before
    calls.clear()
    run_table("layers", tmp_path, **kw)
    assert calls == []

    lines = path.read_text().splitlines()
    table = TABLES["layers"]
    for i, row in enumerate(table.rows):
        line = [ln for ln in lines if ln.startswith(f"| {row.name}:")]
        assert len(line) == 1, row.name
        paper = [f"{v:.2f}" for v in row.paper]
        cells = [c.strip() for c in line[0].split("|")]
        assert cells[6:9] == paper, line
        if row.name in rows:
            assert cells[2:6] == [f"{v + i:.1f}" for v in (11.0, 21.0, 31.0, 41.0)] and cells[9] == "5", line
        else:
            assert cells[2:6] == ["–"] * 4 and "not run" in line[0]


def test_a_not_runnable_row_is_skipped_with_its_reason(tmp_path, monkeypatch):
    monkeypatch.setattr("enel.pipeline.prepare_data", lambda *a, **k: ({}, None))
    calls, lines = [], []
    path = run_table("ssl", tmp_path, rows=["distillation"], log=lines.append, run_row=_fake_row_runner(calls))
    assert calls == [] and any("distillation: not runnable" in ln for ln in lines)
    assert "not runnable: the distillation row needs" in path.read_text()


@pytest.mark.parametrize("argv,message", [
    (["ablate", "nope"], "unknown ablation table 'nope'"),
    (["ablate", "ssl", "--rows", "mm_feat_30,bogus"], "table 'ssl' has no row 'bogus'"),
    (["ablate", "encoder", "--steps", "0"], "--steps must be a positive"),
])
def test_bad_ablate_input_gets_one_line_and_exit_status_2(argv, message, tmp_path, capsys):
    assert main(argv + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err
    assert not any(tmp_path.iterdir())


TINY_STAGE1 = ["train.batch_size=2", "train.save_steps=100", "data.max_length=256",
               "word_prealign.steps=2", "word_prealign.batch_size=4"]  # the recipe's 350 x 64 clouds: minutes


@pytest.mark.slow
def test_the_harness_trains_and_evaluates_rows_on_tiny_and_reruns_only_a_deleted_one(tmp_path, monkeypatch):
    from enel import ablation

    ran = []

    def counting(table, row, out, **kw):
        ran.append(row.name)
        return ablation.run_row(table, row, out, **kw)

    kw = dict(rows=["mm_feat_30", "contrastive"], steps=2, backbone="tiny-llama", data_dir=tmp_path / "data",
              modelnet40_dir=tmp_path / "mn", objects_per_category=3, eval_objects=4, threads=1,
              extra_overrides={1: TINY_STAGE1}, log=lambda *a: None, run_row=counting)
    monkeypatch.setattr("enel.data.modelnet_import.modelnet40_source", lambda: None)
    run_table("ssl", tmp_path / "out", **kw)
    assert ran == ["mm_feat_30", "contrastive"]
    rec = json.loads((tmp_path / "out" / "ssl" / "contrastive" / "metrics.json").read_text())
    assert rec["steps"] == {"stage1": 2} and rec["overrides"] == {"1": ["objective.name=contrastive"]}
    assert set(rec["metrics"]) >= {"category", "colour", "caption_sbert"} and rec["wall_seconds"] > 0
    (tmp_path / "out" / "ssl" / "contrastive" / "metrics.json").unlink()
    ran.clear()
    text = run_table("ssl", tmp_path / "out", **kw).read_text()
    assert ran == ["contrastive"]
    assert "| mm_feat_30: " in text and "48.50 | 45.85 | 46.93" in text
