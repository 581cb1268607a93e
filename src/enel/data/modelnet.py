"""ModelNet40 as PointLLM evaluates it: the 2468-object test split, fed as black clouds.

PointLLM ships the test split as one pickle, ``modelnet40_test_8192pts_fps.dat``: a ``(list_of_points,
list_of_labels)`` pair (Point-BERT / ULIP format) whose points are ``(8192, 6)`` float32 xyz + normals and whose
labels are length-1 integer arrays (``docs/pointllm-ecosystem.md`` §1.3).

**Unpickling runs code.** A pickle can call any importable function while it loads, so
:func:`load_modelnet_pickle` refuses unless the caller opts in with ``allow_pickle=True``. Even then it loads
with a *restricted unpickler* (defence in depth): the only globals a pickle may reference are the handful that
numpy arrays, dtypes and scalars are rebuilt from (``numpy.core.multiarray._reconstruct`` / ``scalar``,
``numpy.core.numeric._frombuffer`` — old and new module paths — ``numpy.ndarray``, ``numpy.dtype`` and
``_codecs.encode``, which protocol-2 pickles use for raw bytes). Anything else — ``os.system``,
``builtins.eval``, ``subprocess.Popen`` … — raises :class:`~enel.data.errors.UnsafePickleError` before it is
called. The structure is then checked (two equal-length sequences, numeric ``(N, >= 3)`` arrays, labels in
``[0, 40)``). Convert once with :func:`convert_modelnet` (``enel data convert-modelnet``) to a pickle-free
``.npz`` and use that from then on.

Per item (PointLLM's ``pointllm/data/modelnet.py`` with ``use_color=True``, the evaluation default):

1. the normals are dropped (xyz only);
2. optional resampling to ``num_points`` (*ours*; PointLLM keeps all 8192);
3. ``pc_normalize`` on xyz (Point-BERT's function);
4. zeros appended as rgb: **ModelNet40 objects are fed as black clouds**;
5. ``pc_norm`` on xyz again.

``pc_normalize`` and ``pc_norm`` are the same function (centre on the centroid, divide by the largest distance
from it), so steps 2, 3 and 5 are the model's input rule, :func:`enel.points.transforms.model_input`, applied
once here (the second pass only moved float32 rounding, below ``1e-6``).

There is no ``use_color`` switch: the colour is always zero, which is also what a ``use_color=False`` model
ignores (:class:`enel.data.pointllm.PointLLMDataset` zeroes colour the same way). ``object_id`` is the dataset
index, PointLLM's convention (which is why its loader must not shuffle).
"""

from __future__ import annotations

import codecs
import os
import pickle
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..points.transforms import model_input, to_z_up
from .errors import DatasetError, UnsafePickleError
from .labels import MODELNET40_CLASSES
from .pointllm import check_resample_args, object_seed

__all__ = [
    "NPZ_KEYS",
    "load_modelnet_pickle",
    "load_modelnet_npz",
    "convert_modelnet",
    "ModelNetDataset",
]

NPZ_KEYS: tuple[str, ...] = ("points", "labels", "class_names")
"""Arrays of the converted archive: ``points (M, N, C)`` float32 as stored in the pickle (PointLLM: xyz +
normals), ``labels (M,)`` int64, ``class_names (40,)`` unicode."""


