"""Training on the HF Trainer with tiny backbones: both stages, loss terms, atomic checkpoints, resume, DDP, FSDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY_POINTS
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
    with pytest.raises(ConfigError, match="word_align out"):
        load_recipe("tiny_stage2", ["objective.word_align=1.0"])
    r = load_recipe("tiny_stage1", overrides(tiny_data, tmp_path / "x", "data.anno=[anno/missing.json]"))
    with pytest.raises(ConfigError, match="enel data synth"):
        train(r, log=lambda *_: None)


def test_augmentation_settings_are_checked_when_the_recipe_loads():
    assert load_recipe("smollm2_stage1").data.augment is True  # the CPU default turns procedural clouds
    assert load_recipe("tiny_stage1").data.augment is None
    assert load_recipe("tiny_stage1", ["data.augment={yaw_degrees: 30}"]).data.augment == {"yaw_degrees": 30}
    with pytest.raises(ConfigError, match=r"data.augment: unknown augmentation setting\(s\) \['yaw'\]"):
        load_recipe("tiny_stage1", ["data.augment={yaw: 30}"])
    with pytest.raises(ConfigError, match=r"data.augment: augment yaw_degrees must be a number in \[0, 180\]"):
        load_recipe("tiny_stage1", ["data.augment={yaw_degrees: 360}"])
    with pytest.raises(ConfigError, match="data.modelnet40.augment: augment jitter must be"):
        load_recipe("tiny_stage1", ["data.modelnet40.augment={jitter: -0.1}"])


def test_modelnet40_class_balance_is_a_boolean_setting():
    assert load_recipe("tiny_stage1").data.modelnet40["balance"] is False
    assert load_recipe("tiny_stage1", ["data.modelnet40.balance=true"]).data.modelnet40["balance"] is True
    with pytest.raises(ConfigError, match="data.modelnet40.balance must be true or false, not 'yes please'"):
        load_recipe("tiny_stage1", ["data.modelnet40.balance=yes please"])


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


def _child_env(**extra: str) -> dict[str, str]:
    """The environment of a child process, importing the ``enel`` this test imported (a worktree's ``src``, not
    the one installed in the virtual environment), offline, one thread per process."""
    import enel

    src = str(Path(enel.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **extra}


def _run(cmd: list[str], cwd: Path, env: dict, *, check: bool = True) -> subprocess.CompletedProcess:
    """Run a child process to completion (10 minutes at most); with ``check``, fail the test with its stderr."""
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def _torchrun(*args: str) -> list[str]:
    """Two processes on this machine (gloo on CPUs), on a free port so that parallel runs do not collide."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", "2", "--master_port", str(port),
            *args]


def _assert_same_state(got, want, where: str = "") -> None:
    """Nested dicts / lists of tensors and numbers (an optimiser's ``state_dict``) equal to 1e-6."""
    import torch

    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for k in want:
            _assert_same_state(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_same_state(g, w, f"{where}[{i}]")
    elif isinstance(want, torch.Tensor):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6, msg=lambda m: f"{where}: {m}")
    else:
        assert got == want, where


def test_a_checkpoint_that_cannot_be_written_is_a_clear_error_that_keeps_the_last_one(tiny_data, tmp_path, monkeypatch):
    """A full disk while saving (torch.save raises a RuntimeError) ends the run with a StorageError naming the
    checkpoint, the free space and the one kept, and leaves no half-written folder behind."""
    from transformers import Trainer

    from enel.errors import StorageError

    real_save = Trainer._save_checkpoint

    def save(self, model, trial):
        if self.state.global_step == 4:
            os.makedirs(os.path.join(self.args.output_dir, "checkpoint-4"), exist_ok=True)  # a partial write
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 463485376")
        return real_save(self, model, trial)

    monkeypatch.setattr(Trainer, "_save_checkpoint", save)
    out = tmp_path / "full"
    r = load_recipe("tiny_stage1", overrides(tiny_data, out, "train.max_steps=6", "train.save_steps=2"))
    with pytest.raises(StorageError) as err:
        train(r, log=lambda *_: None)
    msg = str(err.value)
    assert "could not write checkpoint-4" in msg and "GiB free on that disk" in msg and "unexpected pos" in msg
    assert "checkpoint-2, is kept" in msg and "--resume" in msg
    assert (out / "checkpoint-2").is_dir() and not (out / "checkpoint-4").exists()
    assert not (out / ".staging" / "checkpoint-4").exists()
    assert last_checkpoint(out).endswith("checkpoint-2")


