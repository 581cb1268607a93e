"""``EnelConfig`` and its parts: no torch at import, parsed once, every rule checked in the config, saved configs
read back unchanged, and the starting scales of the new modules taken from the config."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from enel.errors import ConfigError, EnelError
from enel.model import EnelForCausalLM
from enel.model.backbones import tiny_backbone_config
from enel.model.configuration_enel import AggregationConfig, EnelConfig, ObjectiveConfig, PointEmbeddingConfig

SRC = Path(__file__).parents[2] / "src"
FIXTURES = Path(__file__).parents[1] / "fixtures" / "saved_models"

# Importing the package ``enel.model`` registers the model classes with transformers' Auto classes, which imports
# torch; so the check stands in an empty package for it and imports the configuration module alone, with torch and
# numba made unimportable (transformers then runs configuration-only, as it does where torch is not installed).
NO_TORCH_IMPORT = f"""
import sys, types
sys.modules["torch"] = None
sys.modules["numba"] = None
import enel
package = types.ModuleType("enel.model")
package.__path__ = [{str(SRC / "enel" / "model")!r}]
sys.modules["enel.model"] = package
from enel.model.configuration_enel import EnelConfig
config = EnelConfig(objective_config={{"name": "hybrid"}}, aggregation_config={{"enabled": False}})
assert config.point.num_tokens == 129 and config.objective.masks
assert [m for m in sys.modules if m.startswith("enel.") and m not in ("enel.model", "enel.errors",
        "enel.model.configuration_enel")] == [], sorted(m for m in sys.modules if m.startswith("enel."))
print("ok")
"""


def test_the_configuration_imports_no_torch_and_no_numba():
    result = subprocess.run([sys.executable, "-c", NO_TORCH_IMPORT], capture_output=True, text=True,
                            env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


def test_the_parts_are_parsed_once_and_again_when_their_dicts_change():
    config = EnelConfig(objective_config={"name": "hybrid"})
    assert config.point is config.point and config.objective is config.objective  # not re-parsed per read
    assert config.aggregation is config.aggregation
    config.objective_config = {"name": "none"}  # what from_pretrained(..., objective_config=...) does
    assert config.objective.name == "none"
    config.aggregation_config["pooling"] = "max"  # a change inside the dict is seen too
    assert config.aggregation.pooling == "max"


def test_the_cache_of_parsed_parts_is_never_saved(tmp_path):
    config = EnelConfig(text_config=tiny_backbone_config("tiny-llama"), objective_config={"name": "hybrid"})
    fresh = EnelConfig.from_dict(config.to_dict())
    config.point  # noqa: B018 - parse
    assert not any("parsed" in key for key in config.to_dict())
    assert config == fresh
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert not any("parsed" in key for key in saved)
    assert EnelConfig.from_pretrained(tmp_path) == config


def test_the_rules_between_fields_are_checked_by_the_config():
    text = tiny_backbone_config("tiny-llama")  # 4 decoder layers
    with pytest.raises(ConfigError, match="cannot be combined"):
        EnelConfig(text_config=text, objective_config={"name": "hybrid"}, aggregation_config={"enabled": True})
    with pytest.raises(ConfigError, match="head_layer=9 but the backbone has 4"):
        EnelConfig(text_config=text, objective_config={"name": "hybrid", "head_layer": 9})
    with pytest.raises(ConfigError, match="conversation_template"):
        EnelConfig(text_config=text, conversation_template="alpaca")
    # a part assigned after construction (from_pretrained's overrides) is checked when it is read
    config = EnelConfig(text_config=text, objective_config={"name": "hybrid"})
    config.aggregation_config = {"enabled": True}
    with pytest.raises(ConfigError, match="cannot be combined"):
        config.aggregation  # noqa: B018


# fields added since the fixtures were saved, each with the default a saved config reads as, and options removed
# (saved switched off, so they load)
REMOVED = {"point_config": {"class_token", "color_skip_at", "color_token"}}
ADDED = {
    "point_config": {"match_token_scale": True, "class_token_std": 1.0, "color_skip_std": 0.12},
    "objective_config": {"mask_token_std": 0.0, "word_align": 0.0, "word_align_temperature": 0.05},
    "aggregation_config": {"gate_init": 0.0},
}

ADDED_TOP = {"point_encoder": "embedding", "encoder_config": None}


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.iterdir() if p.is_dir()))
def test_a_saved_config_reads_back_as_it_was_written(name):
    saved = json.loads((FIXTURES / name / "config.json").read_text())
    written = EnelConfig.from_pretrained(FIXTURES / name).to_diff_dict()
    for part, added in ADDED.items():
        gone = REMOVED.get(part, set())
        assert {k: v for k, v in written[part].items() if k not in added} == \
            {k: v for k, v in saved[part].items() if k not in gone}
        assert not gone & set(written[part])
        assert {k: written[part][k] for k in added} == added
    # per_layer_pe moved from the objective to the model (stage 2 keeps it): read from where it was saved
    assert written.get("per_layer_pe", False) == saved["objective_config"]["per_layer_pe"]
    # the point path (issue 19): a model saved before it uses the token embedding
    assert {k: written[k] for k in ADDED_TOP} == ADDED_TOP
    assert {k: v for k, v in written.items()
            if k not in ADDED and k not in ADDED_TOP and k not in ("text_config", "per_layer_pe")} == \
        {k: v for k, v in saved.items() if k not in ADDED and k != "text_config"}


def test_the_starting_scales_of_the_new_modules_come_from_the_config():
    point = {"preset": "small", "color_skip": True, "class_token_std": 0.25,
             "color_skip_std": 0.5}
    model, _ = EnelForCausalLM.from_backbone("tiny-llama", point_config=point,
                                             objective_config={"name": "hybrid", "mask_token_std": 0.3})
    inner = model.model
    assert 0.21 < float(inner.point_embedding.class_token.detach().std()) < 0.29  # 384 draws
    assert 0.4 < float(inner.point_projector.color.weight.detach().std()) < 0.6
    assert 0.2 < float(inner.objectives.mask_token.detach().std()) < 0.4
    default, _ = EnelForCausalLM.from_backbone("tiny-llama", objective_config={"name": "hybrid"})
    assert float(default.model.objectives.mask_token.detach().abs().max()) == 0.0  # mask_token_std=0: zeros
    assert ObjectiveConfig().mask_token_std == 0.0 and PointEmbeddingConfig().class_token_std == 1.0

    schedule = [{"aggregate_after": [1], "propagate_after": [3]}]
    staged, _ = EnelForCausalLM.from_backbone("tiny-llama", aggregation_config={
        "enabled": True, "schedule": schedule, "reference_layers": 4, "gate_init": 0.5})
    gates = [m.gate for m in staged.modules() if hasattr(m, "gate") and isinstance(m.gate, torch.nn.Parameter)]
    assert gates and all(float(g.detach()) == 0.5 for g in gates)
    assert AggregationConfig().gate_init == 0.0


def test_a_saved_model_with_a_removed_option_on_fails_to_load_with_the_reason_and_the_fix(tmp_path):
    from enel.model.saving import load_model

    folder = tmp_path / "model"
    shutil.copytree(FIXTURES / "stage1_hybrid", folder)
    config = json.loads((folder / "config.json").read_text())
    config["point_config"]["color_token"] = True
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="color_token=True, an option removed after enel 0.1.0"):
        EnelForCausalLM.from_pretrained(folder)
    with pytest.raises(EnelError, match="color_token=True, an option removed .* retrain without it"):
        load_model(folder)  # the CLI's loader: one line naming the option and the fix
