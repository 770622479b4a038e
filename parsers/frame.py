"""The Frame: one atomic snapshot in LAMMPS ``metal`` units.

A Frame is what every reader in :mod:`parsers` yields and what every later
stage consumes. Field shapes and units follow the shared contract
(``docs/architecture.md``):

- ``numbers``: (n,) int64, atomic numbers
- ``positions``: (n, 3) float64, Å, Cartesian, ordered by atom id
- ``cell``: (3, 3) float64, Å, lattice vectors as rows (a, b, c)
- ``pbc``: (3,) bool, periodic directions
- ``energy``: float or None, eV, total potential energy
- ``forces``: (n, 3) float64 or None, eV/Å
- ``stress``: (3, 3) float64 or None, eV/Å³, ASE sign convention (positive = tensile)
- ``charges``: (n,) float64 or None, e
- ``total_charge``: float, e, net charge of the frame (default 0)
- ``energy_weight``, ``force_weight``: per-frame loss weights (default 1)
- ``source``, ``index``: file and frame number, for messages and provenance
- ``group``: optional label (e.g. mlearn's "AIMD-NVT"), used for per-group errors
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import ase
    import pymatgen.core


def _as_array(value: Any, dtype: Any, shape: tuple[int, ...] | None, name: str) -> np.ndarray:
    arr = np.ascontiguousarray(value, dtype=dtype)
    if shape is not None and arr.shape != shape:
        raise ValueError(f"Frame.{name} must have shape {shape}, got {arr.shape}")
    return arr


@dataclass
class Frame:
    """One snapshot; see the module docstring for shapes and units."""

    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray = field(default_factory=lambda: np.zeros((3, 3)))
    pbc: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=bool))
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    charges: np.ndarray | None = None
    total_charge: float = 0.0
    energy_weight: float = 1.0
    force_weight: float = 1.0
    source: str = ""
    index: int = 0
    group: str | None = None

    def __post_init__(self) -> None:
        self.numbers = _as_array(self.numbers, np.int64, None, "numbers")
        n = len(self.numbers)
        self.positions = _as_array(self.positions, np.float64, (n, 3), "positions")
        self.cell = _as_array(self.cell, np.float64, (3, 3), "cell")
        self.pbc = _as_array(self.pbc, bool, (3,), "pbc")
        if self.forces is not None:
            self.forces = _as_array(self.forces, np.float64, (n, 3), "forces")
        if self.stress is not None:
            self.stress = _as_array(self.stress, np.float64, (3, 3), "stress")
        if self.charges is not None:
            self.charges = _as_array(self.charges, np.float64, (n,), "charges")
        if self.energy is not None:
            self.energy = float(self.energy)

    def __len__(self) -> int:
        return len(self.numbers)

    @property
    def n_atoms(self) -> int:
        """Number of atoms."""
        return len(self.numbers)

    def to_ase(self) -> ase.Atoms:
        """Convert to :class:`ase.Atoms`, attaching energy/forces/stress as a
        ``SinglePointCalculator`` and charges as initial charges."""
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator
        from ase.stress import full_3x3_to_voigt_6_stress

        atoms = Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)
        if self.charges is not None:
            atoms.set_initial_charges(self.charges)
        results: dict[str, Any] = {}
        if self.energy is not None:
            results["energy"] = self.energy
        if self.forces is not None:
            results["forces"] = self.forces.copy()
        if self.stress is not None:
            results["stress"] = full_3x3_to_voigt_6_stress(self.stress)
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        atoms.info.update(
            {
                "energy_weight": self.energy_weight,
                "force_weight": self.force_weight,
                "charge": self.total_charge,
                "source": self.source,
                "index": self.index,
            }
        )
        if self.group is not None:
            atoms.info["group"] = self.group
        return atoms

    @classmethod
    def from_ase(cls, atoms: ase.Atoms, source: str = "", index: int = 0) -> Frame:
        """Build a Frame from :class:`ase.Atoms`. Energy, forces and stress are
        taken from an attached calculator's stored results (never recomputed),
        weights and total charge from ``atoms.info``."""
        from ase.stress import voigt_6_to_full_3x3_stress

        energy = forces = stress = None
        calc = atoms.calc
        if calc is not None:
            res = getattr(calc, "results", {})
            energy = res.get("energy", res.get("free_energy"))
            forces = res.get("forces")
            s = res.get("stress")
            if s is not None:
                s = np.asarray(s, dtype=float)
                stress = voigt_6_to_full_3x3_stress(s) if s.shape == (6,) else s
        charges = None
        if atoms.has("initial_charges") and np.any(atoms.get_initial_charges() != 0):
            charges = atoms.get_initial_charges()
        info = atoms.info
        return cls(
            numbers=atoms.numbers,
            positions=atoms.positions,
            cell=np.asarray(atoms.cell[:]),
            pbc=atoms.pbc,
            energy=energy,
            forces=forces,
            stress=stress,
            charges=charges,
            total_charge=float(info.get("total_charge", info.get("charge", 0.0))),
            energy_weight=float(info.get("energy_weight", 1.0)),
            force_weight=float(info.get("force_weight", 1.0)),
            source=str(info.get("source", source)),
            index=int(info.get("index", index)),
            group=info.get("group"),
        )

    def to_pymatgen(self) -> pymatgen.core.Structure | pymatgen.core.Molecule:
        """Convert to a pymatgen ``Structure`` (any periodic direction) or
        ``Molecule`` (no periodic direction)."""
        from pymatgen.core import Lattice, Molecule, Structure

        if not self.pbc.any():
            return Molecule(self.numbers.tolist(), self.positions, charge=self.total_charge)
        lattice = Lattice(self.cell, pbc=tuple(bool(p) for p in self.pbc))
        return Structure(
            lattice,
            self.numbers.tolist(),
            self.positions,
            coords_are_cartesian=True,
            charge=self.total_charge,
        )