# ----------------------------------------------------------------------------------------------------------
# The restricted unpickler
# ----------------------------------------------------------------------------------------------------------
def _allowed_globals() -> dict[tuple[str, str], object]:
    try:  # numpy >= 2
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }
    for prefix in ("numpy.core", "numpy._core"):
        allowed[(f"{prefix}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{prefix}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{prefix}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays, dtypes, scalars, lists, tuples and numbers — nothing else."""

    _allowed = _allowed_globals()

    def find_class(self, module: str, name: str):
        obj = self._allowed.get((module, name))
        if obj is None:
            raise UnsafePickleError(
                f"the pickle references {module}.{name}, which is not numpy array data; refusing to load it "
                "(a ModelNet40 pickle holds only numpy arrays and labels)"
            )
        return obj

    def persistent_load(self, pid):
        raise UnsafePickleError("the pickle uses persistent ids, which a ModelNet40 pickle never does; refusing it")


def _refusal(path: Path) -> str:
    return (
        f"{path}: refusing to unpickle without allow_pickle=True. PointLLM's ModelNet40 file is a Python pickle, "
        "and unpickling a file can run arbitrary code. If you trust its source, convert it once to a pickle-free "
        f"archive — `enel data convert-modelnet {path} modelnet40_test_8192pts.npz --allow-pickle`, or in Python "
        "enel.data.modelnet.convert_modelnet(path, out_path, allow_pickle=True) — and load the .npz from then on; "
        "or pass allow_pickle=True to load the pickle directly (it is read with a numpy-only unpickler either way)."
    )


def _check_labels(labels, path: Path, num_classes: int) -> np.ndarray:
    out = np.empty(len(labels), dtype=np.int64)
    for i, lab in enumerate(labels):
        arr = np.asarray(lab)
        ok = arr.size == 1 and arr.dtype.kind in "iu"
        if not ok and arr.size == 1 and arr.dtype.kind == "f":
            value = float(arr.reshape(()))
            ok = bool(np.isfinite(value)) and value == int(value)
        if not ok:
            raise DatasetError(f"{path}: label {i} must be one integer, found {lab!r:.60}")
        value = int(arr.reshape(()))
        if not 0 <= value < num_classes:
            raise DatasetError(f"{path}: label {i} is {value}, outside the {num_classes} classes [0, {num_classes})")
        out[i] = value
    return out


def _check_points(points, path: Path) -> np.ndarray:
    """A numeric ``(M, N, C >= 3)`` array, or a sequence of equal ``(N, C >= 3)`` arrays, → float32 ``(M, N, C)``."""
    if isinstance(points, np.ndarray):
        if points.ndim != 3 or points.dtype.kind not in "fiu" or points.shape[2] < 3:
            raise DatasetError(f"{path}: points must be a numeric (M, N, 6) array, found shape {points.shape}, "
                               f"dtype {points.dtype}")
        stacked = points.astype(np.float32, copy=False)
    else:
        shape = None
        for i, p in enumerate(points):
            if not isinstance(p, np.ndarray) or p.dtype.kind not in "fiu" or p.ndim != 2 or p.shape[1] < 3:
                what = f"shape {p.shape}, dtype {p.dtype}" if isinstance(p, np.ndarray) else type(p).__name__
                raise DatasetError(f"{path}: point set {i} must be a numeric (N, 6) array, found {what}")
            if shape is None:
                shape = p.shape
            elif p.shape != shape:
                raise DatasetError(f"{path}: point set {i} has shape {p.shape} but point set 0 has {shape}; "
                                   "all point sets must have the same shape")
        stacked = np.stack(points).astype(np.float32, copy=False)
    if not np.isfinite(stacked[..., :3]).all():
        raise DatasetError(f"{path}: point coordinates contain NaN or infinite values")
    return stacked


def _check_structure(data, path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(list_of_points, list_of_labels)`` → ``points (M, N, C)`` float32, ``labels (M,)`` int64, checked."""
    if not isinstance(data, (list, tuple)) or len(data) != 2:
        raise DatasetError(f"{path}: expected a (list_of_points, list_of_labels) pair, found {type(data).__name__}"
                           + (f" of length {len(data)}" if isinstance(data, (list, tuple)) else ""))
    points, labels = data
    if isinstance(labels, np.ndarray):
        labels = list(labels.reshape(len(labels), -1)) if labels.ndim else [labels]
    if not isinstance(points, (list, tuple, np.ndarray)) or not isinstance(labels, (list, tuple)):
        raise DatasetError(f"{path}: points and labels must be sequences, found {type(points).__name__} and "
                           f"{type(labels).__name__}")
    if len(points) != len(labels) or not len(points):
        raise DatasetError(
            f"{path}: {len(points)} point sets but {len(labels)} labels; expected equal, non-zero counts"
        )
    return _check_points(points, path), _check_labels(labels, path, num_classes)


def load_modelnet_pickle(path, *, allow_pickle: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Read PointLLM's ``modelnet40_test_8192pts_fps.dat``.

    Args:
        path: the pickle.
        allow_pickle: must be ``True``: the explicit opt-in to unpickling (see the module docstring).

    Returns:
        ``(points (M, N, C) float32 as stored (xyz + normals), labels (M,) int64)``.

    Raises:
        UnsafePickleError: without ``allow_pickle=True`` (nothing is read), or when the pickle references
            anything other than numpy array data (nothing it names is called).
        DatasetError: missing file, not a pickle, or not the ``(list_of_points, list_of_labels)`` structure.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: ModelNet40 file not found")
    if allow_pickle is not True:
        raise UnsafePickleError(_refusal(path))
    try:
        with open(path, "rb") as fh:
            data = _NumpyOnlyUnpickler(fh).load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError, OverflowError, UnicodeDecodeError, OSError) as exc:
        raise DatasetError(f"{path}: not a readable ModelNet40 pickle ({type(exc).__name__}: {exc})") from None
    return _check_structure(data, path, len(MODELNET40_CLASSES))


def read_npz_arrays(path: Path, required, optional=(), *, hint: str) -> dict[str, np.ndarray]:
    """The ``required`` (and present ``optional``) arrays of an ``.npz`` read without unpickling; a
    :class:`DatasetError` naming the problem and ``hint`` (the fix) for a missing, unreadable or incomplete file."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as npz:
            if not hasattr(npz, "files"):
                raise DatasetError(f"{path}: expected an .npz archive with {', '.join(required)}, found one array")
            missing = [k for k in required if k not in npz.files]
            if missing:
                raise DatasetError(f"{path}: the archive lacks {', '.join(missing)} (has {', '.join(npz.files)}); "
                                   f"{hint}")
            return {k: npz[k] for k in (*required, *optional) if k in npz.files}
    except FileNotFoundError:
        raise DatasetError(f"{path}: ModelNet40 archive not found; {hint}") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{path}: not a readable .npz archive ({exc})") from None


def load_modelnet_npz(path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read an archive written by :func:`convert_modelnet` (``np.load`` with ``allow_pickle=False``).

    Returns:
        ``(points (M, N, C) float32, labels (M,) int64, class_names)``.
    """
    path = Path(path)
    arrays = read_npz_arrays(path, NPZ_KEYS, hint="write it with convert_modelnet")
    points, labels, names = arrays["points"], arrays["labels"], arrays["class_names"]
    if names.ndim != 1 or names.dtype.kind != "U" or not len(names):
        raise DatasetError(f"{path}: class_names must be a 1-D array of strings")
    class_names = tuple(str(n) for n in names)
    if points.ndim != 3 or labels.ndim != 1:
        raise DatasetError(f"{path}: points must be (M, N, C) and labels (M,), found {points.shape} and {labels.shape}")
    pts, labs = _check_structure((points, labels), path, len(class_names))
    return pts, labs, class_names


def convert_modelnet(pickle_path, out_path, *, allow_pickle: bool = False) -> Path:
    """Convert PointLLM's ModelNet40 pickle to a pickle-free ``.npz`` (arrays :data:`NPZ_KEYS`).

    The points are stored exactly as in the pickle (xyz + normals, float32), so the conversion loses nothing;
    :class:`ModelNetDataset` applies PointLLM's processing when it reads them. The archive is uncompressed
    (2468 × 8192 × 6 × 4 B ≈ 486 MB, like the pickle) and written atomically.

    Args:
        pickle_path: ``modelnet40_test_8192pts_fps.dat``.
        out_path: the ``.npz`` to write (``.npz`` is appended when missing).
        allow_pickle: the explicit opt-in to read the pickle, as for :func:`load_modelnet_pickle`.

    Returns:
        the path written.
    """
    points, labels = load_modelnet_pickle(pickle_path, allow_pickle=allow_pickle)
    out = Path(out_path)
    if out.suffix != ".npz":
        out = out.with_name(out.name + ".npz")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, points=points, labels=labels, class_names=np.array(MODELNET40_CLASSES))
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


# ----------------------------------------------------------------------------------------------------------
# The dataset
# ----------------------------------------------------------------------------------------------------------
class ModelNetDataset(Dataset):
    """ModelNet40 test objects as PointLLM feeds them.

    Args:
        path: a converted ``.npz`` (:func:`convert_modelnet`) or PointLLM's pickle (any other suffix).
        allow_pickle: opt-in needed to read a pickle (ignored for ``.npz``, which never unpickles).
        num_points: resample every cloud to this many points; ``None`` (default) keeps the stored 8192.
        resample_method: ``"fps"`` (default, deterministic) or ``"random"`` (seeded per index).
        seed: seeds the random subsets.
        up: the up axis of the stored clouds (*ours*): ``"y"`` for PointLLM's file (default), turned into the
            project's z-up frame (:func:`enel.points.transforms.to_z_up`) so a model trained on z-up shapes
            reads them upright; ``"z"`` keeps them as stored (PointLLM's own models, trained y-up).

    Items (``dataset[i]``)::

        {"point_cloud": FloatTensor (N, 6) xyz (model_input, then z-up) + zero rgb,
         "label": int, "label_name": str (e.g. "night stand"), "object_id": int (= i)}
    """

    def __init__(self, path, *, allow_pickle: bool = False, num_points: int | None = None,
                 resample_method: str = "fps", seed: int = 0, up: str = "y"):
        check_resample_args(num_points, resample_method)
        to_z_up(np.zeros((1, 3)), up)  # refuses an unknown axis here, not at the first item
        self.up = up
        self.path = Path(path)
        if self.path.suffix.lower() == ".npz":
            self.points, self.labels, self.class_names = load_modelnet_npz(self.path)
        else:
            self.points, self.labels = load_modelnet_pickle(self.path, allow_pickle=allow_pickle)
            self.class_names = MODELNET40_CLASSES
        self.num_points = num_points
        self.resample_method = resample_method
        self.seed = int(seed)

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def __getitem__(self, index: int) -> dict:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} objects")
        xyz = self.points[index, :, :3]
        xyz = to_z_up(model_input(xyz, int(self.num_points or xyz.shape[0]), method=self.resample_method,
                                  seed=object_seed(self.seed, str(index))), self.up)
        cloud = np.concatenate([xyz, np.zeros_like(xyz)], axis=1)
        label = int(self.labels[index])
        return {"point_cloud": torch.from_numpy(cloud), "label": label, "label_name": self.class_names[label],
                "object_id": index}
