"""Neighbour list vs a brute-force image enumeration and vs ASE."""

from __future__ import annotations

import itertools

import ase
import ase.neighborlist
import numpy as np
import pytest

from fingerprints.neighbors import batch_neighbor_list, neighbor_list
from parsers.frame import Frame


def brute_force_pairs(positions, cell, pbc, cutoff):
    """Every (i, j, n1, n2, n3) with 0 < |x_j - x_i + n @ cell| < cutoff, by enumerating images."""
    pbc = np.asarray(pbc, dtype=bool)
    ranges = []
    frac = positions @ np.linalg.inv(cell) if pbc.any() else np.zeros_like(positions)
    for k in range(3):
        if not pbc[k]:
            ranges.append([0])
            continue
        plane_spacing = 1.0 / np.linalg.norm(np.linalg.inv(cell)[:, k])
        spread = np.ptp(frac[:, k])
        n = int(np.ceil(cutoff / plane_spacing + spread)) + 1
        ranges.append(range(-n, n + 1))
    pairs = set()
    for shift in itertools.product(*ranges):
        vec = positions[None, :, :] - positions[:, None, :] + np.array(shift) @ cell
        dist = np.linalg.norm(vec, axis=-1)
        for i, j in zip(*np.nonzero((dist > 0) & (dist < cutoff)), strict=True):
            pairs.add((int(i), int(j), *shift))
    return pairs


def as_set(edge_index, cell_shifts):
    return {(int(i), int(j), *map(int, s)) for (i, j), s in zip(edge_index.T, cell_shifts, strict=True)}


def random_skewed_cell(rng, scale):
    cell = np.diag(rng.uniform(0.8, 1.2, 3) * scale)
    cell[1, 0], cell[2, 0], cell[2, 1] = rng.uniform(-0.6, 0.6, 3) * scale
    return cell @ np.linalg.qr(rng.normal(size=(3, 3)))[0]  # rotated: no axis alignment


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("pbc", [(True, True, True), (True, False, True), (False, False, False)])
def test_matches_brute_force_and_ase(seed, pbc):
    rng = np.random.default_rng(seed)
    cell = random_skewed_cell(rng, scale=rng.uniform(2.5, 7.0))  # often smaller than the cutoff
    n = int(rng.integers(1, 9))
    positions = rng.uniform(-0.2, 1.2, (n, 3)) @ cell  # some atoms outside the cell
    cutoff = 5.0
    edge_index, cell_shifts, edge_shift = neighbor_list(positions, cell, pbc, cutoff)

    assert edge_index.dtype == np.int64 and cell_shifts.dtype == np.int64 and edge_shift.dtype == np.float64
    assert edge_index.shape == (2, len(cell_shifts)) and edge_shift.shape == cell_shifts.shape
    np.testing.assert_allclose(edge_shift, cell_shifts @ cell, atol=1e-12)
    assert np.all(np.diff(edge_index[0]) >= 0)
    reference = brute_force_pairs(positions, cell, pbc, cutoff)
    assert as_set(edge_index, cell_shifts) == reference
    assert len(reference) == edge_index.shape[1]  # no duplicates

    atoms = ase.Atoms(numbers=[1] * n, positions=positions, cell=cell, pbc=pbc)
    i, j, s = ase.neighborlist.neighbor_list("ijS", atoms, cutoff)
    assert as_set(np.stack([i, j]), s) == reference


def test_many_images_of_one_atom():
    cell = np.array([[1.0, 0, 0], [0.4, 1.1, 0], [0.3, -0.2, 0.9]])
    edge_index, cell_shifts, edge_shift = neighbor_list(np.zeros((1, 3)), cell, True, 3.0)
    assert (edge_index == 0).all()
    dist = np.linalg.norm(edge_shift, axis=1)
    assert dist.min() > 0 and dist.max() < 3.0
    assert as_set(edge_index, cell_shifts) == brute_force_pairs(np.zeros((1, 3)), cell, [True] * 3, 3.0)
    assert len(edge_index[0]) > 50


def test_isolated_molecule_with_zero_cell():
    positions = np.array([[0.0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0], [10.0, 0, 0]])
    edge_index, cell_shifts, _ = neighbor_list(positions, np.zeros((3, 3)), False, 2.0)
    assert as_set(edge_index, cell_shifts) == {(0, 1, 0, 0, 0), (1, 0, 0, 0, 0), (0, 2, 0, 0, 0),
                                               (2, 0, 0, 0, 0), (1, 2, 0, 0, 0), (2, 1, 0, 0, 0)}


def test_slab_with_zero_vacuum_vector():
    rng = np.random.default_rng(7)
    cell = np.array([[3.0, 0, 0], [1.0, 2.8, 0], [0, 0, 0]])
    positions = rng.uniform(0, 1, (5, 3)) @ np.array([[3.0, 0, 0], [1.0, 2.8, 0], [0, 0, 4.0]])
    edge_index, cell_shifts, _ = neighbor_list(positions, cell, (True, True, False), 4.0)
    full = cell.copy()
    full[2] = [0, 0, 1.0]  # any vector: the brute force never shifts along it
    assert as_set(edge_index, cell_shifts) == brute_force_pairs(positions, full, (True, True, False), 4.0)


def test_batch_offsets_atoms():
    rng = np.random.default_rng(3)
    frames = []
    for n in (3, 5):
        cell = random_skewed_cell(rng, 4.0)
        frames.append(Frame(numbers=[29] * n, positions=rng.uniform(0, 1, (n, 3)) @ cell, cell=cell,
                            pbc=[True] * 3))
    edge_index, cell_shifts, edge_shift = batch_neighbor_list(frames, 4.5)
    first = neighbor_list(frames[0].positions, frames[0].cell, frames[0].pbc, 4.5)
    second = neighbor_list(frames[1].positions, frames[1].cell, frames[1].pbc, 4.5)
    e0 = first[0].shape[1]
    np.testing.assert_array_equal(edge_index[:, :e0], first[0])
    np.testing.assert_array_equal(edge_index[:, e0:], second[0] + 3)
    np.testing.assert_array_equal(cell_shifts, np.concatenate([first[1], second[1]]))
    np.testing.assert_allclose(edge_shift, np.concatenate([first[2], second[2]]))
    assert batch_neighbor_list([], 4.5)[0].shape == (2, 0)


def test_bad_input_is_reported():
    with pytest.raises(ValueError, match="same place"):
        neighbor_list(np.zeros((2, 3)), np.eye(3) * 5, True, 3.0)
    with pytest.raises(ValueError, match="positions must have shape"):
        neighbor_list(np.zeros((2, 2)), np.eye(3) * 5, True, 3.0)
    with pytest.raises(ValueError, match="singular"):
        neighbor_list(np.zeros((1, 3)), np.array([[1.0, 0, 0], [2.0, 0, 0], [0, 0, 1]]), True, 3.0)
    with pytest.raises(ValueError, match="non-zero cell vector"):
        neighbor_list(np.zeros((1, 3)), np.zeros((3, 3)), (True, False, False), 3.0)
