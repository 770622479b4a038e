"""Toy TorchScript models that obey the deployed ``model.pt`` contract exactly
(docs/architecture.md), for testing ``pair_style mlip`` before real models exist.

* :class:`ToyEAM`: short-range, many-body (embedding of a neighbour density) with
  per-species and per-species-pair parameters, smooth cutoff.
* :class:`ToyLongRange`: ``ToyEAM`` plus a reciprocal-space term over all local atoms
  that depends on the cell (metadata ``long_range: true``). Its long-range energy is
  *not* part of ``atomic_energies``: ``energy = sum(atomic_energies) + E_lr``.

Forces and virial come from autograd inside ``forward``: positions, edge shifts and
cell are strained as ``x -> x (1 + eps)`` (row vectors), ``virial = -dE/deps``.
"""

import json
import math
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch
from torch import Tensor


def _smooth_cutoff(r: Tensor, cutoff: float) -> Tensor:
    u = (r / cutoff).clamp(max=1.0)
    return (1.0 - u * u) ** 3


class ToyEAM(torch.nn.Module):
    """E_i = e0[s_i] + 1/2 sum_j A[s_i,s_j] exp(-alpha (r_ij - r0)) fc(r_ij) - c[s_i] sqrt(1 + rho_i),
    rho_i = sum_j beta[s_j] exp(-gamma r_ij) fc(r_ij); energies eV, distances Å."""

    def __init__(self, n_species: int, cutoff: float):
        super().__init__()
        self.cutoff = cutoff
        s = torch.arange(n_species, dtype=torch.float64)
        self.e0 = torch.nn.Parameter(-1.0 - 0.3 * s)
        self.a = torch.nn.Parameter(0.20 + 0.05 * (s[:, None] + s[None, :]) + 0.02 * s[:, None] * s[None, :])
        self.beta = torch.nn.Parameter(1.0 + 0.4 * s)
        self.c = torch.nn.Parameter(0.8 + 0.25 * s)
        self.alpha = 1.3
        self.r0 = 2.5
        self.gamma = 0.9

    def local_energies(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, n_local: int) -> Tensor:
        """Per-atom energies (n_local,) eV from edges i < n_local with vectors edge_vec (E,3) Å."""
        i = edge_index[0]
        j = edge_index[1]
        r = torch.linalg.norm(edge_vec, dim=1)
        fc = _smooth_cutoff(r, self.cutoff) * (r < self.cutoff).to(r.dtype)
        phi = self.a[species[i], species[j]] * torch.exp(-self.alpha * (r - self.r0)) * fc
        dens = self.beta[species[j]] * torch.exp(-self.gamma * r) * fc
        zeros = torch.zeros(n_local, dtype=r.dtype, device=r.device)
        pair = zeros.index_add(0, i, 0.5 * phi)
        rho = zeros.index_add(0, i, dens)
        s = species[:n_local]
        return self.e0[s] + pair - self.c[s] * torch.sqrt(1.0 + rho)

    def long_range_energy(self, positions: Tensor, species: Tensor, cell: Tensor, n_local: int) -> Tensor:
        return torch.zeros((), dtype=positions.dtype, device=positions.device)

    def forward(
        self,
        positions: Tensor,
        species: Tensor,
        edge_index: Tensor,
        edge_shift: Tensor,
        cell: Tensor,
        pbc: Tensor,
        n_local: int,
    ) -> Dict[str, Tensor]:
        eps = torch.zeros((3, 3), dtype=positions.dtype, device=positions.device).requires_grad_(True)
        pos = positions.detach().clone().requires_grad_(True)
        deform = torch.eye(3, dtype=positions.dtype, device=positions.device) + eps
        pos_s = pos @ deform
        edge_vec = pos_s[edge_index[1]] - pos_s[edge_index[0]] + edge_shift @ deform
        atomic = self.local_energies(species, edge_index, edge_vec, n_local)
        energy = atomic.sum() + self.long_range_energy(pos_s, species, cell @ deform, n_local)
        grads = torch.autograd.grad([energy], [pos, eps])
        g_pos = grads[0]
        g_eps = grads[1]
        assert g_pos is not None and g_eps is not None
        return {
            "energy": energy.detach(),
            "atomic_energies": atomic.detach(),
            "forces": -g_pos,
            "virial": -g_eps,
        }