@pytest.mark.slow
def test_kill_and_resume_ends_where_an_uninterrupted_run_ends(tiny_data, tmp_path):
    """A run killed with SIGKILL after its step-4 checkpoint, then resumed, ends with the weights (buffers
    included), optimiser moments, schedule and per-step losses of the same run left alone (same seed).

    The recipe's hybrid objective draws random masks every step, so the resumed steps match only if the RNG
    state is restored with the weights, optimiser and data position.
    """
    import torch
    from safetensors.torch import load_file

    def args(out: Path) -> list[str]:
        return ["train", "--recipe", "tiny_stage1", *overrides(tiny_data, out, "train.max_steps=8", "train.save_steps=2",
                                                               "train.save_total_limit=5", "train.threads=1")]

    env = _child_env(PYTHONUNBUFFERED="1")
    ref = tmp_path / "uninterrupted"
    _run(_cli(*args(ref)), tmp_path, env)

    out = tmp_path / "run"
    proc = subprocess.Popen(_cli(*args(out)), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
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
    assert resumed_from is not None and 4 <= int(resumed_from.rsplit("-", 1)[1]) < 8

    _run(_cli(*args(out), "--resume"), tmp_path, env)
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["global_step"] == 8
    assert summary["resumed_from"] == resumed_from, "resumed, not restarted"
    steps = [e["step"] for e in summary["log_history"] if "loss" in e]
    assert steps == list(range(1, 9)), "each step logged once: the restored history plus the resumed steps"
    weights, expected = load_file(out / "model" / "model.safetensors"), load_file(ref / "model" / "model.safetensors")
    assert weights.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(weights[name], expected[name], rtol=0, atol=1e-6, msg=lambda m: f"{name}: {m}")
    for part in ("optimizer.pt", "scheduler.pt"):
        _assert_same_state(torch.load(out / "checkpoint-8" / part, weights_only=False),
                           torch.load(ref / "checkpoint-8" / part, weights_only=False), part)
    want = json.loads((ref / "train_summary.json").read_text())
    for key in ("loss", "loss_ce", "loss_mask", "loss_recon", "learning_rate"):
        assert [e[key] for e in summary["log_history"] if "loss" in e] == pytest.approx(
            [e[key] for e in want["log_history"] if "loss" in e], rel=1e-5, abs=1e-7), key


DDP_WORKER = r"""
import hashlib, os, sys, torch
from enel.train import trainer as T
from enel.train.recipe import load_recipe
from enel.train.run import train

seen = []  # (optimiser step, hash of the micro-batch's cloud and token ids), in the order this process trained
compute_loss = T.EnelTrainer.compute_loss
def recording(self, model, inputs, *args, **kwargs):
    if model.training:
        h = hashlib.sha256(inputs["point_clouds"].numpy().tobytes() + inputs["input_ids"].numpy().tobytes())
        seen.append((self.state.global_step, h.hexdigest()[:16]))
    return compute_loss(self, model, inputs, *args, **kwargs)
T.EnelTrainer.compute_loss = recording
outcome = train(load_recipe("tiny_stage1", sys.argv[2:]), log=lambda *a: None)
trained = {n: p.detach().clone() for n, p in outcome.model.named_parameters() if p.requires_grad}
torch.save({"params": trained, "seen": seen, "steps": outcome.global_step},
           os.path.join(sys.argv[1], f"rank{os.environ.get('RANK', '0')}.pt"))
"""


@pytest.mark.slow
def test_two_process_gloo_training_equals_one_process_on_both_shards(tiny_data, tmp_path):
    """Two gloo ranks, one sample each per step, give the weights of one process that accumulates the same two
    samples per step (batch 1, grad_accum 2: the mean of the two per-sample gradients, as DDP's all-reduce).

    The ranks must see different samples (so unsynchronised gradients would pull them apart) whose interleaving
    is the single process's order. The objective is ``reconstruction``, which draws no random masks (the
    single process would draw its masks in another order). BatchNorm running statistics are buffers, not
    compared: DDP re-broadcasts rank 0's before each forward, so each rank keeps its own after the last step.
    """
    import torch

    worker = tmp_path / "worker.py"
    worker.write_text(DDP_WORKER)
    (tmp_path / "ddp").mkdir()
    (tmp_path / "single").mkdir()
    common = ["train.max_steps=3", "train.save_steps=10", "train.threads=1", "train.batch_size=1",
              "objective.name=reconstruction"]
    env = _child_env()
    _run(_torchrun(str(worker), str(tmp_path / "ddp"), *overrides(tiny_data, tmp_path / "ddp" / "run", *common)),
         tmp_path, env)
    _run([sys.executable, str(worker), str(tmp_path / "single"),
          *overrides(tiny_data, tmp_path / "single" / "run", *common, "train.grad_accum=2")], tmp_path, env)

    r0, r1, one = (torch.load(tmp_path / f, weights_only=False)
                   for f in ("ddp/rank0.pt", "ddp/rank1.pt", "single/rank0.pt"))
    assert r0["steps"] == r1["steps"] == one["steps"] == 3
    assert len(r0["seen"]) == len(r1["seen"]) == 3
    assert not {h for _, h in r0["seen"]} & {h for _, h in r1["seen"]}, "each rank trains on its own shard"
    assert [x for pair in zip(r0["seen"], r1["seen"]) for x in pair] == one["seen"], \
        "step k of the two ranks is micro-batches 2k and 2k+1 of the single process"
    assert r0["params"].keys() == one["params"].keys()
    for name, ref in one["params"].items():
        torch.testing.assert_close(r0["params"][name], ref, rtol=0, atol=1e-6, msg=lambda m: f"{name}: {m}")
        torch.testing.assert_close(r1["params"][name], ref, rtol=0, atol=1e-6, msg=lambda m: f"{name}: {m}")
    assert (tmp_path / "ddp" / "run" / "model" / "config.json").is_file()


FSDP_WORKER = r"""
import os, sys, torch
from enel.data.collate import EnelCollator, model_inputs
from enel.train.freezing import parameter_groups
from enel.train.recipe import load_recipe
from enel.train.run import build_datasets, build_model

out, mode, recipe_name, *overrides = sys.argv[1:]
recipe = load_recipe(recipe_name, overrides)
torch.manual_seed(recipe.train.seed)
model, tokenizer, _ = build_model(recipe)
dataset, _ = build_datasets(recipe, model, tokenizer)
collate = EnelCollator.from_tokenizer(tokenizer, return_extras=False)
rank, local = 0, {}
if mode == "fsdp":
    from torch.distributed.fsdp import fully_shard
    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    for module in list(model.modules()):  # the recipes' transformer_layer_cls_to_wrap, then the rest as the root
        if type(module).__name__ == "LlamaDecoderLayer":
            fully_shard(module)
    fully_shard(model)
optimizer = torch.optim.AdamW(parameter_groups(model, lr_new=1e-3, lr_llm=1e-3), lr=1e-3)
model.train()
for step in range(2):  # rank r trains sample 2·step + r; the single process accumulates both
    shards = [rank] if mode == "fsdp" else [0, 1]
    for r in shards:
        (model(**model_inputs(collate([dataset[2 * step + r]]))).loss / len(shards)).backward()
    optimizer.step()
    optimizer.zero_grad()
full = {}
for name, p in model.named_parameters():
    p = p.detach()
    if hasattr(p, "to_local"):  # a DTensor: this rank's shard
        local[name] = p.to_local().numel()
        p = p.full_tensor()
    full[name] = p.clone()
torch.save({"params": full, "local_numel": local}, os.path.join(out, f"{mode}{rank}.pt"))
"""

FSDP_STAGES = [
    pytest.param("tiny_stage1", [], id="stage1"),
    pytest.param("tiny_stage2", [f"init_from={REPO / 'tests/fixtures/saved_models/stage1_hybrid'}"], id="stage2"),
]
# FSDP1 and FSDP2 refuse 0-d parameters: the aggregation gate α is held as shape (1,) for that (stage 2 failed
# with "fully_shard doesn't support scalar parameters" while it was torch.zeros(()))


@pytest.mark.slow
@pytest.mark.parametrize("recipe,extra", FSDP_STAGES)
def test_fsdp_shards_and_trains_like_one_process(tiny_data, tmp_path, recipe, extra):
    """FSDP2 (``fully_shard``, the Trainer's default FSDP version) over 2 gloo CPU processes, each decoder layer
    its own unit as in the 7B recipes: the parameters are split between the ranks, and after 2 AdamW steps on
    different samples the gathered weights equal one process accumulating both samples per step.

    ``fully_shard`` is called directly: on CPU the Trainer's ``train.fsdp`` is ignored (accelerate 1.15 turns
    FSDP on only for GPU-like distributed types; a CPU run under ``torchrun`` is wrapped in DDP instead).
    """
    import torch

    worker = tmp_path / "worker.py"
    worker.write_text(FSDP_WORKER)
    objective = "reconstruction" if recipe == "tiny_stage1" else "none"  # no random masks: one process can match
    args = [recipe, *overrides(tiny_data, tmp_path / "run", f"objective.name={objective}", *extra)]
    env = _child_env()
    done = _run(_torchrun(str(worker), str(tmp_path), "fsdp", *args), tmp_path, env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    _run([sys.executable, str(worker), str(tmp_path), "single", *args], tmp_path, env)

    r0, r1, one = (torch.load(tmp_path / f, weights_only=False) for f in ("fsdp0.pt", "fsdp1.pt", "single0.pt"))
    assert r0["local_numel"].keys() == one["params"].keys(), "every parameter is sharded"
    layer = [n for n in one["params"] if ".layers.0." in n and n.endswith("q_proj.weight")]
    assert len(layer) == 1
    for name in one["params"]:
        assert r0["local_numel"][name] + r1["local_numel"][name] == one["params"][name].numel(), name
    assert 0 < r0["local_numel"][layer[0]] < one["params"][layer[0]].numel(), "each rank holds part of a layer"
    for name, ref in one["params"].items():
        torch.testing.assert_close(r0["params"][name], ref, rtol=0, atol=1e-6, msg=lambda m: f"{name}: {m}")
        torch.testing.assert_close(r1["params"][name], ref, rtol=0, atol=1e-6, msg=lambda m: f"{name}: {m}")


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


def test_stage2_keeps_the_per_layer_positional_encoding_of_stage1(tmp_path):
    """A stage-1 model with the per-layer PE, made into stage 2 as ``enel train`` does (``init_from``, the
    objectives switched off, aggregation on), still adds the PE before every layer: with one token per grid cell
    and the gate closed (aggregation then the identity) it gives the stage-1 model's logits, which it would not
    without the PE."""
    from enel.data.conversation import build_prompt, tokenize_prompts
    from enel.model.saving import save_model
    from enel.model import EnelForCausalLM
    from enel.train.recipe import replace
    from enel.train.run import build_model

    stage1, tok = EnelForCausalLM.from_backbone("tiny-llama", point_config=TINY_POINTS, seed=0,
                                                objective_config={"name": "hybrid", "per_layer_pe": True})
    with torch.no_grad():
        stage1.model.point_pos_embed[2].bias.fill_(0.5)  # an encoding that is surely not negligible
    folder = save_model(stage1.eval(), tok, tmp_path / "stage1")
    singleton = {"enabled": True, "grouping": "grid", "schedule": [{"aggregate_after": [1], "propagate_after": [3]}],
                 "reference_layers": 4, "grid_alpha": 1e-4, "grid_min": 1e-4, "grid_max": 1e-4}
    recipe = replace(load_recipe("tiny_stage2", [f"init_from={folder}"]), aggregation=singleton)
    stage2 = build_model(recipe)[0].eval()
    assert stage2.model.objectives is None and stage2.model.aggregation is not None
    assert stage2.config.per_layer_pe and stage2.model.point_pos_embed is not None
    torch.testing.assert_close(stage2.model.point_pos_embed[2].bias, stage1.model.point_pos_embed[2].bias)
    assert all(p.requires_grad for p in stage2.model.point_pos_embed.parameters())  # stage 2 trains it
    prompt = build_prompt(tok, "What is this?", template="chat", num_point_tokens=129)
    enc = tokenize_prompts(tok, [prompt], "chat")
    cloud = torch.rand(1, 1024, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = stage1(**enc, point_clouds=cloud).logits
        torch.testing.assert_close(stage2(**enc, point_clouds=cloud).logits, reference, atol=1e-5, rtol=1e-5)
        stage2.model.point_pos_embed = None  # what stage 2 did before: the PE dropped
        assert not torch.allclose(stage2(**enc, point_clouds=cloud).logits, reference, atol=1e-3)
