"""Geometry helpers shared by the descriptor tests (random cells, edges, rotations).

Edges come from ``ase.neighborlist.neighbor_list`` (an independent reference,
not the project's own neighbour list), as r_ij = x_j - x_i + S @ cell.
"""

import numpy as np
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list


def random_cell(seed: int, n_atoms: int = 8, n_species: int = 2, volume_per_atom: float = 14.0) -> Atoms:
    """A random skewed periodic cell with ``n_atoms`` atoms, no pair closer than ~1.6 Å.

    Species indices are stored in ``atoms.arrays["species"]`` (every element present).
    """
    rng = np.random.default_rng(seed)
    length = (n_atoms * volume_per_atom) ** (1.0 / 3.0)
    cell = np.diag([length] * 3) + rng.uniform(-0.25, 0.25, (3, 3)) * length
    atoms = Atoms("H" * n_atoms, cell=cell, pbc=True)
    scaled = []
    while len(scaled) < n_atoms:
        trial = rng.uniform(0.0, 1.0, 3)
        probe = Atoms("H" * (len(scaled) + 1), scaled_positions=scaled + [trial], cell=cell, pbc=True)
        if len(scaled) == 0 or probe.get_distances(len(scaled), range(len(scaled)), mic=True).min() > 1.6:
            scaled.append(trial)
    atoms.set_scaled_positions(np.array(scaled))
    species = np.arange(n_atoms) % n_species
    rng.shuffle(species)
    atoms.arrays["species"] = species
    return atoms


def edges(atoms: Atoms, cutoff: float, positions: torch.Tensor = None, cell: torch.Tensor = None,
          pairs=None):
    """(species, edge_index, edge_vec) of ``atoms`` within ``cutoff`` (Å), float64.

    ``positions``/``cell`` (torch, may require grad) replace the atoms' own;
    ``pairs`` = (i, j, S) from an earlier ``neighbor_list("ijS", ...)`` call is
    reused instead of searching again.
    """
    i, j, shifts = neighbor_list("ijS", atoms, cutoff) if pairs is None else pairs
    if positions is None:
        positions = torch.tensor(atoms.positions, dtype=torch.float64)
    if cell is None:
        cell = torch.tensor(atoms.cell.array, dtype=torch.float64)
    edge_index = torch.tensor(np.stack([i, j]), dtype=torch.int64)
    vec = positions[edge_index[1]] - positions[edge_index[0]] + torch.tensor(shifts, dtype=cell.dtype) @ cell
    species = torch.tensor(atoms.arrays["species"], dtype=torch.int64)
    return species, edge_index, vec


def brute_force_neighbors(atoms: Atoms, cutoff: float):
    """Plain image enumeration: for every atom the list of (species, r_ij vector) with 0 < r < cutoff."""
    pos, cell = atoms.positions, atoms.cell.array
    inv = np.linalg.inv(cell)
    reps = [int(np.ceil(cutoff * np.linalg.norm(inv[:, k]))) + 1 for k in range(3)]
    species = atoms.arrays["species"]
    result = []
    for i in range(len(atoms)):
        neigh = []
        for j in range(len(atoms)):
            for a in range(-reps[0], reps[0] + 1):
                for b in range(-reps[1], reps[1] + 1):
                    for c in range(-reps[2], reps[2] + 1):
                        v = pos[j] - pos[i] + np.array([a, b, c]) @ cell
                        d = np.linalg.norm(v)
                        if 0.0 < d < cutoff:
                            neigh.append((species[j], v))
        result.append(neigh)
    return result


def descriptor(module: torch.nn.Module, atoms: Atoms) -> torch.Tensor:
    """Per-atom descriptor of ``atoms`` (n_atoms, n_features), float64."""
    species, edge_index, vec = edges(atoms, module.cutoff)
    return module(species, edge_index, vec, len(atoms))


def random_rotation(seed: int, proper: bool = True) -> np.ndarray:
    """A random orthogonal 3×3 matrix with determinant +1 (``proper``) or −1."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if (np.linalg.det(q) > 0) != proper:
        q = -q
    return q


def transformed(atoms: Atoms, matrix: np.ndarray, translation=(0.0, 0.0, 0.0)) -> Atoms:
    """``atoms`` with positions and cell mapped by x -> x @ matrix.T + translation."""
    out = atoms.copy()
    out.set_cell(atoms.cell.array @ matrix.T, scale_atoms=False)
    out.positions = atoms.positions @ matrix.T + np.asarray(translation)
    return out


def strain_and_position_gradients(module: torch.nn.Module, atoms: Atoms, weights: torch.Tensor):
    """Autograd and central finite-difference gradients of E = sum(weights * descriptor).

    Derivatives with respect to positions (n, 3) and to a homogeneous strain
    (3, 3) applied as x -> x (1 + eps), cell -> cell (1 + eps). The edge list is
    built once with a 0.5 Å skin so the finite steps do not change it.
    Returns (autograd_pos, fd_pos, autograd_strain, fd_strain) as numpy arrays.
    """
    pos0 = torch.tensor(atoms.positions, dtype=torch.float64)
    cell0 = torch.tensor(atoms.cell.array, dtype=torch.float64)

    pairs = neighbor_list("ijS", atoms, module.cutoff + 0.5)

    def energy(positions, cell):
        species, edge_index, vec = edges(atoms, module.cutoff, positions, cell, pairs)
        return (module(species, edge_index, vec, len(atoms)) * weights).sum()

    def strained(eps):
        deformation = torch.eye(3, dtype=torch.float64) + eps
        return energy(pos0 @ deformation, cell0 @ deformation)

    pos = pos0.clone().requires_grad_(True)
    (grad_pos,) = torch.autograd.grad(energy(pos, cell0), pos)
    eps = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
    (grad_eps,) = torch.autograd.grad(strained(eps), eps)
    h = 1e-5
    fd_pos = np.zeros((len(atoms), 3))
    with torch.no_grad():
        for a in range(len(atoms)):
            for c in range(3):
                step = torch.zeros_like(pos0)
                step[a, c] = h
                fd_pos[a, c] = (energy(pos0 + step, cell0) - energy(pos0 - step, cell0)).item() / (2 * h)
        fd_eps = np.zeros((3, 3))
        for a in range(3):
            for c in range(3):
                step = torch.zeros(3, 3, dtype=torch.float64)
                step[a, c] = h
                fd_eps[a, c] = (strained(step) - strained(-step)).item() / (2 * h)
    return grad_pos.numpy(), fd_pos, grad_eps.numpy(), fd_eps
