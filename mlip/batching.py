"""Frames → graphs (neighbour lists computed once) → batched tensors.

A *graph* is a dict of numpy arrays for one frame, ready to be concatenated:

- ``species`` (n,) int64: index into the model's element list
- ``positions`` (n, 3) Å, ``cell`` (3, 3) Å rows, ``pbc`` (3,) bool
- ``edge_index`` (2, E) int64, ``edge_shift`` (E, 3) Å: r_ij = x_j − x_i + edge_shift
- ``energy`` () eV (NaN if absent), ``forces`` (n, 3) eV/Å (NaN if absent),
  ``stress`` (3, 3) eV/Å³ (NaN if absent), ``charges`` (n,) e (NaN if absent)
- ``total_charge``, ``energy_weight``, ``force_weight`` ()
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase.data import atomic_numbers

from fingerprints.neighbors import neighbor_list
from mlip.errors import UserError
from parsers import Frame


def species_of(numbers: np.ndarray, elements: Sequence[str], where: str = "") -> np.ndarray:
    """Map atomic numbers (n,) to indices into ``elements``; unknown elements raise UserError."""
    table = np.full(119, -1, dtype=np.int64)
    for k, el in enumerate(elements):
        table[atomic_numbers[el]] = k
    species = table[np.asarray(numbers)]
    if (species < 0).any():
        from ase.data import chemical_symbols

        bad = sorted({chemical_symbols[z] for z in np.asarray(numbers)[species < 0]})
        raise UserError(f"{where}element(s) {', '.join(bad)} not in the model's elements "
                        f"{', '.join(elements)}")
    return species


def _nan_if_none(value, shape) -> np.ndarray:
    return np.full(shape, np.nan) if value is None else np.asarray(value, dtype=np.float64)


def frame_to_graph(frame: Frame, elements: Sequence[str], cutoff: float) -> dict[str, np.ndarray]:
    """One frame → one graph (see module docstring), with its neighbour list for ``cutoff`` Å."""
    where = f"{frame.source} frame {frame.index}: " if frame.source else ""
    n = len(frame)
    edge_index, _, edge_shift = neighbor_list(frame.positions, frame.cell, frame.pbc, cutoff)
    return {
        "species": species_of(frame.numbers, elements, where),
        "positions": frame.positions,
        "cell": frame.cell,
        "pbc": frame.pbc,
        "edge_index": edge_index,
        "edge_shift": edge_shift,
        "energy": np.float64(np.nan if frame.energy is None else frame.energy),
        "forces": _nan_if_none(frame.forces, (n, 3)),
        "stress": _nan_if_none(frame.stress, (3, 3)),
        "charges": _nan_if_none(frame.charges, (n,)),
        "total_charge": np.float64(frame.total_charge),
        "energy_weight": np.float64(frame.energy_weight),
        "force_weight": np.float64(frame.force_weight),
    }


def collate(graphs: Sequence[dict[str, np.ndarray]], dtype: torch.dtype = torch.float64,
            device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Concatenate graphs into one batch of tensors.

    Adds ``batch`` (N,) frame index and ``n_atoms`` (B,). Per-atom arrays are concatenated,
    ``edge_index`` is offset by each frame's first atom, per-frame values are stacked.
    """
    counts = np.array([len(g["species"]) for g in graphs])
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out: dict[str, np.ndarray] = {
        "edge_index": np.concatenate(
            [g["edge_index"] + o for g, o in zip(graphs, offsets, strict=True)], axis=1
        ),
        "batch": np.repeat(np.arange(len(graphs)), counts),
        "n_atoms": counts,
    }
    for key in ("species", "positions", "edge_shift", "forces", "charges"):
        out[key] = np.concatenate([g[key] for g in graphs])
    for key in ("cell", "pbc", "energy", "stress", "total_charge", "energy_weight", "force_weight"):
        out[key] = np.stack([g[key] for g in graphs])
    tensors = {}
    for key, value in out.items():
        t = torch.from_numpy(np.ascontiguousarray(value))
        if t.is_floating_point():
            t = t.to(dtype)
        tensors[key] = t.to(device)
    return tensors
