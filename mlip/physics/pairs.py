"""The periodic-image pair search of the long-range terms: a cell list in torch.

Terms that need pairs beyond the model's edges (D3 and D4 dispersion, D4's EEQ charges) find
them here, with their own cutoffs, in time and memory O(N · pairs per atom). The model's edges
come from vesin (:mod:`fingerprints.neighbors`) in the data pipeline and LAMMPS' neighbour list
in the plugin; this search is the in-model one, for scripted models: a scripted module holding a
vesin-torch ``NeighborList`` refers to the custom class ``torch.classes.vesin._NeighborList``, so
``model.pt`` would no longer load with plain ``torch.jit.load`` (ASE without mlip, the LAMMPS
plugin's libtorch) unless ``libvesin_torch`` were loaded first.

TorchScript-compiled: no ``from __future__ import annotations`` here.
"""

import math
from typing import List, Tuple

import torch
from torch import Tensor


def image_grid(n: Tensor) -> Tensor:
    """All integer shifts (M, 3) with |shift_k| ≤ n_k, as float64."""
    axes = [torch.arange(-int(n[k]), int(n[k]) + 1, device=n.device) for k in range(3)]
    grid = torch.stack([
        axes[0][:, None, None].expand(axes[0].numel(), axes[1].numel(), axes[2].numel()),
        axes[1][None, :, None].expand(axes[0].numel(), axes[1].numel(), axes[2].numel()),
        axes[2][None, None, :].expand(axes[0].numel(), axes[1].numel(), axes[2].numel()),
    ], dim=-1).reshape(-1, 3)
    return grid.double()


def _search_basis(cell: Tensor, pbc: Tensor) -> Tensor:
    """Rows (3, 3): the periodic rows of ``cell`` (Å), each non-periodic row (which may be zero)
    replaced by a unit vector normal to the periodic rows and to the other replacements."""
    periodic = cell[pbc]
    eye = torch.eye(3, dtype=cell.dtype, device=cell.device)
    q, _ = torch.linalg.qr(torch.cat([periodic.T, eye], dim=1))  # columns k.. span the complement
    rows: List[Tensor] = []
    k = periodic.shape[0]
    for d in range(3):
        if bool(pbc[d]):
            rows.append(cell[d])
        else:
            rows.append(q[:, k])
            k += 1
    return torch.stack(rows)


def _bin_distance_bound(offsets: Tensor, edges: Tensor, iterations: int = 32) -> Tensor:
    """A lower bound (M,) Å² on the squared distance between a point of one bin and a point of
    the bin ``offsets`` (M, 3) bins away, bins being parallelepipeds with the rows of ``edges``
    (3, 3) Å as edges: min over u ∈ [−1, 1]³ of |(o + u)·edges|², bounded from below by the
    Frank–Wolfe gap after projected-gradient steps (never above the minimum; exact for
    orthogonal edges, tight after a few steps for skewed ones)."""
    o = offsets.to(edges.dtype)
    gram = edges @ edges.T
    step = 1.0 / float(torch.linalg.eigvalsh(gram).max())  # 1 / Lipschitz constant of ∇f / 2
    u = (-o).clamp(-1.0, 1.0)
    for _ in range(iterations):
        u = (u - step * ((o + u) @ gram)).clamp(-1.0, 1.0)
    half_grad = (o + u) @ gram  # ∇f / 2
    f = (half_grad * (o + u)).sum(dim=1)
    return f - 2.0 * (half_grad.abs() + half_grad * u).sum(dim=1)


