"""Formats read through ASE: extended XYZ and VASP (OUTCAR, vasprun.xml).

Energies, forces and stress come from what ASE's reader stores as calculator
results (ASE converts VASP's kbar stress to eV/Å³ with ASE's sign). From
extxyz, per-atom ``charges`` (calculator result or array, or
``initial_charges``), ``energy_weight`` / ``force_weight`` and
``total_charge`` (or ``charge``) in ``info`` are kept, and ``config_type``
becomes the frame's group. Labels stored under other keys, like the
``REF_energy`` / ``REF_forces`` / ``REF_stress`` of many published data sets,
are read with ``energy_key`` / ``forces_key`` / ``stress_key``; without them,
a file whose frames have no calculator energy (forces, stress) but a
``REF_energy`` (``REF_forces``, ``REF_stress``) uses those. For VASP, ASE's
``energy`` is the energy extrapolated to σ → 0 (``free_energy`` is TOTEN) of
the last electronic step, without the PSTRESS PV term; the Frame takes
``energy``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from parsers.errors import ParseError
from parsers.frame import Frame

ASE_FORMATS = {"extxyz": "extxyz", "vasp-outcar": "vasp-out", "vasp-xml": "vasp-xml"}
# label -> (ASE calculator result, Atoms attribute holding the key, key used when the calculator has none)
_LABELS = {
    "energy": ("energy", "info", "REF_energy"),
    "forces": ("forces", "arrays", "REF_forces"),
    "stress": ("stress", "info", "REF_stress"),
}


def _charges(atoms) -> np.ndarray | None:
    calc = atoms.calc
    if calc is not None and "charges" in getattr(calc, "results", {}):
        return np.asarray(calc.results["charges"], dtype=float)
    for key in ("charges", "initial_charges"):
        if key in atoms.arrays and np.any(atoms.arrays[key] != 0):
            return np.asarray(atoms.arrays[key], dtype=float)
    return None


def _label_keys(images: list, path: str, given: dict[str, str | None],
                echo: Callable[[str], Any] | None) -> dict[str, str | None]:
    """``{"energy_key": ..., ...}`` for :meth:`Frame.from_ase`: the keys given,
    checked to occur in some frame, else the ``REF_`` key of a label no frame
    has as a calculator result (said through ``echo``)."""
    keys: dict[str, str | None] = {}
    detected = []
    for label, (result, where, ref_key) in _LABELS.items():
        key = given.get(f"{label}_key")
        present = [k for atoms in images for k in getattr(atoms, where)]
        if key is not None and key not in present:
            found = ", ".join(sorted(set(present))) or "none"
            raise ParseError(path, None, f"{label} under the {where} key {key!r} in some frame",
                             f"{where} keys {found}")
        has_result = any(atoms.calc is not None and result in atoms.calc.results for atoms in images)
        if key is None and not has_result and ref_key in present:
            key = ref_key
            detected.append(f"{label} from {ref_key}")
        keys[f"{label}_key"] = key
    if detected and echo is not None:
        echo(f"{path}: {', '.join(detected)} (no calculator values; choose keys with "
             "--energy-key/--forces-key/--stress-key)")
    return keys


def read_with_ase(
    path: str | Path,
    format: str,
    *,
    energy_key: str | None = None,
    forces_key: str | None = None,
    stress_key: str | None = None,
    echo: Callable[[str], Any] | None = None,
) -> Iterator[Frame]:
    """Yield the frames of an extxyz (``format="extxyz"``), OUTCAR
    (``"vasp-outcar"``) or vasprun.xml (``"vasp-xml"``) file via ASE.

    ``energy_key``, ``stress_key`` (``info`` keys) and ``forces_key`` (an
    ``arrays`` key) choose where extxyz labels are read from (module
    docstring); ``echo`` is told when ``REF_`` keys are used without being
    given. Raises ParseError (without a line number: ASE does not report one)
    when ASE cannot read the file, a given key occurs in no frame, or a frame's
    labels are not numbers of the right shape (naming the frame)."""
    import ase.io

    path = str(path)
    try:
        images = ase.io.read(path, index=":", format=ASE_FORMATS[format])
    except Exception as exc:  # ASE raises many types for bad files
        found = f"{type(exc).__name__}: {exc}"
        raise ParseError(path, None, f"a readable {format} file", found) from None
    given = {"energy_key": energy_key, "forces_key": forces_key, "stress_key": stress_key}
    keys = _label_keys(images, path, given, echo) if format == "extxyz" else {}
    for index, atoms in enumerate(images):
        try:
            frame = Frame.from_ase(atoms, source=path, index=index, **keys)
        except (TypeError, ValueError) as exc:
            raise ParseError(path, None, "numbers of the right shape for energy, forces and stress",
                             f"{type(exc).__name__}: {exc}", frame=index) from None
        frame.source, frame.index = path, index
        charges = _charges(atoms)
        if charges is not None:
            frame.charges = np.ascontiguousarray(charges)
        yield frame
