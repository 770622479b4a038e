"""Synthetic dispersion-bound interface data written by LAMMPS: a Kr slab and a Xe slab across
vacuum gaps, bound only by Lennard-Jones tails that reach across the gaps.

Each frame is a fully periodic orthorhombic cell: an fcc(100) Kr slab and an fcc(100) Xe slab of
``LAYERS`` atomic layers each, ``LATERAL`` conventional cells wide along x and y, stacked along z
with a gap of random width on either side (the second gap is the periodic image's), the Xe slab
shifted laterally at random, the cell strained laterally and every atom displaced at random
(``rattle``). The energy and forces are LAMMPS' ``pair_style lj/cut`` with a long cutoff
(``LJ_CUTOFF``, energies shifted to zero there), Lorentz–Berthelot mixing (``pair_modify mix
arithmetic``): E = 4ε[(σ/r)¹² − (σ/r)⁶]. Across a gap wider than a model's cutoff the slabs see
each other only through the −4εσ⁶/r⁶ tail: a long-range interaction that is not point-charge
Coulomb. Units: LAMMPS metal (Å, eV, eV/Å).

LJ parameters: common rare-gas values, Kr ε/k_B = 171 K, σ = 3.60 Å; Xe ε/k_B = 221 K,
σ = 4.10 Å. Both slabs share the lateral lattice constant ``LATERAL_A`` (between the LJ fcc
lattice constants 1.55 σ of Kr, 5.58 Å, and Xe, 6.36 Å: Kr stretched and Xe compressed by about
6 %); along z each keeps its own layer spacing. (Kr and Xe rather than Ar: pymatgen has no
Pauling electronegativity for Ar, which the learned-charge models' initial charges use.)
"""

from __future__ import annotations

import numpy as np

from mlip.lammps import load_lammps
from parsers import Frame

KB_EV = 8.617343e-5  # eV/K (LAMMPS metal)
NUMBERS = (36, 54)  # LAMMPS types 1 (Kr) and 2 (Xe)
MASSES = (83.798, 131.293)
LJ = ((171.0 * KB_EV, 3.60), (221.0 * KB_EV, 4.10))  # (ε eV, σ Å) of Kr and Xe
LATTICE = (5.58, 6.36)  # Å, fcc lattice constants 1.55 σ (layer spacing along z: half of it)
LATERAL_A = 5.95  # Å, the common lateral lattice constant
LATERAL = 2  # conventional cells along x and y
LAYERS = 4  # atomic (100) layers per slab
LJ_CUTOFF = 15.0  # Å


def slab(element: int, lateral: np.ndarray) -> np.ndarray:
    """Positions (n, 3) Å of an fcc(100) slab of ``LAYERS`` layers of element index ``element``
    (0 = Kr, 1 = Xe) with lateral lattice constants ``lateral`` (2,) Å, lowest layer at z = 0."""
    spacing = LATTICE[element] / 2
    sites = [(i * lateral[0] / 2, j * lateral[1] / 2, layer * spacing)
             for layer in range(LAYERS) for i in range(2 * LATERAL) for j in range(2 * LATERAL)
             if (i + j + layer) % 2 == 0]
    return np.array(sites)


def structure(rng: np.random.Generator, gaps: tuple[float, float], rattle: float,
              strain: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions (n, 3) Å, LAMMPS types (n,) and box lengths (3,) Å of one frame: gap widths (Å,
    facing layer to facing layer) drawn uniformly from ``gaps`` on both sides, lateral strain
    uniform in ±``strain``, the Xe slab shifted laterally at random, Gaussian displacements of
    standard deviation ``rattle`` Å."""
    lateral = LATERAL_A * (1.0 + rng.uniform(-strain, strain, 2))
    lower = slab(0, lateral)
    upper = slab(1, lateral)
    gap_between, gap_image = rng.uniform(*gaps, 2)
    offset = rng.uniform(0.0, 1.0, 2) * lateral * LATERAL
    upper = upper + np.array([offset[0], offset[1], lower[:, 2].max() + gap_between])
    box = np.array([lateral[0] * LATERAL, lateral[1] * LATERAL, upper[:, 2].max() + gap_image])
    pos = np.concatenate([lower, upper])
    pos = pos + rng.normal(0.0, rattle, pos.shape)
    types = np.repeat([1, 2], [len(lower), len(upper)])
    return pos % box, types, box


def lammps_energy(lmp, pos: np.ndarray, types: np.ndarray, box: np.ndarray,
                  cutoff: float = LJ_CUTOFF) -> tuple[float, np.ndarray]:
    """LAMMPS' energy (eV) and forces (n, 3) eV/Å (in input order) of one frame with the LJ
    interaction cut (and shifted) at ``cutoff`` Å; ``lmp`` is cleared first."""
    cmds = ["clear", "units metal", "atom_style atomic", "boundary p p p", "atom_modify map array",
            "region box block 0 {!r} 0 {!r} 0 {!r}".format(*box.tolist()), "create_box 2 box"]
    cmds += [f"create_atoms {t} single {x!r} {y!r} {z!r} units box"
             for (x, y, z), t in zip(pos.tolist(), types.tolist(), strict=True)]
    cmds += [f"mass {k + 1} {m}" for k, m in enumerate(MASSES)]
    cmds += [f"pair_style lj/cut {cutoff}"]
    cmds += [f"pair_coeff {k + 1} {k + 1} {eps!r} {sigma}" for k, (eps, sigma) in enumerate(LJ)]
    cmds += ["pair_modify mix arithmetic shift yes", "run 0"]
    lmp.commands_list(cmds)
    n = int(lmp.extract_global("nlocal"))
    order = np.argsort(np.asarray(lmp.numpy.extract_atom("id"))[:n])
    forces = np.asarray(lmp.numpy.extract_atom("f"))[:n][order].copy()
    return float(lmp.get_thermo("pe")), forces


def make_frames(n_frames: int, seed: int, gaps: tuple[float, float] = (5.5, 9.0), rattle: float = 0.05,
                strain: float = 0.02) -> list[Frame]:
    """``n_frames`` frames (:func:`structure`) with LAMMPS energies (eV) and forces (eV/Å), group
    ``"interface"``."""
    rng = np.random.default_rng(seed)
    lmp = load_lammps().lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    frames = []
    try:
        for _ in range(n_frames):
            pos, types, box = structure(rng, gaps, rattle, strain)
            energy, forces = lammps_energy(lmp, pos, types, box)
            frames.append(Frame(numbers=np.asarray(NUMBERS)[types - 1], positions=pos, cell=np.diag(box),
                                pbc=np.ones(3, bool), energy=energy, forces=forces, group="interface"))
    finally:
        lmp.close()
    return frames
