"""Helpers of the physics-term tests: LAMMPS reference runs and autograd forces/virial.

The virial convention (``docs/architecture.md``): W = −∂E/∂ε for a strain applied
as x → x(1+ε), cell → cell(1+ε), edge_vec → edge_vec(1+ε). LAMMPS ``compute
pressure NULL virial`` reports P_ab = W_ab / V · nktv2p (bar) with W_ab = Σ r_a F_b,
the same sign: repulsive pairs give a positive virial and a positive pressure.
So W = P · V / nktv2p, ``nktv2p`` read from LAMMPS itself (1602176.5 in metal units).
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import numpy as np
import torch

from fingerprints.neighbors import neighbor_list
from mlip.lammps import load_lammps


def lower_triangular_cell(rng: np.random.Generator, lengths: Sequence[float], tilt: float) -> np.ndarray:
    """A LAMMPS-style cell (rows a, b, c with a ∥ x, b in the xy plane), tilts up to ``tilt`` × length."""
    lx, ly, lz = lengths
    xy, xz, yz = rng.uniform(-tilt, tilt, 3) * np.array([lx, lx, ly])
    return np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]])


def random_positions(rng: np.random.Generator, cell: np.ndarray, n: int, min_dist: float) -> np.ndarray:
    """``n`` positions inside ``cell`` (fractional coordinates in [0, 1)), no periodic pair closer than
    ``min_dist`` Å."""
    inv = np.linalg.inv(cell)
    pos: list[np.ndarray] = []
    while len(pos) < n:
        x = rng.uniform(0.0, 1.0, 3) @ cell
        ok = True
        for p in pos:
            d = (x - p) @ inv
            d -= np.round(d)
            if np.linalg.norm(d @ cell) < min_dist:
                ok = False
                break
        if ok:
            pos.append(x)
    return np.array(pos)


def lammps_reference(
    cell: np.ndarray,
    positions: np.ndarray,
    types: np.ndarray,
    n_types: int,
    style_commands: Sequence[str],
    charges: Optional[np.ndarray] = None,
) -> Dict[str, np.ndarray]:
    """Energy (eV), per-atom energies (n,), forces (n, 3) and virial (3, 3) eV from one LAMMPS ``run 0``.

    Args:
        cell: (3, 3) Å lower-triangular rows (LAMMPS prism); a diagonal cell gives an orthogonal box.
        positions: (n, 3) Å inside the cell. types: (n,) LAMMPS types 1..n_types.
        style_commands: ``pair_style``/``pair_coeff``/``kspace_style`` ... lines.
        charges: (n,) e, switches to ``atom_style charge``.
    """
    lammps = load_lammps()
    lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    try:
        (lx, _, _), (xy, ly, _), (xz, yz, lz) = np.asarray(cell, dtype=float).tolist()
        orthogonal = xy == 0.0 and xz == 0.0 and yz == 0.0
        region = f"block 0 {lx!r} 0 {ly!r} 0 {lz!r}" if orthogonal else (
            f"prism 0 {lx!r} 0 {ly!r} 0 {lz!r} {xy!r} {xz!r} {yz!r}")
        lmp.commands_list([
            "units metal",
            f"atom_style {'atomic' if charges is None else 'charge'}",
            "atom_modify map array",
            "boundary p p p",
            f"region box {region}",
            f"create_box {n_types} box",
            "mass * 1.0",
        ])
        n = len(positions)
        lmp.create_atoms(n, list(range(1, n + 1)), [int(t) for t in types],
                         [float(v) for v in np.asarray(positions).ravel()])
        if lmp.get_natoms() != n:
            raise RuntimeError(f"LAMMPS kept {lmp.get_natoms()} of {n} atoms")
        if charges is not None:
            for i, q in enumerate(charges):
                lmp.command(f"set atom {i + 1} charge {float(q)!r}")
        lmp.commands_list(list(style_commands))
        lmp.commands_list([
            "compute pea all pe/atom",
            "compute vir all pressure NULL virial",
            "thermo_style custom step pe c_vir[1]",
            "run 0",
        ])
        ids = np.asarray(lmp.numpy.extract_atom("id"))[:n]
        order = np.argsort(ids)
        forces = np.array(lmp.numpy.extract_atom("f")[:n])[order]
        pe_atom = np.array(lmp.numpy.extract_compute("pea", lammps.LMP_STYLE_ATOM, lammps.LMP_TYPE_VECTOR))
        p = np.array(lmp.numpy.extract_compute("vir", lammps.LMP_STYLE_GLOBAL, lammps.LMP_TYPE_VECTOR))
        volume = abs(np.linalg.det(cell))
        w = p * volume / lmp.extract_global("nktv2p")
        virial = np.array([[w[0], w[3], w[4]], [w[3], w[1], w[5]], [w[4], w[5], w[2]]])
        return {"energy": np.array(lmp.get_thermo("pe")), "atomic_energies": pe_atom[:n][order],
                "forces": forces, "virial": virial}
    finally:
        lmp.close()


def energy_forces_virial(
    energy_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    positions: torch.Tensor,
    cell: torch.Tensor,
) -> Dict[str, torch.Tensor]:
    """Per-atom energies, forces −∂E/∂x and virial −∂E/∂ε of ``energy_fn(positions, cell)``.

    The strain ε (3, 3) is applied as x → x(1+ε) to positions and cell (rows); an
    ``energy_fn`` that builds edge vectors from them strains those too.
    """
    positions = positions.detach().clone().requires_grad_(True)
    strain = torch.zeros(3, 3, dtype=positions.dtype, requires_grad=True)
    deform = torch.eye(3, dtype=positions.dtype) + strain
    atomic = energy_fn(positions @ deform, cell @ deform)
    grad_x, grad_eps = torch.autograd.grad(atomic.sum(), [positions, strain])
    return {"energy": atomic.sum().detach(), "atomic_energies": atomic.detach(),
            "forces": -grad_x, "virial": -grad_eps}


def with_edges(data: Dict[str, torch.Tensor], cutoff: float) -> Dict[str, torch.Tensor]:
    """``data`` plus the model's edges of its frames, as the Potential passes them to physics terms:
    ``edge_index`` (2, E) directed pairs (both directions) with r < ``cutoff`` (Å), chosen on the
    detached geometry, and ``edge_vec`` (E, 3) Å = x_j − x_i + n·cell built from the given (possibly
    strained) ``positions`` and ``cell``, so autograd flows through them."""
    pos, cell, pbc, batch = data["positions"], data["cell"], data["pbc"], data["batch"]
    indices, vectors = [], []
    for b in range(cell.shape[0]):
        idx = torch.nonzero(batch == b).squeeze(1)
        x, box = pos[idx], cell[b].to(pos.dtype)
        pairs, shifts, _ = neighbor_list(x.detach().double().numpy(), box.detach().double().numpy(),
                                         pbc[b].numpy(), cutoff)
        pairs = torch.from_numpy(pairs)
        vectors.append(x[pairs[1]] - x[pairs[0]] + torch.from_numpy(shifts).to(pos.dtype) @ box)
        indices.append(idx[pairs])
    return {**data, "edge_index": torch.cat(indices, dim=1), "edge_vec": torch.cat(vectors)}


def term_energy_forces_virial(term: torch.nn.Module, positions: np.ndarray, cell: np.ndarray,
                              types: Sequence[int], pbc: Sequence[bool] = (True, True, True),
                              total_charge: float = 0.0):
    """Energy (eV), forces (n, 3) eV/Å and virial W = −∂E/∂ε (3, 3) eV of one frame for a physics
    term (its ``forward(data, n_local)``), float64, by :func:`energy_forces_virial`."""
    extra = {"species": torch.tensor(types), "pbc": torch.tensor([pbc]),
             "batch": torch.zeros(len(types), dtype=torch.long),
             "total_charge": torch.tensor([total_charge], dtype=torch.float64)}

    def energy_fn(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return term({"positions": x, "cell": c[None], **extra}, len(types))

    res = energy_forces_virial(energy_fn, torch.tensor(positions, dtype=torch.float64),
                               torch.tensor(cell, dtype=torch.float64))
    return res["energy"].item(), res["forces"].numpy(), res["virial"].numpy()


# small periodic two-element cells shared by the dispersion tests (D3, D4)
def wrapped(positions, cell):
    frac = np.linalg.solve(cell.T, positions.T).T % 1.0
    return frac @ cell


def zincblende_sic(seed):
    """8-atom SiC cell, triclinic (LAMMPS lower-triangular form), atoms rattled 0.1 Å."""
    rng = np.random.default_rng(seed)
    a = 4.36
    frac = np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]], dtype=float)
    frac = np.vstack([frac, frac + 0.25])
    cell = np.array([[a, 0, 0], [0.3, a, 0], [-0.2, 0.4, a]])
    positions = wrapped(frac @ cell + rng.normal(scale=0.1, size=(8, 3)), cell)
    return positions, cell, np.array([0, 0, 0, 0, 1, 1, 1, 1])  # elements C, Si


def rocksalt_mgo(seed):
    """8-atom MgO cell, orthorhombic, rattled 0.15 Å."""
    rng = np.random.default_rng(seed)
    a = 4.21
    frac = np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]], dtype=float)
    frac = np.vstack([frac, frac + np.array([0.5, 0, 0])])
    cell = np.diag([a, a * 1.03, a * 0.98])
    positions = wrapped(frac @ cell + rng.normal(scale=0.15, size=(8, 3)), cell)
    return positions, cell, np.array([0, 0, 0, 0, 1, 1, 1, 1])  # elements O, Mg
