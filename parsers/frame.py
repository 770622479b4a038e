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
- ``group``: optional label (e.g. mlearn's "AIMD-NVT", extxyz's ``config_type``),
  used for per-group errors

:meth:`Frame.check` is the validation every reader's frames go through in
:func:`parsers.read`: at least one atom, finite numbers, independent periodic
cell vectors and no two atoms closer than :data:`MIN_DISTANCE`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from parsers.errors import ParseError

if TYPE_CHECKING:  # pragma: no cover
    import ase
    import pymatgen.core


def _as_array(value: Any, dtype: Any, shape: tuple[int, ...] | None, name: str) -> np.ndarray:
    arr = np.ascontiguousarray(value, dtype=dtype)
    if shape is not None and arr.shape != shape:
        raise ValueError(f"Frame.{name} must have shape {shape}, got {arr.shape}")
    return arr


MIN_DISTANCE = 0.1  # Å; atoms closer than this (periodic images included) are rejected


def _periodic_basis(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """(3, 3) basis whose periodic rows are those of ``cell`` and whose other
    rows are an orthonormal basis of the directions the periodic ones leave out
    (the identity when nothing is periodic). Singular when the periodic rows
    are not independent."""
    periodic = cell[pbc]
    if not len(periodic):
        return np.eye(3)
    basis = cell.copy()
    basis[~pbc] = np.linalg.svd(periodic)[2][len(periodic):]
    return basis


def close_pair(
    positions: np.ndarray, basis: np.ndarray, pbc: np.ndarray, cutoff: float
) -> tuple[int, int, float, bool] | None:
    """The first pair of atoms closer than ``cutoff`` (Å), periodic images
    included, as ``(i, j, distance Å, across a periodic boundary)`` with
    ``i <= j`` (``i == j``: an atom and its own image), or None.

    ``positions`` (n, 3) Å; ``basis`` (3, 3) from :func:`_periodic_basis`
    (non-singular); ``pbc`` (3,) bool. Atoms are wrapped into the cell, the
    ones within ``cutoff`` of a periodic face get an image on the far side, and
    all are hashed into cubic bins of side ``2 * cutoff`` on eight grids
    shifted by 0 or ``cutoff`` along each axis: two atoms closer than
    ``cutoff`` share a bin on at least one grid. O(n) apart from sorting.
    """
    n = len(positions)
    frac = positions @ np.linalg.inv(basis)
    frac[:, pbc] -= np.floor(frac[:, pbc])
    owner = np.arange(n)
    spacing = abs(np.linalg.det(basis)) / np.linalg.norm(
        np.cross(basis[[1, 2, 0]], basis[[2, 0, 1]]), axis=1
    )  # distance between lattice planes along each axis, Å
    for k in np.flatnonzero(pbc):
        near = frac[:, k] < cutoff / spacing[k]
        image = frac[near]
        image[:, k] += 1.0
        frac = np.concatenate([frac, image])
        owner = np.concatenate([owner, owner[near]])
    points = frac @ basis
    for shift in itertools.product((0.0, cutoff), repeat=3):
        bins = np.floor((points + shift) / (2.0 * cutoff)).astype(np.int64)
        order = np.lexsort(bins.T)
        ordered = bins[order]
        for m in range(1, len(order)):  # pairs m apart in bin order, while some share a bin
            same = (ordered[m:] == ordered[:-m]).all(axis=1)
            if not same.any():
                break
            a, b = order[:-m][same], order[m:][same]
            dist = np.linalg.norm(points[a] - points[b], axis=1)
            hit = np.flatnonzero(dist < cutoff)
            if hit.size:
                a, b = int(a[hit[0]]), int(b[hit[0]])
                i, j = sorted((int(owner[a]), int(owner[b])))
                return i, j, float(dist[hit[0]]), max(a, b) >= n
    return None


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

    def _error(self, expected: str, found: str) -> ParseError:
        return ParseError(self.source or "<frame>", None, expected, found, frame=self.index)

    def check_values(self) -> None:
        """Raise :class:`ParseError` (naming ``source`` and ``index``) for a
        frame without atoms or with a number that is not finite: positions,
        cell, energy, forces, stress, charges, total charge or weights."""
        if self.n_atoms == 0:
            raise self._error("at least one atom", "0 atoms")
        for name in ("energy", "total_charge", "energy_weight", "force_weight"):
            value = getattr(self, name)
            if value is not None and not np.isfinite(value):
                raise self._error(f"a finite {name}", str(value))
        for name, item in (("positions", "atom"), ("forces", "atom"), ("charges", "atom"),
                           ("cell", "row"), ("stress", "row")):
            array = getattr(self, name)
            if array is None:
                continue
            bad = ~np.isfinite(array.reshape(len(array), -1)).all(axis=1)
            if bad.any():
                row = int(np.argmax(bad))
                raise self._error(f"finite {name}", f"{array[row].tolist()} for {item} {row}")

    def check(self, min_distance: float = MIN_DISTANCE) -> None:
        """:meth:`check_values`, then raise :class:`ParseError` when the
        periodic cell vectors are not independent or two atoms (periodic images
        included) are closer than ``min_distance`` Å; the message names the two
        atoms (0-based, in frame order)."""
        self.check_values()
        basis = _periodic_basis(self.cell, self.pbc)
        lengths = np.linalg.norm(basis, axis=1)
        if abs(np.linalg.det(basis)) <= 1e-9 * np.prod(lengths):
            axes = "".join("abc"[k] for k in np.flatnonzero(self.pbc))
            raise self._error(f"independent cell vectors along the periodic axes {axes}",
                              f"cell {self.cell.tolist()}")
        pair = close_pair(self.positions, basis, self.pbc, min_distance)
        if pair is not None:
            i, j, dist, across = pair
            found = f"atom {i} and its periodic image" if i == j else f"atoms {i} and {j}"
            where = " across a periodic boundary" if across and i != j else ""
            raise self._error(f"atoms at least {min_distance} Å apart",
                              f"{found} {dist:.3g} Å apart{where} (0-based atom numbers)")

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
    def from_ase(
        cls,
        atoms: ase.Atoms,
        source: str = "",
        index: int = 0,
        *,
        energy_key: str | None = None,
        forces_key: str | None = None,
        stress_key: str | None = None,
    ) -> Frame:
        """Build a Frame from :class:`ase.Atoms`. Energy, forces and stress are
        taken from an attached calculator's stored results (never recomputed),
        or, when ``energy_key`` / ``stress_key`` (keys of ``atoms.info``) or
        ``forces_key`` (a key of ``atoms.arrays``) is given, from that key only
        (absent when the key is). Weights and total charge come from
        ``atoms.info``, the group from ``info["group"]`` or else
        ``info["config_type"]``. Stress may be (3, 3), 9 or 6 (Voigt) numbers."""
        from ase.stress import voigt_6_to_full_3x3_stress

        res = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
        info = atoms.info
        energy = info.get(energy_key) if energy_key else res.get("energy", res.get("free_energy"))
        forces = atoms.arrays.get(forces_key) if forces_key else res.get("forces")
        stress = info.get(stress_key) if stress_key else res.get("stress")
        if stress is not None:
            stress = np.asarray(stress, dtype=float)
            stress = voigt_6_to_full_3x3_stress(stress) if stress.shape == (6,) else stress.reshape(3, 3)
        charges = None
        if atoms.has("initial_charges") and np.any(atoms.get_initial_charges() != 0):
            charges = atoms.get_initial_charges()
        group = info.get("group", info.get("config_type"))
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
            group=None if group is None else str(group),
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