def half_pairs(positions: Tensor, cell: Tensor, pbc: Tensor, cutoff: float,
               chunk: int = 1 << 18, bin_width: float = 0.2) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Every pair of atoms closer than ``cutoff`` (Å), once, periodic images included (cell list).

    positions: (N, 3) Å, the atoms of one frame; cell: (3, 3) Å rows; pbc: (3,) bool.
    Returns ``i``, ``j``, ``image`` (P,) int64, ``shifts`` (K, 3) and ``wrap`` (N, 3) float64
    (integers; 0 along non-periodic directions), such that pair p joins atom i[p] and the image
    of atom j[p] at

        r_p = (x_j − wrap_j·cell) − (x_i − wrap_i·cell) + shifts[image[p]]·cell.

    Each unordered pair appears once (i < j, or i = j for an atom and its own image, with one of
    the two opposite shifts); zero-distance pairs are left out. Pairs up to cutoff·(1 + 1e-9)
    may be returned: callers mask with their own ``r < cutoff``. Selection runs without
    gradient, so callers rebuild r_p from the (strained) positions and cell.

    Atoms are binned in the coordinates of the cell (its non-periodic rows replaced by unit
    normals, the atoms' extent binned along them), bins about ``bin_width``·cutoff thick, at
    most ~2N bins; the candidates of a centre are the atoms of the bins in half a stencil around
    its own (wrapped across periodic boundaries, as many images as the cutoff reaches). Centres
    are processed in chunks of at most ``chunk`` candidate pairs (~100 bytes each): besides the
    O(P) result, memory is O(chunk + N + bins + stencil).
    """
    device = positions.device
    n_atoms = positions.shape[0]
    if n_atoms == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty, empty, torch.zeros(1, 3, dtype=torch.float64, device=device), \
            torch.zeros(0, 3, dtype=torch.float64, device=device)
    pos = positions.detach().double()
    lattice = cell.detach().double()
    periodic = pbc.to(device=device, dtype=torch.bool)
    basis = _search_basis(lattice, periodic)
    inverse = torch.linalg.inv(basis)
    coords = pos @ inverse  # (N, 3); ∆coords_k = r · inverse[:, k]
    wrap = torch.where(periodic, torch.floor(coords), torch.zeros_like(coords))
    coords = coords - wrap
    wrapped = pos - wrap @ lattice
    low = torch.where(periodic, torch.zeros_like(coords[0]), coords.min(dim=0).values)
    span = torch.where(periodic, torch.ones_like(low), (coords.max(dim=0).values - low).clamp(min=1e-6))
    thickness: List[float] = (span / inverse.square().sum(dim=0).sqrt()).tolist()  # Å across each span
    n_bins = [max(1, int(t / (bin_width * cutoff))) for t in thickness]
    total = n_bins[0] * n_bins[1] * n_bins[2]
    if total > 2 * n_atoms + 8:
        scale = ((2 * n_atoms + 8) / total) ** (1.0 / 3.0)
        n_bins = [max(1, int(n * scale)) for n in n_bins]
    flags: List[bool] = periodic.tolist()
    reach: List[int] = []  # stencil half-width in bins
    images: List[int] = []  # largest image index a stencil can reach
    for d in range(3):
        r = int(math.ceil(cutoff * (1.0 + 1e-9) * n_bins[d] / thickness[d]))
        reach.append(r if flags[d] else min(r, n_bins[d] - 1))
        images.append(r // n_bins[d] + 1 if flags[d] else 0)
    nb = torch.tensor(n_bins, device=device)
    bins = torch.minimum(torch.floor((coords - low) / span * nb).long().clamp(min=0), nb - 1)  # (N, 3)
    linear = (bins[:, 0] * n_bins[1] + bins[:, 1]) * n_bins[2] + bins[:, 2]
    order = torch.argsort(linear)
    counts = torch.bincount(linear, minlength=total)
    first = torch.cumsum(counts, 0) - counts
    stencil = image_grid(torch.tensor(reach, device=device)).long()  # last component fastest
    o = stencil.T
    stencil = stencil[(o[0] > 0) | ((o[0] == 0) & (o[1] > 0)) | ((o[0] == 0) & (o[1] == 0) & (o[2] >= 0))]
    edges = basis * (span / nb)[:, None]  # (3, 3) Å, the edges of a bin
    stencil = stencil[_bin_distance_bound(stencil, edges) < (cutoff * (1.0 + 1e-6)) ** 2]
    n_stencil = stencil.shape[0]  # stencil[0] is the zero offset
    shifts = image_grid(torch.tensor(images, device=device))
    shift_vec = shifts @ lattice
    span_img = [2 * k + 1 for k in images]
    reach2 = (cutoff * (1.0 + 1e-9)) ** 2
    step = max(1, chunk // (n_stencil * int(counts.max())))
    by_bin = wrapped[order].T.contiguous()  # (3, N) sorted by bin: bin b holds columns first[b]:+counts[b]
    found_i: List[Tensor] = []
    found_j: List[Tensor] = []
    found_s: List[Tensor] = []
    for start in range(0, n_atoms, step):
        centres = order[start:start + step]
        near = bins[centres][:, None, :] + stencil[None, :, :]  # (C, n_stencil, 3) bins, unwrapped
        image = torch.where(periodic, torch.div(near, nb, rounding_mode="floor"), torch.zeros_like(near))
        near = near - image * nb
        inside = ((near >= 0) & (near < nb)).all(dim=2)
        near_linear = (near[..., 0] * n_bins[1] + near[..., 1]) * n_bins[2] + near[..., 2]
        near_linear = torch.where(inside, near_linear, torch.zeros_like(near_linear))
        count = torch.where(inside, counts[near_linear], torch.zeros_like(near_linear)).reshape(-1)
        image = (((image[..., 0] + images[0]) * span_img[1] + image[..., 1] + images[1]) * span_img[2]
                 + image[..., 2] + images[2]).reshape(-1)
        # per (centre, offset) slot: the image shift minus the centre, and where its atoms start
        rel = shift_vec[image].reshape(-1, n_stencil, 3) - wrapped[centres][:, None, :]
        rel = rel.reshape(-1, 3).T.contiguous()
        begin = first[near_linear].reshape(-1) - (torch.cumsum(count, 0) - count)
        slot = torch.repeat_interleave(count)  # (T,) the slot of each candidate
        candidate = torch.arange(slot.shape[0], device=device) + begin.index_select(0, slot)  # into by_bin
        d = by_bin.index_select(1, candidate) + rel.index_select(1, slot)  # (3, T) Å
        d2 = (d * d).sum(dim=0)
        hit = ((d2 < reach2) & (d2 > 0.0)).nonzero().squeeze(1)
        slot = slot[hit]
        i = centres[torch.div(slot, n_stencil, rounding_mode="floor")]
        j = order[candidate[hit]]
        keep = (slot % n_stencil != 0) | (i < j)  # the zero offset (same bin, no shift): i < j
        found_i.append(i[keep])
        found_j.append(j[keep])
        found_s.append(image[slot[keep]])
    return torch.cat(found_i), torch.cat(found_j), torch.cat(found_s), shifts, wrap


def directed_pairs(positions: Tensor, cell: Tensor, pbc: Tensor, cutoff: float,
                   chunk: int = 1 << 18) -> Tuple[Tensor, Tensor, Tensor]:
    """Every directed pair (i, j) closer than ``cutoff`` (Å), both directions, periodic images
    included, from :func:`half_pairs`: ``i``, ``j`` (P,) int64 and ``vec`` (P, 3) Å,
    r_ij = x_j − x_i + n·cell, rebuilt from ``positions`` (N, 3) Å and ``cell`` (3, 3) Å rows
    (differentiable in both; the pairs are chosen without gradient). ``pbc`` (3,) bool. Pairs
    up to cutoff·(1 + 1e-9) may be returned."""
    i, j, image, shifts, wrap = half_pairs(positions, cell, pbc, cutoff, chunk)
    x = positions - wrap.to(positions.dtype) @ cell
    shift_vec = shifts.to(positions.dtype) @ cell
    vec = x.index_select(0, j) - x.index_select(0, i) + shift_vec.index_select(0, image)
    return torch.cat([i, j]), torch.cat([j, i]), torch.cat([vec, -vec])
