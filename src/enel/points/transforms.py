"""Point-cloud transforms: normalisation, resampling and rigid motions.

numpy functions work on one cloud ``(N, C)``; the torch functions work on batches ``(B, N, 3)`` and draw their
randomness from a ``torch.Generator`` (used by the contrastive stage-1 objective). All are pure: the inputs
are never modified. Bad arguments to :func:`pc_norm` and :func:`resample` (which see user data and flags)
raise :class:`~enel.errors.PointCloudError` (a ``ValueError``); shape errors in the rigid transforms, which
only code calls, raise ``ValueError``.

* :func:`pc_norm` — PointLLM's normalisation: centre on the centroid, scale into the unit sphere.
* :func:`resample` — exactly ``n`` points: FPS or a seeded random subset down, seeded duplicates up.
* :func:`random_rotation`, :func:`apply_rigid` — one uniform random rotation and ``x -> R x + t`` (numpy).
* :func:`random_rigid_transforms`, :func:`apply_rigid_torch` — the batched torch versions.
* :func:`to_z_up` — the project's canonical frame is **z-up**; turn a y-up cloud into it.
* :func:`rotation_z`, :func:`augment_cloud`, :func:`random_resolution` — training augmentation: a yaw about
  the up axis, anisotropic scale and clipped jitter; a random input resolution before the model's resample.
"""

from __future__ import annotations

import numpy as np
import torch

from enel.errors import PointCloudError
from enel.points.ops import farthest_point_sample_np

__all__ = [
    "pc_norm",
    "resample",
    "model_input",
    "with_zero_color",
    "RESAMPLE_METHODS",
    "random_rotation",
    "apply_rigid",
    "random_rigid_transforms",
    "apply_rigid_torch",
    "UP_AXES",
    "to_z_up",
    "rotation_z",
    "augment_cloud",
    "random_resolution",
]

RESAMPLE_METHODS: tuple[str, ...] = ("fps", "random")


