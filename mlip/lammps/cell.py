"""A periodic cell in the form LAMMPS stores it."""

from __future__ import annotations

import numpy as np


def lammps_cell(cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LAMMPS' lower-triangular form of a cell and the rotation to it.

    cell: (3, 3) Å, rows a, b, c (right-handed). Returns ``lower`` (3, 3) Å (a along x, b in the
    xy plane: a LAMMPS ``prism``) and the orthogonal (3, 3) matrix ``q`` with ``cell @ q =
    lower``: positions map as ``x @ q``, forces back as ``f_lammps @ q.T`` and a virial or stress
    back as ``q @ w_lammps @ q.T``.
    """
    a, b, c = np.asarray(cell, dtype=float)
    ax = np.linalg.norm(a)
    bx = b @ a / ax
    by = np.sqrt(b @ b - bx**2)
    cx = c @ a / ax
    cy = (b @ c - bx * cx) / by
    cz = np.sqrt(c @ c - cx**2 - cy**2)
    lower = np.array([[ax, 0.0, 0.0], [bx, by, 0.0], [cx, cy, cz]])
    return lower, np.linalg.solve(cell, lower)
