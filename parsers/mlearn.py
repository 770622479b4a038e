"""The mlearn JSON format (Zuo et al., J. Phys. Chem. A 124, 731, 2020).

A JSON list of records, each with ``structure`` (pymatgen
``Structure.as_dict()``, Å), ``outputs`` with ``energy`` (eV), ``forces``
((n, 3) eV/Å) and ``virial_stress`` (kbar, VASP sign: positive = compressive,
in the order xx yy zz xy xz yz), and a ``group`` label. Stress is converted to
eV/Å³ in ASE's sign convention: σ = −0.1 · kbar / 160.21766208.

The order of the shear components is not VASP's (xy yz zx): in the mlearn files
the fifth number is xz and the sixth yz. That was established against the
stress of the Zuo et al. qSNAP potentials computed by LAMMPS on the strained
("Elastic") structures, where only this order correlates
(tests/test_parsers_formats.py::test_mlearn_shear_stress_matches_lammps_qsnap).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from parsers.elements import atomic_number
from parsers.errors import ParseError
from parsers.frame import Frame
from parsers.textio import open_binary
from parsers.units import GPA_PER_EV_A3

KBAR_TO_EV_PER_A3 = -0.1 / GPA_PER_EV_A3  # includes the sign flip VASP → ASE


def stress_from_virial_kbar(v: list[float]) -> np.ndarray:
    """(3, 3) stress in eV/Å³ (ASE sign) from mlearn's ``xx yy zz xy xz yz`` kbar (VASP sign)."""
    xx, yy, zz, xy, xz, yz = (float(x) for x in v)
    return KBAR_TO_EV_PER_A3 * np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


def _frame(record: dict, path: str, index: int) -> Frame:
    structure = record["structure"]
    cell = np.array(structure["lattice"]["matrix"], dtype=float)
    sites = structure["sites"]
    numbers = [atomic_number(max(s["species"], key=lambda sp: sp.get("occu", 1))["element"]) for s in sites]
    if all("xyz" in s for s in sites):
        positions = np.array([s["xyz"] for s in sites], dtype=float).reshape(-1, 3)
    else:
        positions = np.array([s["abc"] for s in sites], dtype=float).reshape(-1, 3) @ cell
    pbc = structure["lattice"].get("pbc", (True, True, True))
    outputs = record.get("outputs", {})
    stress = outputs.get("virial_stress")
    return Frame(
        numbers=numbers,
        positions=positions,
        cell=cell,
        pbc=pbc,
        energy=outputs.get("energy"),
        forces=outputs.get("forces"),
        stress=None if stress is None else stress_from_virial_kbar(stress),
        total_charge=float(structure.get("charge") or 0.0),
        source=path,
        index=index,
        group=record.get("group"),
    )


def read_mlearn_json(path: str | Path) -> Iterator[Frame]:
    """Yield one Frame per record of an mlearn JSON file (see module docstring).

    Raises ParseError naming the record index (as the frame) when a record is malformed."""
    with open_binary(path) as fh:
        try:
            records = json.load(fh)
        except json.JSONDecodeError as exc:
            raise ParseError(str(path), exc.lineno, "valid JSON", exc.msg) from None
    if not isinstance(records, list):
        raise ParseError(str(path), 1, "a JSON list of mlearn records", type(records).__name__)
    for index, record in enumerate(records):
        try:
            frame = _frame(record, str(path), index)
        except (KeyError, TypeError, ValueError) as exc:
            raise ParseError(
                str(path), None, "a record with structure and outputs", f"{type(exc).__name__}: {exc}",
                frame=index,
            ) from None
        yield frame
