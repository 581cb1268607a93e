"""The `enel` command: inference on files with a freshly initialised model, tokens, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from enel.cli import main
from enel.errors import ModelLoadError
from enel.model.backbones import resolve_backbone
from enel.paths import bundled_sample


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    import torch

    from enel.model.saving import save_model
    from enel.model import EnelForCausalLM

    torch.manual_seed(0)
    model, tok = EnelForCausalLM.from_backbone(
        "tiny-llama", point_config={"embed_dim": 24, "group_size": 8, "projector_hidden": [64], "num_points": 1024})
    return save_model(model, tok, tmp_path_factory.mktemp("m") / "model")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from enel.points.io import load_point_cloud, save_point_cloud

    d = tmp_path_factory.mktemp("clouds")
    cloud = load_point_cloud(bundled_sample())
    save_point_cloud(d / "chair.ply", cloud)
    np.save(d / "chair.npy", cloud.as_array()[:3000])
    return d


def test_caption_on_ply_and_npy_with_an_untrained_model(model_dir, files, capsys):
    rc = main(["caption", str(files / "chair.ply"), str(files / "chair.npy"), "--model", str(model_dir),
               "--json", "--max-new-tokens", "6"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["trained"] is False and "untrained" in doc["warning"]
    assert [Path(r["file"]).suffix for r in doc["results"]] == [".ply", ".npy"]
    assert all(r["points"] == 1024 and isinstance(r["output"], str) for r in doc["results"])
    assert doc["results"][0]["prompt"] == "Caption this 3D model in detail."


def test_classify_both_prompts_and_ask(model_dir, files, capsys):
    assert main(["classify", str(files / "chair.ply"), "--model", str(model_dir), "--prompt", "both", "--json",
                 "--max-new-tokens", "4"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["prompt"] for r in doc["results"]] == ["What is this?", "This is an object of "]
    assert main(["ask", str(files / "chair.npy"), "What colour is the seat?", "--model", str(model_dir),
                 "--max-new-tokens", "4", "--points", "512"]) == 0
    captured = capsys.readouterr()
    assert "untrained" in captured.err


def test_seeded_sampling_is_reproducible_from_the_cli(model_dir, files, capsys):
    args = ["caption", str(files / "chair.ply"), "--model", str(model_dir), "--json", "--sample", "--seed", "7",
            "--temperature", "1.5", "--max-new-tokens", "8"]
    main(args)
    first = json.loads(capsys.readouterr().out)["results"][0]["output"]
    main(args)
    assert json.loads(capsys.readouterr().out)["results"][0]["output"] == first


@pytest.mark.parametrize("argv, message", [
    (["caption", "missing.ply"], "missing.ply"),
    (["caption", "{dir}/cloud.xyz_unknown"], "extension"),
    (["caption", "{dir}/chair.ply", "--model", "{dir}/no-model"], "no ENEL model"),
    (["tokens", "{dir}/nan.npy"], "NaN"),
    (["train", "--recipe", "nope"], "not found"),
    (["train", "--recipe", "tiny_stage1", "train.batch_size=many"], "must be a number"),
])
def test_bad_input_gets_one_line_and_exit_status_2(argv, message, model_dir, files, tmp_path, capsys):
    (tmp_path / "cloud.xyz_unknown").write_text("0 0 0\n1 1 1\n")
    nan = np.random.default_rng(0).random((100, 6)).astype(np.float32)
    nan[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    (tmp_path / "chair.ply").write_bytes((files / "chair.ply").read_bytes())
    argv = [a.format(dir=tmp_path) for a in argv]
    if argv[0] in ("caption",) and "--model" not in argv:
        argv += ["--model", str(model_dir)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err


def test_tokens_on_the_bundled_sample(capsys):
    assert main(["tokens", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["tokens"] == [1, 129, 384] and info["points_in_file"] == 8192 and info["colour"].startswith("file")


def test_backbone_errors_name_what_is_supported(tmp_path):
    with pytest.raises(ModelLoadError, match="supported backbones"):
        resolve_backbone(tmp_path / "nowhere")
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ModelLoadError, match="'gpt2'.*llama"):
        resolve_backbone(tmp_path / "gpt2")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        resolve_backbone(tmp_path / "bad")


def test_the_console_script_runs_in_a_fresh_process(tmp_path):
    out = subprocess.run([sys.executable, "-m", "enel.cli", "tokens", str(bundled_sample()), "--points", "512"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0 and "[1, 129, 384]" in out.stdout


def test_python_dash_m_enel_is_the_enel_command():
    out = subprocess.run([sys.executable, "-m", "enel", "--help"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0 and out.stdout.startswith("usage: enel") and "quickstart" in out.stdout


@pytest.mark.slow
def test_converted_smollm2_is_reused_and_rebuilt_when_corrupt(tmp_path, monkeypatch):
    from enel.model.backbones import prepare_default_backbone

    monkeypatch.setenv("ENEL_CACHE", str(tmp_path))
    folder = prepare_default_backbone(verbose=False)
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert prepare_default_backbone(verbose=False) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp, "reused, not rebuilt"
    with open(folder / "model.safetensors", "r+b") as f:  # damage the weights
        f.seek(4096)
        f.write(b"\0" * 64)
    prepare_default_backbone(verbose=False)
    assert (folder / "model.safetensors").stat().st_mtime_ns != stamp, "a corrupt conversion is rebuilt"
