"""Formats read through ASE: extended XYZ and VASP (OUTCAR, vasprun.xml).

Energies, forces and stress come from what ASE's reader stores as calculator
results (ASE converts VASP's kbar stress to eV/Å³ with ASE's sign). From
extxyz, per-atom ``charges`` (calculator result or array, or
``initial_charges``), ``energy_weight`` / ``force_weight`` and
``total_charge`` (or ``charge``) in ``info`` are kept. For VASP, ASE's
``energy`` is the energy extrapolated to σ → 0 (``free_energy`` is TOTEN) of
the last electronic step, without the PSTRESS PV term; the Frame takes
``energy``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from parsers.errors import ParseError
from parsers.frame import Frame

ASE_FORMATS = {"extxyz": "extxyz", "vasp-outcar": "vasp-out", "vasp-xml": "vasp-xml"}


def _charges(atoms) -> np.ndarray | None:
    calc = atoms.calc
    if calc is not None and "charges" in getattr(calc, "results", {}):
        return np.asarray(calc.results["charges"], dtype=float)
    for key in ("charges", "initial_charges"):
        if key in atoms.arrays and np.any(atoms.arrays[key] != 0):
            return np.asarray(atoms.arrays[key], dtype=float)
    return None


def read_with_ase(path: str | Path, format: str) -> Iterator[Frame]:
    """Yield the frames of an extxyz (``format="extxyz"``), OUTCAR
    (``"vasp-outcar"``) or vasprun.xml (``"vasp-xml"``) file via ASE.

    Raises ParseError (without a line number: ASE does not report one) when
    ASE cannot read the file."""
    import ase.io

    try:
        images = ase.io.read(str(path), index=":", format=ASE_FORMATS[format])
    except Exception as exc:  # ASE raises many types for bad files
        found = f"{type(exc).__name__}: {exc}"
        raise ParseError(str(path), None, f"a readable {format} file", found) from None
    for index, atoms in enumerate(images):
        frame = Frame.from_ase(atoms, source=str(path), index=index)
        frame.source, frame.index = str(path), index
        charges = _charges(atoms)
        if charges is not None:
            frame.charges = np.ascontiguousarray(charges)
        yield frame
