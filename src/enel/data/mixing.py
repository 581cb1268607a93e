"""Training sources mixed by weight: one map-style dataset over several.

An epoch of the mixture has ``length`` items (default: the sources' lengths added up); source ``k`` fills
``round(length · w_k / Σw)`` of them (largest-remainder rounding). Each source is read in a seeded permutation,
repeated when it must give more items than it has, so an over-weighted small source is repeated evenly and an
under-weighted large one gives a seeded subset (the same in every epoch: raise ``length`` to see more of it).
The schedule is fixed by ``seed``: item ``i`` is always the same sample, which keeps the ``Trainer``'s
shuffling, resuming and distributed sharding exact.

:func:`balanced_order` does the same within one source for its classes: every class an equal share of the epoch
(``data.modelnet40.balance``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import DatasetError

__all__ = ["MixedDataset", "balanced_order", "mixture_counts"]


def mixture_counts(weights: Sequence[float], length: int) -> list[int]:
    """How many of ``length`` items each source gives (largest-remainder rounding of the weights' shares)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or not len(w) or (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise DatasetError(f"mixing weights must be non-negative numbers with a positive sum, got {list(weights)}")
    exact = length * w / w.sum()
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: length - int(counts.sum())]] += 1
    return counts.tolist()


def _laps(rng: np.random.Generator, n: int, count: int) -> np.ndarray:
    """``(count,)`` indices into ``n`` items: seeded permutations of all of them, one after another, cut at ``count``."""
    laps = -(-count // n)
    return np.concatenate([rng.permutation(n) for _ in range(laps)])[:count].astype(np.int64)


def balanced_order(groups: Sequence[int], length: int | None = None, seed: int = 0) -> np.ndarray:
    """Item indices for an epoch in which every group (class) gives the same number of items: ``(length,)``.

    Args:
        groups: ``(n,)`` the group of each item.
        length: items in the epoch (default ``n``, so the epoch keeps its size).
        seed: seeds which items of each group are taken.

    Each group's share is ``length`` over the number of groups (largest-remainder rounding, :func:`mixture_counts`);
    its items come in a seeded permutation, repeated when the share is larger than the group, so a small group is
    repeated evenly and a large one gives distinct items. Returned grouped, group by group in sorted order.
    """
    groups = np.asarray(groups)
    if groups.ndim != 1 or not len(groups):
        raise DatasetError(f"balanced_order needs a non-empty 1-D array of groups, got shape {groups.shape}")
    length = len(groups) if length is None else int(length)
    names = np.unique(groups)
    rng = np.random.default_rng(seed)
    out = []
    for g, count in zip(names, mixture_counts([1.0] * len(names), length)):
        members = np.flatnonzero(groups == g)
        if count:
            out.append(members[_laps(rng, len(members), count)])
    return np.concatenate(out)


class MixedDataset(Dataset):
    """``datasets`` mixed by ``weights`` (see the module docstring).

    Args:
        datasets: map-style datasets with the same item layout.
        weights: one non-negative weight per dataset.
        names: a name per source, for logs and :attr:`counts`.
        length: items per epoch (default: the sum of the sources' lengths).
        seed: seeds the schedule.
    """

    def __init__(self, datasets: Sequence[Dataset], weights: Sequence[float], names: Sequence[str] | None = None,
                 length: int | None = None, seed: int = 0):
        if len(datasets) != len(weights) or not datasets:
            raise DatasetError(f"{len(datasets)} sources but {len(weights)} weights; give one weight per source")
        self.datasets = list(datasets)
        self.names = list(names) if names is not None else [f"source{i}" for i in range(len(datasets))]
        self.length = int(length) if length is not None else sum(len(d) for d in self.datasets)
        counts = mixture_counts(weights, self.length)
        empty = [n for n, d, c in zip(self.names, self.datasets, counts) if c and not len(d)]
        if empty:
            raise DatasetError(f"source(s) {', '.join(empty)} have a weight but no samples")
        rng = np.random.default_rng(seed)
        source, item = [], []
        for k, (d, c) in enumerate(zip(self.datasets, counts)):
            if not c:
                continue
            source.append(np.full(c, k, dtype=np.int32))
            item.append(_laps(rng, len(d), c))
        self._source = np.concatenate(source)
        self._item = np.concatenate(item)
        self.counts = dict(zip(self.names, counts))

    def __len__(self) -> int:
        return self.length

    def class_words(self) -> list[torch.Tensor]:
        """The distinct class names' token ids ``(K_i,)`` of the sources that have a share of the mix and carry
        class words (a source without a ``class_words`` method carries none)."""
        words = {}
        for d, c in zip(self.datasets, np.bincount(self._source, minlength=len(self.datasets))):
            if c and hasattr(d, "class_words"):
                words.update({tuple(w.tolist()): w for w in d.class_words()})
        return list(words.values())

    def source_of(self, index: int) -> str:
        return self.names[int(self._source[index])]

    def __getitem__(self, index: int):
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a mixture of {self.length} items")
        return self.datasets[int(self._source[index])][int(self._item[index])]
