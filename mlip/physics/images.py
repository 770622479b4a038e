"""Periodic images within a cutoff, for terms that sum over the whole periodic system.

Long-range terms (D3 dispersion, lattice sums) see only the atoms of one cell
and its lattice; they find their pairs here instead of in the model's
neighbour list. Pairs are *selected* without gradient (an integer choice) and
the caller rebuilds r_ij = x_j − x_i + n·cell from the (strained) positions and
cell, so forces and virial flow through autograd.

TorchScript-compiled: no ``from __future__ import annotations`` here.
"""

from typing import List, Tuple

import torch
from torch import Tensor


def image_range(positions: Tensor, cell: Tensor, pbc: Tensor, cutoff: float) -> Tensor:
    """Largest image index per lattice direction that can hold a pair within ``cutoff``.

    positions: (N, 3) Å; cell: (3, 3) Å rows; pbc: (3,) bool. Returns (3,) int64, 0 along
    non-periodic directions. For the periodic rows A (k, 3), the dual rows
    D = (A Aᵀ)⁻¹ A give the image coordinates c = D r of any vector r in their span, so
    |r| < cutoff needs |n + Δc| ≤ |D_k| cutoff, with Δc bounded by the spread of the atoms'
    coordinates: n_k = ceil(|D_k| cutoff + spread_k). Valid for triclinic cells, slabs and wires.
    """
    n = torch.zeros(3, dtype=torch.long, device=positions.device)
    if not bool(pbc.any()):
        return n
    with torch.no_grad():
        a = cell.detach()[pbc].double()
        dual = torch.linalg.solve(a @ a.T, a)
        coords = positions.detach().double() @ dual.T
        spread = coords.max(dim=0).values - coords.min(dim=0).values
        n[pbc] = torch.ceil(dual.square().sum(dim=1).sqrt() * cutoff + spread).long()
    return n


def image_shifts(n: Tensor) -> Tensor:
    """All integer shifts (M, 3) with |shift_k| ≤ n_k, as float64."""
    axes = [torch.arange(-int(n[k]), int(n[k]) + 1, device=n.device) for k in range(3)]
    grid = torch.stack([
        axes[0][:, None, None].expand(axes[0].numel(), axes[1].numel(), axes[2].numel()),
        axes[1][None, :, None].expand(axes[0].numel(), axes[1].numel(), axes[2].numel()),
        axes[2][None, None, :].expand(axes[0].numel(), axes[1].numel(), axes[2].numel()),
    ], dim=-1).reshape(-1, 3)
    return grid.double()


def image_pairs(positions: Tensor, cell: Tensor, pbc: Tensor, cutoff: float, n_centers: int,
                chunk: int = 1048576) -> Tuple[Tensor, Tensor, Tensor]:
    """Every directed pair (i, j, n) with i < n_centers, 0 < |x_j + n·cell − x_i| < cutoff.

    The search uses |d + L|² expanded, so pairs up to cutoff·(1 + 1e-9) may be returned;
    callers apply their own exact ``r < cutoff`` masks.

    positions: (N, 3) Å, the atoms of one frame (all N are sources); cell: (3, 3) Å rows;
    pbc: (3,) bool; cutoff: Å. Returns i (P,), j (P,) int64 and shifts (P, 3) float64
    integer image indices n, so r_ij = x_j − x_i + shifts @ cell. Pairs at zero distance
    (the self pair (i, i, 0)) are excluded. Selection runs without gradient, examining
    about ``chunk`` candidate triples at a time (bounds its memory).
    """
    device = positions.device
    n_atoms = positions.shape[0]
    with torch.no_grad():
        pos = positions.detach().double()
        lattice = cell.detach().double()
        shifts = image_shifts(image_range(pos, lattice, pbc, cutoff))
        # an image farther than cutoff + the cloud's diameter cannot hold a pair
        radius = (pos - pos.mean(dim=0)).square().sum(dim=1).sqrt().max()
        vec = shifts @ lattice
        shifts = shifts[vec.square().sum(dim=1).sqrt() < cutoff + 2.0 * radius + 1e-9]
        reach2 = (cutoff * (1.0 + 1e-9)) ** 2
        # |d + L|² = |d|² + 2 d·L + |L|² for all (center, atom) vectors d and image vectors L
        diff = (pos[None, :, :] - pos[:n_centers, None, :]).reshape(-1, 3)  # (C·N, 3)
        diff2 = (diff * diff).sum(dim=1)
        per_chunk = max(1, chunk // max(1, n_centers * n_atoms))
        found_i: List[Tensor] = []
        found_j: List[Tensor] = []
        found_s: List[Tensor] = []
        for start in range(0, shifts.shape[0], per_chunk):
            s = shifts[start:start + per_chunk]
            vec_s = s @ lattice
            d2 = diff2[None, :] + 2.0 * (vec_s @ diff.T) + (vec_s * vec_s).sum(dim=1)[:, None]
            idx = ((d2 < reach2) & (d2 > 0.0)).nonzero()
            found_s.append(s[idx[:, 0]])
            found_i.append(torch.div(idx[:, 1], n_atoms, rounding_mode="floor"))
            found_j.append(idx[:, 1] % n_atoms)
    if len(found_i) == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty, torch.zeros(0, 3, dtype=torch.float64, device=device)
    return torch.cat(found_i), torch.cat(found_j), torch.cat(found_s)