class ToyLongRange(ToyEAM):
    """ToyEAM + E_lr = K/V sum_m exp(-sigma^2 k^2 / 2) / k^2 |sum_i q[s_i] exp(i k.x_i)|^2 over the
    26 reciprocal vectors k = m B with m in {-1,0,1}^3 \\ 0 (B = 2 pi cell^-T); local atoms only."""

    def __init__(self, n_species: int, cutoff: float):
        super().__init__(n_species, cutoff)
        self.q = torch.nn.Parameter(0.6 - 0.9 * torch.arange(n_species, dtype=torch.float64))
        m = torch.cartesian_prod(*(torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64),) * 3)
        self.register_buffer("m", m[(m != 0).any(dim=1)])
        self.k_scale = 20.0
        self.sigma = 1.0

    def long_range_energy(self, positions: Tensor, species: Tensor, cell: Tensor, n_local: int) -> Tensor:
        x = positions[:n_local]
        q = self.q[species[:n_local]]
        k = self.m.to(x.dtype) @ (2.0 * math.pi * torch.linalg.inv(cell).T)
        k2 = (k * k).sum(dim=1)
        phase = x @ k.T
        c = (q[:, None] * torch.cos(phase)).sum(dim=0)
        s = (q[:, None] * torch.sin(phase)).sum(dim=0)
        weight = torch.exp(-0.5 * self.sigma**2 * k2) / k2
        volume = torch.abs(torch.linalg.det(cell))
        return self.k_scale / volume * (weight * (c * c + s * s)).sum()


class BrokenModel(torch.nn.Module):
    """Violates the contract at run time, for error tests: raises (``raises``) or returns
    atomic energies and forces of wrong shapes."""

    def __init__(self, raises: bool):
        super().__init__()
        self.raises = raises

    def forward(
        self,
        positions: Tensor,
        species: Tensor,
        edge_index: Tensor,
        edge_shift: Tensor,
        cell: Tensor,
        pbc: Tensor,
        n_local: int,
    ) -> Dict[str, Tensor]:
        if self.raises:
            raise RuntimeError("toy model failure")
        zero = torch.zeros((), dtype=positions.dtype)
        return {"energy": zero, "atomic_energies": positions[:1, 0], "forces": positions[:1],
                "virial": torch.zeros((3, 3), dtype=positions.dtype)}


def save_model(
    path: Path,
    elements: Sequence[str],
    cutoff: float = 4.5,
    long_range: bool = False,
    dtype: str = "float64",
    units: str = "metal",
    broken: str = "",
) -> Path:
    """Script a toy model for ``elements`` (sorted by Z by the caller) and save it with metadata.
    ``broken``: "" (a working model), "raises" or "shapes" (:class:`BrokenModel`)."""
    if broken:
        model = BrokenModel(raises=broken == "raises")
    else:
        model = (ToyLongRange if long_range else ToyEAM)(len(elements), cutoff).to(getattr(torch, dtype))
    meta = {
        "elements": list(elements),
        "cutoff": cutoff,
        "dtype": dtype,
        "mlip_version": "toy",
        "long_range": long_range,
        "physics": ["toy_reciprocal"] if long_range else [],
        "descriptors": {"type": "toy_eam"},
        "units": units,
    }
    scripted = torch.jit.script(model)
    torch.jit.save(scripted, str(path), _extra_files={"metadata.json": json.dumps(meta)})
    return path


def evaluate_periodic(model_path: Path, atoms, elements: List[str]) -> Dict[str, "object"]:
    """Evaluate a saved model on a whole periodic ``ase.Atoms`` with ASE's neighbour list
    (image shifts, no ghosts): returns numpy energy, atomic_energies (n,), forces (n,3), virial (3,3)."""
    from ase.neighborlist import neighbor_list

    extra = {"metadata.json": ""}
    model = torch.jit.load(str(model_path), _extra_files=extra)
    meta = json.loads(extra["metadata.json"])
    dtype = getattr(torch, meta["dtype"])
    i, j, shifts = neighbor_list("ijS", atoms, meta["cutoff"])
    cell = torch.tensor(atoms.cell.array, dtype=dtype)
    species = torch.tensor([elements.index(s) for s in atoms.get_chemical_symbols()], dtype=torch.int64)
    out = model(
        torch.tensor(atoms.positions, dtype=dtype),
        species,
        torch.tensor(np.stack([i, j]), dtype=torch.int64),
        torch.tensor(shifts, dtype=dtype) @ cell,
        cell,
        torch.tensor(atoms.pbc),
        len(atoms),
    )
    return {key: value.detach().double().numpy() for key, value in out.items()}
