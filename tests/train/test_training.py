"""Training on the HF Trainer with tiny backbones: both stages, loss terms, atomic checkpoints, resume, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enel.errors import ConfigError
from enel.train.recipe import load_recipe
from enel.train.run import last_checkpoint, train

REPO = Path(__file__).resolve().parents[2]
POINTS = 1024


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from enel.data.procedural import synthesize

    root = tmp_path_factory.mktemp("procedural")
    synthesize(root, objects_per_category=3, seed=0, num_points=POINTS, progress=False,
               categories=["chair", "table", "airplane", "mug"])
    return root


def overrides(data: Path, out: Path, *extra: str) -> list[str]:
    return [f"data.root={data}", f"data.points={POINTS}_npy", f"data.point_file_pattern={{object_id}}_{POINTS}.npy",
            f"data.num_points={POINTS}", f"train.output_dir={out}", *extra]


def test_two_stages_end_to_end(tiny_data, tmp_path):
    r1 = load_recipe("tiny_stage1", overrides(tiny_data, tmp_path / "s1", "train.max_steps=3", "train.save_steps=2"))
    out1 = train(r1, log=lambda *_: None)
    assert out1.global_step == 3
    summary = json.loads((tmp_path / "s1" / "train_summary.json").read_text())
    logged = {k for entry in summary["log_history"] for k in entry}
    assert {"loss_ce", "loss_mask", "loss_recon"} <= logged
    assert (out1.model_dir / "model.safetensors").is_file()
    assert last_checkpoint(tmp_path / "s1").endswith("checkpoint-3")
    assert not any((tmp_path / "s1" / ".staging").glob("checkpoint-*")), "staged checkpoints are moved into place"

    r2 = load_recipe("tiny_stage2", overrides(tiny_data, tmp_path / "s2", f"init_from={out1.model_dir}",
                                               "train.max_steps=2"))
    out2 = train(r2, log=lambda *_: None)
    cfg = json.loads((out2.model_dir / "config.json").read_text())
    assert cfg["aggregation_config"]["enabled"] and cfg["objective_config"]["name"] == "none"
    assert [h["stage"] for h in cfg["training_state"]["history"]] == [1, 2]
    assert cfg["training_state"]["steps"] == 5
    # the aggregation gate received gradient and moved off 0
    gates = [p for n, p in out2.model.named_parameters() if n.endswith(".gate")]
    assert gates and any(float(g.detach().abs()) > 0 for g in gates)


def test_eager_attention_trains_the_same_maths_and_the_saved_model_keeps_sdpa(tiny_data, tmp_path):
    losses = {}
    for impl in ("sdpa", "eager"):
        r = load_recipe("tiny_stage1", overrides(tiny_data, tmp_path / impl, "train.max_steps=2", "train.bf16=false",
                                                 f"train.attn_implementation={impl}", "point_config.color_skip=true"))
        out = train(r, log=lambda *_: None)
        summary = json.loads((tmp_path / impl / "train_summary.json").read_text())
        losses[impl] = [e["loss_ce"] for e in summary["log_history"] if "loss_ce" in e] or [summary["train_loss"]]
        assert out.model.config._attn_implementation == "sdpa"  # restored before saving
        cfg = json.loads((out.model_dir / "config.json").read_text())
        assert cfg["point_config"]["color_skip"] is True
    assert losses["sdpa"] == pytest.approx(losses["eager"], rel=1e-4)
    with pytest.raises(ConfigError, match="attn_implementation must be one of eager, sdpa"):
        load_recipe("tiny_stage1", ["train.attn_implementation=flash"])


def test_the_removed_color_skip_from_loads_when_off_and_is_refused_with_the_fix_when_on():
    from enel.train.recipe import recipe_from_dict

    data = load_recipe("tiny_stage1").to_dict()
    off = recipe_from_dict({**data, "train": {**data["train"], "color_skip_from": 0.0}})
    assert off == load_recipe("tiny_stage1")
    with pytest.raises(ConfigError, match=r"train.color_skip_from was removed after enel 0.1.0 \(.*83 %.*delete it"):
        recipe_from_dict({**data, "train": {**data["train"], "color_skip_from": 0.4}})


def test_stage2_needs_a_stage1_folder(tiny_data, tmp_path):
    r2 = load_recipe("tiny_stage2", overrides(tiny_data, tmp_path / "s2", f"init_from={tmp_path / 'missing'}"))
    with pytest.raises(Exception, match="no ENEL model"):
        train(r2, log=lambda *_: None)


def test_recipe_errors_are_clear(tiny_data, tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_recipe("no_such_recipe")
    with pytest.raises(ConfigError, match="objective.name=none"):
        load_recipe("tiny_stage2", ["objective.name=hybrid"])
    r = load_recipe("tiny_stage1", overrides(tiny_data, tmp_path / "x", "data.anno=[anno/missing.json]"))
    with pytest.raises(ConfigError, match="enel data synth"):
        train(r, log=lambda *_: None)


def test_point_config_fields_are_overridable_on_a_preset_name_or_a_dict():
    r = load_recipe("tiny_stage1", ["point_config.color_skip=true", "point_config.group_size=8"])
    assert r.point_config == {"preset": "small", "color_skip": True, "group_size": 8}  # the recipe says "small"
    r = load_recipe("smollm2_stage1", ["point_config.input_points=256"])
    assert r.point_config["input_points"] == 256 and r.point_config["preset"] == "small"  # the rest is kept
    from enel.train.recipe import apply_overrides

    # no point_config means the small preset (PointEmbeddingConfig.from_spec): a field override starts from it
    assert apply_overrides({"point_config": None}, ["point_config.color_skip=true"])["point_config"] == \
        {"preset": "small", "color_skip": True}
    with pytest.raises(ConfigError, match="'nope' is not a section"):
        load_recipe("tiny_stage1", ["train.nope.x=1"])


def _cli(*args: str, env=None) -> list[str]:
    return [sys.executable, "-m", "enel.cli", *args]


@pytest.mark.slow
def test_kill_and_resume_continues_from_the_last_checkpoint(tiny_data, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--recipe", "tiny_stage1", *overrides(tiny_data, out, "train.max_steps=8", "train.save_steps=2",
                                                              "train.save_total_limit=5")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_cli(*args), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    try:
        while time.time() < deadline and not (out / "checkpoint-4").is_dir():
            if proc.poll() is not None:
                pytest.fail("training ended before it could be killed")
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert (out / "checkpoint-4").is_dir() and not (out / "model").exists()
    resumed_from = last_checkpoint(out)
    assert resumed_from is not None and int(resumed_from.rsplit("-", 1)[1]) >= 4

    done = subprocess.run(_cli(*args, "--resume"), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["global_step"] == 8
    assert summary["resumed_from"] == resumed_from, "resumed, not restarted"
    steps = [e["step"] for e in summary["log_history"] if "loss" in e]
    assert steps == list(range(1, 9)), "each step logged once: the restored history plus the resumed steps"


DDP_WORKER = r'''
import hashlib, os, sys, torch
from enel.train.recipe import load_recipe
from enel.train.run import train
outcome = train(load_recipe("tiny_stage1", sys.argv[2:]), log=lambda *a: None)
h = hashlib.sha256()
# parameters (BatchNorm running statistics are buffers that DDP re-broadcasts from rank 0 before each forward,
# so after the last step each rank still holds its own)
for name, p in sorted(outcome.model.named_parameters()):
    h.update(name.encode()); h.update(p.detach().float().contiguous().numpy().tobytes())
rank = int(os.environ["RANK"])
open(os.path.join(sys.argv[1], f"rank{rank}.txt"), "w").write(f"{h.hexdigest()} {outcome.global_step}")
'''


@pytest.mark.slow
def test_two_process_gloo_training_keeps_ranks_identical(tiny_data, tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(DDP_WORKER)
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc_per_node", "2", "--master_port", "29517", str(worker), str(tmp_path),
           *overrides(tiny_data, tmp_path / "ddp", "train.max_steps=3", "train.save_steps=10", "train.threads=1")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    r0 = (tmp_path / "rank0.txt").read_text().split()
    r1 = (tmp_path / "rank1.txt").read_text().split()
    assert r0 == r1 and r0[1] == "3"
    assert (tmp_path / "ddp" / "model" / "config.json").is_file()


def test_time_budget_stops_training_and_the_learning_rate_follows_the_clock(tiny_data, tmp_path):
    from enel.train.trainer import BudgetClock

    clock = BudgetClock(minutes=1.0, warmup=0.1, path=tmp_path / "c.json")
    clock.spent = 0.0
    clock.started = None
    assert clock.lr_factor() == pytest.approx(1e-3)  # nothing spent yet: start of the warm-up
    clock.spent = 6.0  # 10 % of the minute: end of the warm-up
    assert clock.lr_factor() == pytest.approx(1.0)
    clock.spent = 33.0  # half-way through the cosine
    assert clock.lr_factor() == pytest.approx(0.5)
    clock.spent = 60.0
    assert clock.lr_factor() == pytest.approx(0.0) and clock.progress() == 1.0

    r = load_recipe("tiny_stage1", overrides(tiny_data, tmp_path / "budget", "train.max_steps=-1",
                                             "train.epochs=100", "train.max_minutes=0.15", "train.save_steps=1000"))
    out = train(r, log=lambda *_: None)
    summary = json.loads((tmp_path / "budget" / "train_summary.json").read_text())
    assert 0 < out.global_step < 100 * 6, "stopped by the budget, far before 100 epochs"
    assert summary["minutes"] < 0.15 + 0.5
    assert json.loads((tmp_path / "budget" / "enel_clock.json").read_text())["spent_seconds"] >= 0.15 * 60 * 0.9
    lrs = [e["learning_rate"] for e in summary["log_history"] if "learning_rate" in e]
    assert lrs[-1] < max(lrs), "the learning rate decays with the clock"


def test_minutes_cap_on_a_step_count_stops_early_and_says_so(tiny_data, tmp_path):
    """With train.max_steps set, train.max_minutes is a cap: the learning rate follows the steps (not the clock),
    training stops when the cap comes first, and the summary records it."""
    r = load_recipe("tiny_stage1", overrides(tiny_data, tmp_path / "cap", "train.max_steps=5000",
                                             "train.max_minutes=0.05", "train.save_steps=10000",
                                             "optim.warmup_ratio=0.0"))
    out = train(r, log=lambda *_: None)
    summary = json.loads((tmp_path / "cap" / "train_summary.json").read_text())
    assert 0 < out.global_step < 5000 and summary["stopped_early"] and summary["max_steps"] == 5000
    lrs = [e["learning_rate"] for e in summary["log_history"] if "learning_rate" in e]
    # a cosine over 5,000 steps has barely moved after a few steps; one that followed the 3-second clock would
    # have decayed towards 0
    assert min(lrs) > 0.99 * r.optim.lr_new, lrs
    full = load_recipe("tiny_stage1", overrides(tiny_data, tmp_path / "full", "train.max_steps=2",
                                                "train.max_minutes=30", "train.save_steps=10000"))
    train(full, log=lambda *_: None)
    assert not json.loads((tmp_path / "full" / "train_summary.json").read_text())["stopped_early"]
