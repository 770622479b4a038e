"""Streamed training batches (mlip.train.loader): the batch order the trainer's exact resume
relies on, and batches from worker processes equal to batches built in memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk

from mlip.batching import collate, frame_to_graph
from mlip.data import Dataset, write_dataset
from mlip.train.loader import EpochBatches, GraphData, graph_loader
from parsers.frame import Frame

ELEMENTS = ["Al", "Cu"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Dataset:
    rng = np.random.default_rng(0)
    frames = []
    for k in range(11):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((1, 1, 1 + k % 3))
        atoms.numbers[: k % 2 + 1] = 13
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        frames.append(Frame(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell.array,
                            pbc=atoms.pbc, energy=-3.5 * len(atoms) + rng.normal(),
                            forces=rng.normal(size=(len(atoms), 3)), source="mem", index=k))
    path = tmp_path_factory.mktemp("loader") / "data.h5"
    write_dataset(frames, path)
    return Dataset(path)


def test_epoch_batches_are_seeded_permutations_cut_in_batches():
    idx = np.array([0, 2, 3, 5, 7, 8, 9])
    sampler = EpochBatches(idx, batch_size=3, seed=4)
    sampler.set_epoch(2)
    perm = idx[np.random.default_rng([4, 2]).permutation(len(idx))]
    assert list(sampler) == [perm[0:3].tolist(), perm[3:6].tolist(), perm[6:].tolist()]
    assert len(sampler) == 3
    sampler.set_epoch(3)
    other = list(sampler)
    assert sorted(sum(other, [])) == idx.tolist() and other != [perm[0:3].tolist()]


def test_resume_skips_the_batches_already_taken():
    sampler = EpochBatches(np.arange(10), batch_size=3, seed=1)
    sampler.set_epoch(5)
    whole = list(sampler)
    sampler.set_epoch(5, start=2)
    assert list(sampler) == whole[2:] and len(sampler) == 2


def test_ranks_take_equal_disjoint_shards_covering_every_frame():
    idx = np.arange(7)
    shards = []
    for rank in range(2):
        sampler = EpochBatches(idx, batch_size=2, seed=0, rank=rank, world=2)
        sampler.set_epoch(1)
        shards.append(sum(list(sampler), []))
    assert len(shards[0]) == len(shards[1]) == 4
    assert set(shards[0]) | set(shards[1]) == set(idx.tolist())


def test_evaluation_order_is_the_given_one():
    sampler = EpochBatches(np.array([4, 1, 9]), batch_size=2, shuffle=False, world=3)
    assert list(sampler) == [[4, 1], [9]]


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_batches_equal_batches_built_in_memory(dataset, workers):
    graphs = GraphData(dataset, ELEMENTS, cutoff=4.0)
    sampler = EpochBatches(np.arange(len(dataset)), batch_size=4, seed=3)
    loader = graph_loader(graphs, sampler, torch.float64, workers=workers)
    frames = list(dataset)
    for epoch in (0, 1):  # workers persist across epochs; the order follows set_epoch
        sampler.set_epoch(epoch)
        got = list(loader)
        assert len(got) == 3
        for batch, idx in zip(got, sampler.batches(), strict=True):
            want = collate([frame_to_graph(frames[i], ELEMENTS, 4.0) for i in idx], torch.float64)
            assert batch.keys() == want.keys()
            for key in want:
                torch.testing.assert_close(batch[key], want[key], rtol=0, atol=0, equal_nan=True)
