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
:func:`parsers.read`: at least one atom, finite numbers, a periodic cell that
is not flat, and no two atoms closer than :data:`MIN_DISTANCE`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

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


class Lattice(NamedTuple):
    """A cell completed to a basis of space (see :func:`lattice`)."""

    basis: np.ndarray  # (3, 3) Å, rows
    reciprocal: np.ndarray  # (3, 3) 1/Å, inverse of basis: fractional = positions @ reciprocal
    spacing: np.ndarray  # (3,) Å, distance between lattice planes along each axis


def lattice(cell: np.ndarray, pbc: np.ndarray) -> Lattice:
    """The :class:`Lattice` of a cell (3, 3) Å with periodic axes ``pbc`` (3,):
    the periodic rows of ``cell``, the other rows an orthonormal basis of the
    directions the periodic ones leave out (the identity when nothing is
    periodic). A flat cell (periodic rows not independent) has spacing 0."""
    n_periodic = int(pbc.sum())
    if n_periodic == 3:
        basis = cell
    elif n_periodic == 0:
        basis = np.eye(3)
    else:
        basis = cell.copy()
        basis[~pbc] = np.linalg.svd(cell[pbc])[2][n_periodic:]
    try:
        reciprocal = np.linalg.inv(basis)
    except np.linalg.LinAlgError:
        return Lattice(basis, np.zeros((3, 3)), np.zeros(3))
    return Lattice(basis, reciprocal, 1.0 / np.linalg.norm(reciprocal, axis=0))


@functools.lru_cache(maxsize=4)
def _cached_lattice(cell: bytes, pbc: bytes) -> Lattice:
    """:func:`lattice` of a cell and pbc given as the bytes of their float64 and
    bool arrays: frames of a trajectory usually share one cell."""
    return lattice(np.frombuffer(cell).reshape(3, 3), np.frombuffer(pbc, dtype=bool))


_GRID_NUMBERS = np.arange(4.0).reshape(4, 1)  # four shifted grids: one more than the axes


def close_pair(
    positions: np.ndarray, lat: Lattice, pbc: np.ndarray, cutoff: float
) -> tuple[int, int, float, bool] | None:
    """The first pair of atoms closer than ``cutoff`` (Å), periodic images
    included, as ``(i, j, distance Å, across a periodic boundary)`` with
    ``i < j``, or None.

    ``positions`` (n, 3) Å, n >= 1; ``lat`` from :func:`lattice`, with
    ``lat.spacing >= 2 * cutoff`` along the periodic axes (so the nearest
    image is unique and no atom comes within ``cutoff`` of its own image);
    ``pbc`` (3,) bool. In fractional coordinates each axis is cut into bins at
    least ``4 * cutoff`` wide (a whole number of them along a periodic axis,
    where they wrap around; one bin when the axis is thinner). Four grids are
    laid over the atoms, shifted by 0, 1/4, 1/2 and 3/4 of a bin along every
    axis: along one axis the boundaries of all four lie a quarter bin (at
    least ``cutoff``) apart, so two atoms closer than ``cutoff`` are split by
    the boundaries of at most one grid per axis, at most three in all, and
    share a bin on at least one grid. Each (grid, bin) becomes one integer
    key; one sort of the 4n keys shows whether any bin holds two atoms (almost
    never in real data), and only then are the atoms sharing a key compared.
    O(n) apart from the sort.
    """
    n = len(positions)
    frac = lat.reciprocal.T @ positions.T  # (3, n)
    per_unit = lat.spacing / (4.0 * cutoff)  # bins per unit of fractional coordinate
    per_unit = np.where(pbc, np.maximum(np.floor(per_unit), 1.0), per_unit)
    # each atom's quarter bin along each axis: in [0, 4 per_unit] along the periodic axes (the
    # atoms wrapped into the cell), counted from the lowest along the others
    frac -= np.floor(frac) * pbc[:, None]
    quarter = np.floor(frac * (4.0 * per_unit)[:, None])
    spans = per_unit  # bins along each axis
    if not pbc.all():
        quarter -= quarter.min(axis=1, keepdims=True) * ~pbc[:, None]
        spans = np.where(pbc, per_unit, (quarter.max(axis=1) + 3.0) // 4.0 + 1.0)
    # the bin of grid k is (quarter + k) // 4; along a periodic axis the one past the last is the first
    bins = quarter + _GRID_NUMBERS[:, :, None]  # (4, 3, n)
    bins *= 0.25
    np.floor(bins, out=bins)
    bins[bins == spans[:, None]] = 0.0
    # keys in float64 arithmetic: equal bins give equal keys; for absurd extents (over 2**53 bins)
    # different bins may too, which only adds candidates that the distance test turns down
    sx, sy, sz = spans.tolist()
    keys = np.array([sy * sz, sz, 1.0]) @ bins + _GRID_NUMBERS * (sx * sy * sz)  # (4, n)
    keys = keys.reshape(-1)
    ordered = np.sort(keys)
    if not (ordered[1:] == ordered[:-1]).any():
        return None
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    atom = order % n
    for m in range(1, len(order)):  # entries m apart in sorted order, while some share a key
        same = ordered[m:] == ordered[:-m]
        if not same.any():
            break
        a, b = atom[:-m][same], atom[m:][same]
        a, b = a[a != b], b[a != b]
        delta = (frac[:, b] - frac[:, a]).T
        wrap = np.where(pbc, np.round(delta), 0.0)
        dist = np.linalg.norm((delta - wrap) @ lat.basis, axis=1)
        hit = np.flatnonzero(dist < cutoff)
        if hit.size:
            k = hit[0]
            i, j = sorted((int(a[k]), int(b[k])))
            return i, j, float(dist[k]), bool(wrap[k].any())
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
            if array is not None and not np.isfinite(array).all():
                row = int(np.argmax(~np.isfinite(array.reshape(len(array), -1)).all(axis=1)))
                raise self._error(f"finite {name}", f"{array[row].tolist()} for {item} {row}")

    def check(self, min_distance: float = MIN_DISTANCE) -> None:
        """:meth:`check_values`, then raise :class:`ParseError` when the
        periodic cell is flat or thinner than ``2 * min_distance`` between
        lattice planes, or two atoms (periodic images included) are closer than
        ``min_distance`` Å; the message names the two atoms (0-based, in frame
        order)."""
        self.check_values()
        lat = _cached_lattice(self.cell.tobytes(), self.pbc.tobytes())
        thin = self.pbc & (lat.spacing < 2.0 * min_distance)
        if thin.any():
            k = int(np.argmax(thin))
            found = "a flat cell" if not lat.spacing.any() else f"{lat.spacing[k]:.3g} Å along {'abc'[k]}"
            raise self._error(
                f"a periodic cell at least {2.0 * min_distance:g} Å thick along each periodic axis",
                f"{found} (cell {self.cell.tolist()})",
            )
        pair = close_pair(self.positions, lat, self.pbc, min_distance)
        if pair is not None:
            i, j, dist, across = pair
            where = " across a periodic boundary" if across else ""
            raise self._error(f"atoms at least {min_distance:g} Å apart",
                              f"atoms {i} and {j} {dist:.3g} Å apart{where} (0-based atom numbers)")

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
