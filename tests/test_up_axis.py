"""The up axis at the model's door: prepare_cloud(up=...), the point tokens it gives, and `--up` on the CLI."""

from __future__ import annotations

import json

import numpy as np
import torch

from enel.cli import main
from enel.inference import prepare_cloud
from enel.model.configuration_enel import PointEmbeddingConfig
from enel.model.embedding import PointTokenEmbedding


def _z_up_cloud(n: int = 2000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xyz = rng.normal(size=(n, 3)) * [0.3, 0.5, 1.0] + [0.0, 0.0, 2.0]  # tall along z
    return np.concatenate([xyz, rng.random((n, 3))], axis=1).astype(np.float32)


def _as_y_up(points: np.ndarray) -> np.ndarray:
    """The procedural generator's y-up mapping (x, y, z) -> (x, z, -y)."""
    out = points.copy()
    out[:, 1], out[:, 2] = points[:, 2], -points[:, 1]
    return out


def test_y_up_cloud_with_up_y_gives_the_z_up_model_input_and_tokens(tmp_path):
    zup = _z_up_cloud()
    yup = _as_y_up(zup)
    a, _ = prepare_cloud(zup, 512)
    b, _ = prepare_cloud(yup, 512, up="y")
    wrong, _ = prepare_cloud(yup, 512)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert not np.allclose(a, wrong, atol=1e-2)
    np.save(tmp_path / "yup.npy", yup)  # the same through a file
    c, cloud = prepare_cloud(tmp_path / "yup.npy", 512, up="y")
    np.testing.assert_allclose(a, c, atol=1e-6)
    np.testing.assert_array_equal(cloud.xyz, yup[:, :3])  # the loaded cloud stays as read

    torch.manual_seed(0)
    emb = PointTokenEmbedding(PointEmbeddingConfig.small(embed_dim=24, group_size=8, projector_hidden=[64],
                                                         num_points=512)).eval()
    with torch.no_grad():
        ta = emb(torch.from_numpy(a)[None]).features
        tb = emb(torch.from_numpy(b)[None]).features
        tw = emb(torch.from_numpy(wrong)[None]).features
    torch.testing.assert_close(ta, tb, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(ta, tw, atol=1e-3)


def test_tokens_up_flag_and_bad_value(tmp_path, capsys):
    np.save(tmp_path / "c.npy", _as_y_up(_z_up_cloud()))
    assert main(["tokens", str(tmp_path / "c.npy"), "--points", "256", "--up", "y", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["up"] == "y"
    try:
        main(["caption", str(tmp_path / "c.npy"), "--up", "x"])
    except SystemExit as exc:  # argparse rejects it before anything is read
        assert exc.code == 2
    assert "invalid choice: 'x'" in capsys.readouterr().err
