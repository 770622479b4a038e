"""Reusable checks for any Potential (NequIP-style model test suite): invariances,
numeric gradients, smoothness, batching, TorchScript and the ghost-atom path."""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from fingerprints.neighbors import neighbor_list
from mlip.model import Potential


def single(model: Potential, positions, numbers_species, cell, pbc=(True, True, True), virial=True):
    """Evaluate one frame through the deployed ``forward``; returns numpy energy, forces, virial."""
    pos = np.asarray(positions, float)
    ei, _, shift = neighbor_list(pos, cell, pbc, model.cutoff)
    dt = torch.float64
    out = model(torch.tensor(pos, dtype=dt), torch.as_tensor(numbers_species), torch.as_tensor(ei),
                torch.tensor(shift, dtype=dt), torch.tensor(np.asarray(cell, float), dtype=dt),
                torch.tensor(pbc), len(pos))
    return {k: v.detach().numpy() for k, v in out.items()}


def finite_difference_forces(model, pos, species, cell, pbc, h=1e-5, atoms=(0, 1)):
    """Central differences −∂E/∂x for a few atoms: {(atom, axis): value}."""
    fd = {}
    for a in atoms:
        for d in range(3):
            p = pos.copy()
            p[a, d] += h
            ep = single(model, p, species, cell, pbc)["energy"]
            p[a, d] -= 2 * h
            em = single(model, p, species, cell, pbc)["energy"]
            fd[(a, d)] = -(ep - em) / (2 * h)
    return fd


def finite_difference_virial(model, pos, species, cell, pbc, h=1e-6):
    """Central differences −∂E/∂ε_ab with x → x(I+ε), cell → cell(I+ε)."""
    w = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            e = np.zeros((3, 3))
            e[a, b] = h
            ep = single(model, pos @ (np.eye(3) + e), species, cell @ (np.eye(3) + e), pbc)["energy"]
            em = single(model, pos @ (np.eye(3) - e), species, cell @ (np.eye(3) - e), pbc)["energy"]
            w[a, b] = -(ep - em) / (2 * h)
    return w


def random_rotation(seed: int) -> np.ndarray:
    return Rotation.random(random_state=seed).as_matrix()


def explicit_ghosts(pos, species, cell, cutoff):
    """Replicate periodic images within ``cutoff`` as ghost atoms (LAMMPS style): returns
    positions (local first), species, edge_index with zero shifts, and n_local."""
    ei, shifts, _ = neighbor_list(pos, cell, (True, True, True), cutoff)
    keys = {}
    ghost_pos, ghost_sp = [], []
    j_new = np.empty(ei.shape[1], dtype=np.int64)
    n = len(pos)
    for e in range(ei.shape[1]):
        j, s = int(ei[1, e]), tuple(int(v) for v in shifts[e])
        if s == (0, 0, 0):
            j_new[e] = j
            continue
        if (j, s) not in keys:
            keys[(j, s)] = n + len(ghost_pos)
            ghost_pos.append(pos[j] + np.asarray(s) @ cell)
            ghost_sp.append(species[j])
        j_new[e] = keys[(j, s)]
    all_pos = np.concatenate([pos, np.array(ghost_pos).reshape(-1, 3)])
    all_sp = np.concatenate([species, np.array(ghost_sp, dtype=np.int64)])
    return all_pos, all_sp, np.stack([ei[0], j_new]), n


def ghost_forces_folded(forces: np.ndarray, n_local: int, pos_all, pos_local, cell) -> np.ndarray:
    """Sum ghost forces back onto their owners (what LAMMPS' reverse communication does)."""
    out = forces[:n_local].copy()
    frac_local = pos_local @ np.linalg.inv(cell)
    for g in range(n_local, len(pos_all)):
        frac = pos_all[g] @ np.linalg.inv(cell)
        d = frac[None, :] - frac_local
        owner = int(np.argmin(np.abs(d - np.round(d)).sum(axis=1)))
        out[owner] += forces[g]
    return out


def as_tensor_batch(model: Potential, frames):
    """Collate (positions, species, cell) frames into a batch for ``compute``."""
    from mlip.batching import collate

    graphs = []
    for pos, sp, cell in frames:
        ei, _, shift = neighbor_list(pos, cell, (True, True, True), model.cutoff)
        n = len(pos)
        graphs.append({"species": np.asarray(sp), "positions": pos, "cell": cell, "pbc": np.ones(3, bool),
                       "edge_index": ei, "edge_shift": shift, "energy": np.float64(0),
                       "forces": np.zeros((n, 3)), "stress": np.zeros((3, 3)), "charges": np.zeros(n),
                       "total_charge": np.float64(0), "energy_weight": np.float64(1),
                       "force_weight": np.float64(1)})
    return collate(graphs)