def pc_norm(xyz: np.ndarray) -> np.ndarray:
    """PointLLM's ``pc_norm``: subtract the centroid, divide by the largest distance from it.

    Args:
        xyz: ``(N, 3)`` coordinates, ``N >= 1``.

    Returns:
        ``(N, 3)`` float32 inside the unit sphere, centroid at the origin, farthest point at radius 1.
        A cloud whose points all coincide has radius 0: it is returned centred (all zeros) instead of being
        divided by zero. :func:`enel.points.io.load_point_cloud` rejects such clouds before they get here.
    """
    pts = np.asarray(xyz, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or pts.shape[0] == 0:
        raise PointCloudError(f"pc_norm expects (N, 3) coordinates with N >= 1, got shape {pts.shape}")
    centred = pts - pts.mean(axis=0)
    radius = float(np.sqrt((centred**2).sum(axis=1)).max())
    if radius > 0:
        centred = centred / radius
    return centred.astype(np.float32)


def resample(points: np.ndarray, n: int, *, method: str = "fps", seed: int = 0) -> np.ndarray:
    """Exactly ``n`` points from a cloud.

    Args:
        points: ``(N, C)`` with xyz in the first three columns (extra columns such as rgb follow their point).
        n: number of points wanted, ``n >= 1``.
        method: how to go down (``N > n``): ``"fps"`` — farthest point sampling from index 0
            (:func:`enel.points.ops.farthest_point_sample_np`, deterministic, output in FPS pick order), or
            ``"random"`` — a random subset without replacement drawn with ``seed``, kept in input order.
        seed: seeds the random subset and the duplicates.

    Returns:
        ``(n, C)`` of the input dtype. ``N == n``: a copy of the input. ``N < n`` (both methods): all ``N``
        points in input order followed by ``n - N`` duplicates drawn uniformly with replacement with ``seed``;
        duplicates are exact copies, so the cloud's shape is unchanged.
    """
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] < 3 or pts.shape[0] == 0:
        raise PointCloudError(f"resample expects (N, C >= 3) points with N >= 1, got shape {pts.shape}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise PointCloudError(f"resample needs a positive integer n, got {n!r}")
    if method not in RESAMPLE_METHODS:
        raise PointCloudError(f"unknown resample method {method!r}; choose one of {', '.join(RESAMPLE_METHODS)}")
    count = pts.shape[0]
    if count == n:
        return pts.copy()
    rng = np.random.default_rng(seed)
    if count < n:
        extra = rng.integers(0, count, size=n - count)
        return np.concatenate([pts, pts[extra]], axis=0)
    if method == "fps":
        idx = farthest_point_sample_np(pts[:, :3], int(n), start=0)
    else:
        idx = np.sort(rng.choice(count, size=int(n), replace=False))
    return pts[idx]


def model_input(points: np.ndarray, num_points: int, *, method: str = "fps", seed: int = 0) -> np.ndarray:
    """The model's input rule: exactly ``num_points`` points (:func:`resample`), then xyz normalised into the unit
    sphere (:func:`pc_norm`); columns after xyz (rgb) follow their point unchanged.

    ``(N, C)`` -> ``(num_points, C)`` float32. Every path that hands a cloud to a model (training data, the
    evaluations, ``prepare_cloud``) goes through this function, in this order.
    """
    pts = resample(points, num_points, method=method, seed=seed).astype(np.float32)
    pts[:, :3] = pc_norm(pts[:, :3])
    return pts


def with_zero_color(xyz: np.ndarray) -> np.ndarray:
    """``(N, 3)`` -> ``(N, 6)`` float32 with zero rgb: how a colourless cloud is fed (PointLLM's ModelNet40 rule)."""
    xyz = np.asarray(xyz, dtype=np.float32)
    return np.concatenate([xyz, np.zeros_like(xyz)], axis=1)


# ----------------------------------------------------------------------------------------------------------
# Rigid transforms
# ----------------------------------------------------------------------------------------------------------
def _quaternion_to_matrix_np(q: np.ndarray) -> np.ndarray:
    """Unit quaternions ``(..., 4)`` as ``(w, x, y, z)`` -> rotation matrices ``(..., 3, 3)``."""
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def _quaternion_to_matrix_torch(q: torch.Tensor) -> torch.Tensor:
    """Unit quaternions ``(B, 4)`` as ``(w, x, y, z)`` -> rotation matrices ``(B, 3, 3)``."""
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """One rotation drawn uniformly (Haar measure) from SO(3).

    A normalised 4-D Gaussian is a uniform unit quaternion, hence a uniform rotation.

    Args:
        rng: the numpy generator to draw from (``np.random.default_rng(seed)``).

    Returns:
        ``(3, 3)`` float64, orthonormal with determinant +1.
    """
    q = rng.standard_normal(4)
    while (norm := float(np.linalg.norm(q))) < 1e-12:  # probability zero; redraw rather than divide by 0
        q = rng.standard_normal(4)
    return _quaternion_to_matrix_np(q / norm)


def apply_rigid(xyz: np.ndarray, rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """``x -> R x + t`` for every point.

    Args:
        xyz: ``(N, 3)`` coordinates.
        rotation: ``(3, 3)`` matrix ``R``.
        translation: ``(3,)`` vector ``t``.

    Returns:
        ``(N, 3)``, float32 for float32 input, float64 otherwise.
    """
    pts = np.asarray(xyz)
    rot = np.asarray(rotation, dtype=np.float64)
    shift = np.asarray(translation, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or rot.shape != (3, 3) or shift.shape != (3,):
        raise ValueError(
            "apply_rigid expects xyz (N, 3), rotation (3, 3), translation (3,), "
            f"got {pts.shape}, {rot.shape}, {shift.shape}"
        )
    out = pts.astype(np.float64) @ rot.T + shift
    return out.astype(np.float32 if pts.dtype == np.float32 else np.float64)


def random_rigid_transforms(
    batch: int,
    *,
    generator: torch.Generator | None = None,
    max_translation: float = 0.2,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of random rigid motions: uniform rotations and bounded translations.

    Args:
        batch: number of transforms ``B``.
        generator: the ``torch.Generator`` for the draws; a seeded generator gives the same transforms.
            Numbers are drawn on the generator's device (CPU when ``None``) and then moved to ``device``.
        max_translation: each translation component is uniform in ``[-max_translation, max_translation]``.
        device: where the results live (default: the generator's device).
        dtype: floating dtype of the results.

    Returns:
        ``(R, t)``: ``R (B, 3, 3)`` proper rotations (orthonormal, det +1, Haar-uniform) and ``t (B, 3)``.
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 0:
        raise ValueError(f"batch must be a non-negative integer, got {batch!r}")
    if not max_translation >= 0:
        raise ValueError(f"max_translation must be >= 0, got {max_translation!r}")
    draw_device = generator.device if generator is not None else torch.device("cpu")
    q = torch.randn(batch, 4, generator=generator, device=draw_device, dtype=torch.float64)
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    rotation = _quaternion_to_matrix_torch(q)
    u = torch.rand(batch, 3, generator=generator, device=draw_device, dtype=torch.float64)
    translation = (2.0 * u - 1.0) * max_translation
    target = torch.device(device) if device is not None else draw_device
    return rotation.to(device=target, dtype=dtype), translation.to(device=target, dtype=dtype)


def apply_rigid_torch(xyz: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Batched ``x -> R_b x + t_b``.

    Args:
        xyz: ``(B, N, 3)`` coordinates.
        R: ``(B, 3, 3)`` rotations.
        t: ``(B, 3)`` translations.

    Returns:
        ``(B, N, 3)`` in the dtype of ``xyz`` (differentiable in all three inputs).
    """
    if xyz.dim() != 3 or xyz.shape[-1] != 3:
        raise ValueError(f"apply_rigid_torch expects xyz (B, N, 3), got {tuple(xyz.shape)}")
    batch = xyz.shape[0]
    if R.shape != (batch, 3, 3) or t.shape != (batch, 3):
        raise ValueError(
            f"apply_rigid_torch expects R ({batch}, 3, 3) and t ({batch}, 3), got {tuple(R.shape)}, {tuple(t.shape)}"
        )
    return xyz @ R.to(xyz.dtype).transpose(1, 2) + t.to(xyz.dtype).unsqueeze(1)



# ----------------------------------------------------------------------------------------------------------
# The up axis
# ----------------------------------------------------------------------------------------------------------
UP_AXES: tuple[str, ...] = ("z", "y")
"""Up axes a cloud may come in. The project's canonical frame is z-up (the procedural data, ModelNet40's
meshes and its npz); PointLLM's Objaverse files and its ModelNet40 ``.dat`` are y-up."""


def to_z_up(points: np.ndarray, up: str) -> np.ndarray:
    """Turn a cloud into the canonical z-up frame.

    ``up="y"``: ``(x, y, z) -> (x, -z, y)``, a proper rotation of +90° about x (the old +y becomes +z, the old
    +z becomes -y). It undoes the procedural generator's ``up_axis="y"`` mapping ``(x, y, z) -> (x, z, -y)``.
    ``up="z"``: a copy.

    Args:
        points: ``(N, C)`` with xyz in the first three columns, ``C >= 3``; other columns (rgb) are copied
            unchanged.
        up: ``"z"`` or ``"y"``, the axis that points up in ``points``.

    Returns:
        ``(N, C)`` of the input dtype (float64 for integer input).
    """
    if up not in UP_AXES:
        raise PointCloudError(f"unknown up axis {up!r}; choose one of {', '.join(UP_AXES)} (the axis pointing up "
                              "in the file: y for PointLLM's Objaverse and ModelNet40 .dat, z otherwise)")
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise PointCloudError(f"to_z_up expects (N, C >= 3) points, got shape {pts.shape}")
    out = pts.astype(np.float64) if pts.dtype.kind in "iub" else pts.copy()
    if up == "y":
        out[:, 1], out[:, 2] = -pts[:, 2], pts[:, 1]
    return out


# ----------------------------------------------------------------------------------------------------------
# Augmentation
# ----------------------------------------------------------------------------------------------------------
def rotation_z(angle: float) -> np.ndarray:
    """The rotation by ``angle`` radians about +z (counter-clockwise seen from above): ``(3, 3)`` float64.

    ``rotation_z(pi / 2) @ (1, 0, 0) = (0, 1, 0)``.
    """
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def augment_cloud(
    points: np.ndarray,
    rng: np.random.Generator,
    *,
    yaw_degrees: float = 180.0,
    scale: tuple[float, float] = (0.8, 1.25),
    jitter: float = 0.01,
    jitter_clip: float = 0.05,
) -> np.ndarray:
    """One random training augmentation of a z-up cloud; columns after xyz (rgb) are returned untouched.

    In this order, drawing from ``rng`` in this order (so a seeded generator gives the same result):

    1. ``yaw_degrees``: an angle uniform in ``[-yaw_degrees, yaw_degrees)`` (180: any heading; 0 turns it off,
       nothing is drawn); xyz is rotated about z (the up axis) by :func:`rotation_z`. Objects stay upright.
    2. ``scale``: three factors uniform in ``[scale[0], scale[1]]``, one per axis (anisotropic), multiplying
       x, y and z. ``(1, 1)`` turns it off. After the model's ``pc_norm`` only the change of proportions remains.
    3. ``jitter``: Gaussian noise of standard deviation ``jitter`` per coordinate, clipped to
       ``[-jitter_clip, jitter_clip]``, added to xyz (PointNet's ``jitter_point_cloud``). ``0`` turns it off
       (nothing is drawn).

    Apply it to a cloud in the units of the model's input (unit sphere) before the model's resample and
    ``pc_norm``, so the jitter is relative to the object's size.

    Args:
        points: ``(N, C)``, ``C >= 3``, xyz first.
        rng: ``np.random.default_rng(seed)``.

    Returns:
        ``(N, C)`` of the input's floating dtype (float32 for float32 input; float64 for integer input).
    """
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f"augment_cloud expects (N, C >= 3) points, got shape {pts.shape}")
    lo, hi = (float(v) for v in scale)
    if not 0 < lo <= hi:
        raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale!r}")
    if not (jitter >= 0 and jitter_clip >= 0):
        raise ValueError(f"jitter and jitter_clip must be >= 0, got {jitter!r} and {jitter_clip!r}")
    out = pts.astype(np.float64 if pts.dtype.kind in "iub" else pts.dtype, copy=True)
    xyz = pts[:, :3].astype(np.float64)
    if not 0 <= yaw_degrees <= 180:
        raise ValueError(f"yaw_degrees must be in [0, 180], got {yaw_degrees!r}")
    if yaw_degrees:
        xyz = xyz @ rotation_z(np.deg2rad(rng.uniform(-yaw_degrees, yaw_degrees))).T
    xyz = xyz * rng.uniform(lo, hi, size=3)
    if jitter > 0:
        xyz = xyz + np.clip(rng.normal(0.0, jitter, size=xyz.shape), -jitter_clip, jitter_clip)
    out[:, :3] = xyz
    return out


def random_resolution(
    points: np.ndarray,
    rng: np.random.Generator,
    n_out: int,
    *,
    min_fraction: float = 0.5,
    method: str = "fps",
) -> np.ndarray:
    """Simulate a cloud captured at another resolution, then bring it to the model's ``n_out`` points.

    1. ``k`` is drawn uniformly from the integers ``[max(1, ceil(min_fraction * N)), N]`` (both ends included);
    2. ``k`` of the ``N`` points are drawn uniformly without replacement (kept in input order);
    3. the subset goes through the project's :func:`resample` to ``n_out`` points with ``method`` (FPS, the
       model's input rule, by default) and a seed drawn from ``rng``: down by FPS when ``k > n_out``, up by
       seeded duplicates when ``k < n_out`` (a sparse scan), a copy when equal.

    So the model sees its usual ``n_out`` points, but spread as they would be from a sparser source. Draws from
    ``rng`` in this order: ``k``, the subset, the resample seed.

    Args:
        points: ``(N, C)``, ``C >= 3``, xyz first.
        rng: ``np.random.default_rng(seed)``.
        n_out: points returned, ``>= 1``.
        min_fraction: the smallest share of the points kept, in ``(0, 1]``; ``1`` keeps all (only resamples).

    Returns:
        ``(n_out, C)`` of the input dtype; every row is a row of ``points``.
    """
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] < 3 or pts.shape[0] == 0:
        raise ValueError(f"random_resolution expects (N, C >= 3) points with N >= 1, got shape {pts.shape}")
    if not 0 < min_fraction <= 1:
        raise ValueError(f"min_fraction must be in (0, 1], got {min_fraction!r}")
    count = pts.shape[0]
    low = min(count, max(1, int(np.ceil(min_fraction * count))))
    k = int(rng.integers(low, count, endpoint=True))
    subset = pts[np.sort(rng.choice(count, size=k, replace=False))]
    return resample(subset, n_out, method=method, seed=int(rng.integers(0, 2**31 - 1)))
