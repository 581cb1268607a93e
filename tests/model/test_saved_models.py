"""Models saved by earlier versions of the code load and give the logits they gave then.

``tests/fixtures/saved_models/`` was written by ``tests/fixtures/make_saved_models.py`` at commit ae5fe37, before
the modeling redesign; a refactor that renames a parameter, re-parses a config differently or changes the maths
of a saved model fails here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from enel.model.saving import load_model

FIXTURES = Path(__file__).parents[1] / "fixtures" / "saved_models"
NAMES = sorted(json.loads((FIXTURES / "manifest.json").read_text()))


def assert_reference_logits(model, folder: Path) -> None:
    """The logits of ``model`` (eval mode) on the fixture's prompt and clouds equal those saved with it."""
    model.eval()
    ids = torch.from_numpy(np.load(folder / "reference_input_ids.npy"))
    clouds = torch.from_numpy(np.load(folder / "reference_clouds.npy"))
    expected = np.load(folder / "reference_logits.npy")
    with torch.no_grad():
        logits = model(input_ids=ids, point_clouds=clouds).logits.float()[:, -expected.shape[1]:]
    np.testing.assert_allclose(logits.numpy(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_a_model_saved_before_the_redesign_gives_the_same_logits(name):
    model, _ = load_model(FIXTURES / name)
    assert_reference_logits(model, FIXTURES / name)


@pytest.mark.parametrize("name", NAMES)
def test_a_raw_load_state_dict_of_a_saved_file_restores_every_weight(name):
    """The Trainer's --resume loads ``model.safetensors`` with ``load_state_dict``, not ``from_pretrained``: the
    saved names and shapes (``objectives.pos_embed``, 0-d gates) must land in the renamed modules, strictly."""
    from safetensors.torch import load_file

    from enel.model import EnelForCausalLM

    folder = FIXTURES / name
    model, _ = load_model(folder)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    state = load_file(folder / "model.safetensors")
    state.setdefault("lm_head.weight", state["model.language_model.embed_tokens.weight"])
    model.load_state_dict(state, strict=True)
    assert_reference_logits(model, folder)
    assert isinstance(model, EnelForCausalLM)


def test_the_fixtures_cover_both_stages():
    configs = {n: json.loads((FIXTURES / n / "config.json").read_text()) for n in NAMES}
    assert any(c["objective_config"]["name"] == "hybrid" for c in configs.values())
    assert {c["aggregation_config"].get("grouping") for c in configs.values() if c["aggregation_config"]["enabled"]} \
        == {"grid", "fps"}
