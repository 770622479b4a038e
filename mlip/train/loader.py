"""Training batches streamed from the HDF5 dataset through a ``torch.utils.data.DataLoader``.

Nothing holds the whole data set: each batch's frames are read from the dataset file, turned
into graphs (neighbour lists for the model's cutoff, :func:`mlip.batching.frame_to_graph`) and
collated, in ``workers`` worker processes when ``workers > 0``. Peak memory therefore grows
with the batch size, not with the number of frames.

The batch order is the trainer's contract for exact resume: epoch ``e`` takes the training
indices in the permutation drawn from ``numpy.random.default_rng([seed, e])``, cut into
batches of ``batch_size``; under DDP the permutation is padded by wrapping to a multiple of
the world size and rank ``r`` takes every ``world``-th index from ``r``. A run resumed at batch
``s`` of epoch ``e`` skips the first ``s`` batches of that epoch.

A committee of K members (``model.committee``) takes the same batches for every member; member k
sees its own bootstrap resample of the training frames as per-frame weights, the number of times
each frame is drawn (:func:`bootstrap_counts`, drawn once from the seed), which the loss applies
(:func:`mlip.train.loss.batch_loss`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from mlip.batching import collate, frame_to_graph
from mlip.data import Dataset

BOOTSTRAP_STREAM = 0xB007  # the random stream of the committee resamples, apart from the batch orders


class GraphData(torch.utils.data.Dataset):
    """Frame ``i`` of ``dataset`` as a graph (numpy dict, see :mod:`mlip.batching`) for
    ``elements`` and ``cutoff`` (Å); the neighbour list is built on access."""

    def __init__(self, dataset: Dataset, elements: Sequence[str], cutoff: float) -> None:
        self.dataset = dataset
        self.elements = list(elements)
        self.cutoff = float(cutoff)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return frame_to_graph(self.dataset[int(index)], self.elements, self.cutoff)


class EpochBatches(Sampler[list[int]]):
    """The batches of one epoch (module docstring); :meth:`set_epoch` chooses the epoch and the
    first batch. ``shuffle=False`` keeps ``indices`` in order (evaluation), unsharded."""

    def __init__(self, indices: np.ndarray, batch_size: int, seed: int = 0, shuffle: bool = True,
                 rank: int = 0, world: int = 1) -> None:
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.seed, self.shuffle, self.rank, self.world = int(seed), shuffle, int(rank), int(world)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Iterate epoch ``epoch`` from its batch ``start`` on."""
        self.epoch, self.start = int(epoch), int(start)

    def batches(self) -> list[np.ndarray]:
        """All batches of the current epoch (index arrays), ``start`` included."""
        order = self.indices
        if self.shuffle:
            order = order[np.random.default_rng([self.seed, self.epoch]).permutation(len(order))]
            if self.world > 1:  # equal shards (wrapping around): every rank takes the same steps
                n = -(-len(order) // self.world) * self.world
                order = np.resize(order, n)[self.rank::self.world]
        return [order[k:k + self.batch_size] for k in range(0, len(order), self.batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches()[self.start:]:
            yield batch.tolist()

    def __len__(self) -> int:
        return max(0, len(self.batches()) - self.start)


def bootstrap_counts(train_idx: np.ndarray, n_frames: int, members: int, seed: int) -> np.ndarray:
    """(members, n_frames) float64: how often each frame is drawn in member k's bootstrap resample
    of the training frames ``train_idx`` (as many draws as training frames, with replacement, from
    ``numpy.random.default_rng([seed, BOOTSTRAP_STREAM, k])``); 0 for frames outside
    ``train_idx``. Each row sums to ``len(train_idx)``; about 37 % of a member's training
    frames are left out of its resample."""
    train_idx = np.asarray(train_idx, dtype=np.int64)
    counts = np.zeros((members, n_frames))
    for k in range(members):
        draws = np.random.default_rng([seed, BOOTSTRAP_STREAM, k]).integers(0, len(train_idx), len(train_idx))
        np.add.at(counts[k], train_idx[draws], 1.0)
    return counts


def graph_loader(graphs: GraphData, sampler: EpochBatches, dtype: torch.dtype,
                 workers: int = 0) -> DataLoader:
    """A DataLoader of collated CPU tensor batches (:func:`mlip.batching.collate` in ``dtype``)
    over ``sampler``'s batches; ``workers`` > 0 builds them in that many worker processes
    (kept alive across epochs)."""
    kwargs: dict[str, Any] = {}
    if workers > 0:
        kwargs = {"persistent_workers": True, "prefetch_factor": 2}
    return DataLoader(graphs, batch_sampler=sampler, num_workers=int(workers),
                      collate_fn=functools.partial(collate, dtype=dtype), **kwargs)
