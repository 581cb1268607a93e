"""Training sources mixed by weight: one map-style dataset over several.

An epoch of the mixture has ``length`` items (default: the sources' lengths added up); source ``k`` fills
``round(length · w_k / Σw)`` of them (largest-remainder rounding). Each source is read in a seeded permutation,
repeated when it must give more items than it has, so an over-weighted small source is repeated evenly and an
under-weighted large one gives a seeded subset (the same in every epoch: raise ``length`` to see more of it).
The schedule is fixed by ``seed``: item ``i`` is always the same sample, which keeps the ``Trainer``'s
shuffling, resuming and distributed sharding exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch.utils.data import Dataset

from .errors import DatasetError

__all__ = ["MixedDataset", "mixture_counts"]


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
            laps = -(-c // len(d))
            order = np.concatenate([rng.permutation(len(d)) for _ in range(laps)])[:c]
            source.append(np.full(c, k, dtype=np.int32))
            item.append(order.astype(np.int64))
        self._source = np.concatenate(source)
        self._item = np.concatenate(item)
        self.counts = dict(zip(self.names, counts))

    def __len__(self) -> int:
        return self.length

    def source_of(self, index: int) -> str:
        return self.names[int(self._source[index])]

    def __getitem__(self, index: int):
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a mixture of {self.length} items")
        return self.datasets[int(self._source[index])][int(self._item[index])]
