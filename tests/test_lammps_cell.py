"""mlip.lammps.cell.lammps_cell: the rotation of any right-handed cell to LAMMPS' prism."""

from __future__ import annotations

import numpy as np

from mlip.lammps.cell import lammps_cell


def test_rotates_a_triclinic_cell_to_a_lower_triangular_one():
    rng = np.random.default_rng(3)
    rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    rotation *= np.sign(np.linalg.det(rotation))  # proper rotation
    prism = np.array([[4.1, 0.0, 0.0], [1.3, 3.7, 0.0], [-0.9, 0.6, 5.2]])
    cell = prism @ rotation.T
    lower, q = lammps_cell(cell)
    np.testing.assert_allclose(lower, prism, atol=1e-12)
    np.testing.assert_allclose(cell @ q, lower, atol=1e-12)
    np.testing.assert_allclose(q @ q.T, np.eye(3), atol=1e-12)
