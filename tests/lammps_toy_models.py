"""Toy TorchScript models that obey the deployed ``model.pt`` contract exactly
(docs/architecture.md), for testing ``pair_style mlip`` before real models exist.

* :class:`ToyEAM`: short-range, many-body (embedding of a neighbour density) with
  per-species and per-species-pair parameters, smooth cutoff.
* :class:`ToyLongRange`: ``ToyEAM`` plus a reciprocal-space term over all local atoms
  that depends on the cell (metadata ``long_range: true``). Its long-range energy is
  *not* part of ``atomic_energies``: ``energy = sum(atomic_energies) + E_lr``.
* :class:`ToyEAMLegacy`: ``ToyEAM`` with the contract's ``forward`` of models exported before
  edge forces (no ``edge_forces`` argument).

Forces and virial come from autograd inside ``forward``: positions, edge shifts and
cell are strained as ``x -> x (1 + eps)`` (row vectors), ``virial = -dE/deps``. With
``edge_forces=True`` (short-range models) they come from one autograd pass to the edge
vectors instead, and ``edge_forces`` F_e = -dE/dr_ij (E, 3) eV/Å is returned too.
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

    long_range: bool

    def __init__(self, n_species: int, cutoff: float):
        super().__init__()
        self.cutoff = cutoff
        self.long_range = False
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
        edge_forces: bool = False,
    ) -> Dict[str, Tensor]:
        if edge_forces:
            if self.long_range:
                raise RuntimeError("edge_forces: a long-range model's energy is not a function of its edges")
            return self.from_edges(positions, species, edge_index, edge_shift, n_local)
        return self.from_strain(positions, species, edge_index, edge_shift, cell, n_local)

    def from_edges(self, positions: Tensor, species: Tensor, edge_index: Tensor, edge_shift: Tensor,
                   n_local: int) -> Dict[str, Tensor]:
        """Energies and derivatives through the edge vectors (short-range energy only):
        ``edge_forces`` F_e = -dE/dr_ij, forces (F_e on j, -F_e on i), virial sum_e r_ij (x) F_e."""
        i = edge_index[0]
        j = edge_index[1]
        edge_vec = (positions[j] - positions[i] + edge_shift).detach().requires_grad_(True)
        atomic = self.local_energies(species, edge_index, edge_vec, n_local)
        energy = atomic.sum()
        g = torch.autograd.grad([energy], [edge_vec])[0]
        assert g is not None
        f_edge = -g
        forces = torch.zeros_like(positions).index_add(0, j, f_edge).index_add(0, i, -f_edge)
        return {
            "energy": energy.detach(),
            "atomic_energies": atomic.detach(),
            "forces": forces,
            "virial": edge_vec.detach().T @ f_edge,
            "edge_forces": f_edge,
        }

    def from_strain(self, positions: Tensor, species: Tensor, edge_index: Tensor, edge_shift: Tensor,
                    cell: Tensor, n_local: int) -> Dict[str, Tensor]:
        """Energies and derivatives through positions and a homogeneous strain of positions,
        shifts and cell (every term, the long-range one included)."""
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
        self.long_range = True
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


class ToyEAMLegacy(ToyEAM):
    """ToyEAM as exported before edge forces: ``forward`` has no ``edge_forces`` argument."""

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
        return self.from_strain(positions, species, edge_index, edge_shift, cell, n_local)


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
    legacy: bool = False,
) -> Path:
    """Script a toy model for ``elements`` (sorted by Z by the caller) and save it with metadata.
    ``broken``: "" (a working model), "raises" or "shapes" (:class:`BrokenModel`); ``legacy``:
    a short-range :class:`ToyEAMLegacy` (no ``edge_forces`` argument)."""
    if broken:
        model = BrokenModel(raises=broken == "raises")
    elif legacy:
        model = ToyEAMLegacy(len(elements), cutoff).to(getattr(torch, dtype))
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


def evaluate_periodic(model_path: Path, atoms, elements: List[str], edge_forces: bool = False
                      ) -> Dict[str, "object"]:
    """Evaluate a saved model on a whole periodic ``ase.Atoms`` with ASE's neighbour list
    (image shifts, no ghosts): returns numpy energy, atomic_energies (n,), forces (n,3), virial (3,3)
    and, with ``edge_forces``, the model's ``edge_forces`` (E,3) eV/Å with ``edge_index`` (2,E)
    and ``edge_vec`` r_ij (E,3) Å of its edges."""
    from ase.neighborlist import neighbor_list

    extra = {"metadata.json": ""}
    model = torch.jit.load(str(model_path), _extra_files=extra)
    meta = json.loads(extra["metadata.json"])
    dtype = getattr(torch, meta["dtype"])
    i, j, shifts = neighbor_list("ijS", atoms, meta["cutoff"])
    cell = torch.tensor(atoms.cell.array, dtype=dtype)
    species = torch.tensor([elements.index(s) for s in atoms.get_chemical_symbols()], dtype=torch.int64)
    positions = torch.tensor(atoms.positions, dtype=dtype)
    edge_shift = torch.tensor(shifts, dtype=dtype) @ cell
    args = (positions, species, torch.tensor(np.stack([i, j]), dtype=torch.int64), edge_shift, cell,
            torch.tensor(atoms.pbc), len(atoms))
    out = model(*args, True) if edge_forces else model(*args)
    result = {key: value.detach().double().numpy() for key, value in out.items()}
    if edge_forces:
        result["edge_index"] = np.stack([i, j])
        result["edge_vec"] = (positions[j] - positions[i] + edge_shift).double().numpy()
    return result


def edge_virials(model_path: Path, atoms, elements: List[str]) -> Dict[str, np.ndarray]:
    """Per-atom virials (eV) of a short-range model on a whole periodic ``ase.Atoms``, from its
    edge forces F_e = -dE/dr_ij with v_e = r_ij (x) F_e (a reference for pair_style mlip):
    ``stress`` (n, 6; xx yy zz xy xz yz), half of v_e to i and half to j, and ``centroid``
    (n, 9; xx yy zz xy xz yz yx zx zy), all of v_e to j."""
    out = evaluate_periodic(model_path, atoms, elements, edge_forces=True)
    v = out["edge_vec"][:, :, None] * out["edge_forces"][:, None, :]  # (E, 3, 3): r_a F_b
    rows, cols = (0, 1, 2, 0, 0, 1, 1, 2, 2), (0, 1, 2, 1, 2, 2, 0, 0, 1)
    v9 = v[:, rows, cols]
    i, j = out["edge_index"]
    stress = np.zeros((len(atoms), 6))
    np.add.at(stress, i, 0.5 * v9[:, :6])
    np.add.at(stress, j, 0.5 * v9[:, :6])
    centroid = np.zeros((len(atoms), 9))
    np.add.at(centroid, j, v9)
    return {"stress": stress, "centroid": centroid}
