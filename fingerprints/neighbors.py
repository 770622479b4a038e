"""Periodic neighbour lists (numpy), built on vesin's O(N) cell list.

Convention (``docs/architecture.md``): for every directed pair (i, j, image)
with ``0 < |r_ij| < cutoff``,

    r_ij = positions[j] - positions[i] + edge_shift,   edge_shift = cell_shifts @ cell.

Both directions of each pair are listed. Any triclinic cell works, including
cells smaller than the cutoff (then an atom sees several images of the same
neighbour, and itself), mixed periodicity, and isolated molecules
(``pbc = [False] * 3``; the cell is then ignored and may be all zeros).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import vesin


def _check_inputs(positions: Any, cell: Any, pbc: Any, cutoff: float) -> tuple[np.ndarray, ...]:
    pos = np.ascontiguousarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"positions must have shape (n_atoms, 3), got {pos.shape}")
    box = np.ascontiguousarray(cell, dtype=np.float64)
    if box.shape != (3, 3):
        raise ValueError(f"cell must have shape (3, 3) (lattice vectors as rows), got {box.shape}")
    periodic = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
    if not np.isfinite(pos).all() or not np.isfinite(box).all():
        raise ValueError("positions and cell must be finite")
    if not cutoff > 0.0:
        raise ValueError(f"cutoff must be positive, got {cutoff}")
    if periodic.any():
        # Periodic directions need independent lattice vectors (non-periodic ones may be zero).
        lengths = np.linalg.norm(box, axis=1)
        if (lengths[periodic] == 0.0).any():
            axes = np.flatnonzero(periodic & (lengths == 0.0)).tolist()
            raise ValueError(f"periodic direction(s) {axes} need a non-zero cell vector")
        if periodic.all() and abs(np.linalg.det(box)) < 1e-12 * np.prod(lengths):
            raise ValueError("periodic cell is singular (zero volume)")
    return pos, box, periodic


def neighbor_list(
    positions: Any, cell: Any, pbc: Any, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All directed pairs within ``cutoff`` of one frame.

    Args:
        positions: (n_atoms, 3) Å, Cartesian.
        cell: (3, 3) Å, lattice vectors as rows (ignored along non-periodic directions).
        pbc: (3,) bool or a single bool.
        cutoff: Å; pairs with ``0 < r < cutoff`` are returned.

    Returns:
        ``edge_index`` (2, E) int64 (row 0 = centre i, row 1 = neighbour j, sorted by i),
        ``cell_shifts`` (E, 3) int64 (integer image of j), and
        ``edge_shift`` (E, 3) float64 Å ``= cell_shifts @ cell``.

    Raises:
        ValueError: bad shapes, a singular periodic cell, or two atoms at the same place.
    """
    pos, box, periodic = _check_inputs(positions, cell, pbc, cutoff)
    calculator = vesin.NeighborList(cutoff=float(cutoff), full_list=True, sorted=True)
    i, j, shifts, dist = calculator.compute(pos, box, periodic, quantities="ijSd", copy=False)
    coincident = dist <= 0.0
    if coincident.any():
        k = int(np.flatnonzero(coincident)[0])
        image = shifts[k].tolist()
        raise ValueError(f"atoms {int(i[k])} and {int(j[k])} (image {image}) are at the same place")
    edge_index = np.stack([i.astype(np.int64), j.astype(np.int64)])
    cell_shifts = shifts.astype(np.int64)
    edge_shift = cell_shifts @ box
    return edge_index, cell_shifts, edge_shift


def batch_neighbor_list(frames: Sequence[Any], cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neighbour list of several frames concatenated as one graph.

    Args:
        frames: objects with ``positions`` (n, 3) Å, ``cell`` (3, 3) Å and ``pbc`` (3,)
            attributes (e.g. :class:`parsers.Frame`), in batch order.
        cutoff: Å.

    Returns:
        ``edge_index`` (2, E) int64 into the concatenated atoms (frame f's atoms are
        offset by the number of atoms of frames 0..f-1), ``cell_shifts`` (E, 3) int64 and
        ``edge_shift`` (E, 3) float64 Å, each frame's edges in turn.
    """
    indices, shifts, cart = [], [], []
    offset = 0
    for frame in frames:
        edge_index, cell_shifts, edge_shift = neighbor_list(frame.positions, frame.cell, frame.pbc, cutoff)
        indices.append(edge_index + offset)
        shifts.append(cell_shifts)
        cart.append(edge_shift)
        offset += len(frame.positions)
    if not indices:
        return np.zeros((2, 0), np.int64), np.zeros((0, 3), np.int64), np.zeros((0, 3))
    return np.concatenate(indices, axis=1), np.concatenate(shifts), np.concatenate(cart)
