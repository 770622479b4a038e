"""LAMMPS dump ``ITEM: BOX BOUNDS`` sections → lattice vectors, origin, pbc.

Three forms exist (LAMMPS ``dump`` documentation, "box bounds"):

- orthogonal, ``ITEM: BOX BOUNDS pp pp pp``: rows ``lo hi`` for x, y, z;
- restricted triclinic, ``ITEM: BOX BOUNDS xy xz yz pp pp pp``: rows
  ``lo_bound hi_bound tilt`` with the tilts xy, xz, yz (in the order the header
  names them) and the *bounding box* of the tilted cell, which is
  ``xlo_bound = xlo + min(0, xy, xz, xy + xz)``,
  ``xhi_bound = xhi + max(0, xy, xz, xy + xz)``,
  ``ylo_bound = ylo + min(0, yz)``, ``yhi_bound = yhi + max(0, yz)``;
  the lattice vectors are a = (xhi − xlo, 0, 0), b = (xy, yhi − ylo, 0),
  c = (xz, yz, zhi − zlo), with origin (xlo, ylo, zlo);
- general triclinic, ``ITEM: BOX BOUNDS abc origin pp pp pp``: rows
  ``ax ay az origin_x``, ``bx by bz origin_y``, ``cx cy cz origin_z``.

Boundary flags are two letters per direction; ``pp`` is periodic, anything
else (``ff``, ``ss``, ``mm``, ``fs``...) is not. A header without flags (very
old LAMMPS) is taken as periodic, LAMMPS' default boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_BOUNDARY_LETTERS = set("pfsm")


@dataclass
class Box:
    """A simulation box: ``cell (3, 3)`` Å lattice rows, ``origin (3,)`` Å, ``pbc (3,)``."""

    cell: np.ndarray
    origin: np.ndarray
    pbc: np.ndarray


def _is_flag(word: str) -> bool:
    return len(word) == 2 and set(word) <= _BOUNDARY_LETTERS


@dataclass(frozen=True)
class BoxForm:
    """What the words after ``ITEM: BOX BOUNDS`` say: the form (``"orthogonal"``,
    ``"triclinic"`` with the tilt labels in header order, or ``"general"``)
    and the periodicity; :meth:`box` builds a box from the three rows."""

    kind: str
    pbc: tuple[bool, bool, bool]
    labels: tuple[str, ...] = ()

    def box(self, rows: np.ndarray) -> Box:
        """The box from the three numeric rows (shape (3, 2), (3, 3) or (3, 4),
        as the form needs); ValueError when they do not fit."""
        rows = np.asarray(rows, dtype=float)
        pbc = np.array(self.pbc)
        if self.kind == "general":
            if rows.shape != (3, 4):
                raise ValueError(f"rows 'ax ay az origin' for a general triclinic box, got {rows.shape}")
            return Box(cell=rows[:, :3].copy(), origin=rows[:, 3].copy(), pbc=pbc)
        if self.kind == "orthogonal":
            if rows.shape != (3, 2):
                raise ValueError(f"rows 'lo hi' for an orthogonal box, got shape {rows.shape}")
            lo, hi = rows[:, 0], rows[:, 1]
            return Box(cell=np.diag(hi - lo), origin=lo.copy(), pbc=pbc)
        if rows.shape != (3, 3):
            raise ValueError(f"'xy xz yz' with rows 'lo_bound hi_bound tilt', got shape {rows.shape}")
        tilt = dict(zip(self.labels, rows[:, 2], strict=True))
        xy, xz, yz = tilt["xy"], tilt["xz"], tilt["yz"]
        (xlo_b, xhi_b), (ylo_b, yhi_b), (zlo, zhi) = rows[:, :2]
        xlo = xlo_b - min(0.0, xy, xz, xy + xz)
        xhi = xhi_b - max(0.0, xy, xz, xy + xz)
        ylo = ylo_b - min(0.0, yz)
        yhi = yhi_b - max(0.0, yz)
        cell = np.array([[xhi - xlo, 0.0, 0.0], [xy, yhi - ylo, 0.0], [xz, yz, zhi - zlo]])
        return Box(cell=cell, origin=np.array([xlo, ylo, zlo]), pbc=pbc)


def box_form(header_words: list[str]) -> BoxForm:
    """The form of a box from the words after ``ITEM: BOX BOUNDS``; ValueError
    when they are not one of the three forms."""
    flags = [w for w in header_words if _is_flag(w)]
    labels = [w for w in header_words if not _is_flag(w)]
    if flags and len(flags) != 3:
        raise ValueError(f"three boundary flags like 'pp pp pp', got {' '.join(flags)}")
    pbc = tuple(f == "pp" for f in flags) if flags else (True, True, True)
    if labels[:2] == ["abc", "origin"]:
        return BoxForm("general", pbc)
    if not labels:
        return BoxForm("orthogonal", pbc)
    if sorted(labels) != ["xy", "xz", "yz"]:
        raise ValueError(f"'xy xz yz' with rows 'lo_bound hi_bound tilt', got {' '.join(labels)}")
    return BoxForm("triclinic", pbc, tuple(labels))


def box_from_dump(header_words: list[str], rows: np.ndarray) -> Box:
    """Build the box from the words after ``ITEM: BOX BOUNDS`` and its three
    numeric rows (shape (3, 2), (3, 3) or (3, 4)).

    Raises ValueError when the rows do not fit the header's form."""
    return box_form(header_words).box(rows)
