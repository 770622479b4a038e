"""Element symbols, atomic numbers and masses; the LAMMPS type → element map.

The periodic table (symbols and standard atomic masses) is ASE's
``ase.data``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from ase.data import atomic_masses, atomic_numbers, chemical_symbols

TypesOption = Mapping[int, "str | int"] | Sequence["str | int"] | str | None
"""What ``types=`` accepts: ``{1: "Cu", 2: "Ni"}``, ``["Cu", "Ni"]`` (types
1, 2, ...), or the CLI string ``"1=Cu,2=Ni"``; element symbols or atomic numbers."""

# A mass more than this far (amu) from every element's is not guessed.
MASS_TOLERANCE = 0.5


def atomic_number(element: str | int) -> int:
    """Atomic number of a symbol (``"Cu"``) or of an atomic number itself.

    Raises ValueError for anything else."""
    if isinstance(element, (int, np.integer)) and 0 < int(element) < len(chemical_symbols):
        return int(element)
    if isinstance(element, str):
        text = element.strip()
        if text.isdigit():
            return atomic_number(int(text))
        if text in atomic_numbers and text != "X":
            return atomic_numbers[text]
    raise ValueError(f"not an element symbol or atomic number: {element!r}")


def parse_types(types: TypesOption) -> dict[int, int]:
    """Normalise the ``types=`` option to ``{lammps_type: atomic_number}``.

    Raises ValueError on a malformed option, naming the bad entry."""
    if types is None:
        return {}
    if isinstance(types, str):
        pairs = []
        for item in types.replace(" ", ",").split(","):
            if not item:
                continue
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"types: expected TYPE=ELEMENT pairs like '1=Cu,2=Ni', found {item!r}")
            pairs.append((key, value))
    elif isinstance(types, Mapping):
        pairs = list(types.items())
    else:
        pairs = [(i + 1, value) for i, value in enumerate(types)]
    mapping = {}
    for key, value in pairs:
        try:
            lammps_type = int(key)
            if lammps_type < 1:
                raise ValueError("LAMMPS types start at 1")
            mapping[lammps_type] = atomic_number(value)
        except ValueError as exc:
            raise ValueError(f"types: bad entry {key!r}: {value!r} ({exc})") from None
    return mapping


def numbers_from_masses(masses: np.ndarray) -> np.ndarray:
    """Atomic numbers of the elements whose standard masses (amu) are nearest.

    Returns an int64 array of the shape of ``masses``; raises ValueError for a
    mass more than ``MASS_TOLERANCE`` amu from every element."""
    unique, inverse = np.unique(np.asarray(masses, dtype=float), return_inverse=True)
    table = np.asarray(atomic_masses[1:], dtype=float)
    nearest = np.abs(unique[:, None] - table[None, :]).argmin(axis=1)
    off = np.abs(table[nearest] - unique) > MASS_TOLERANCE
    if off.any():
        raise ValueError(f"mass {unique[off][0]} is not within {MASS_TOLERANCE} amu of any element's")
    return (nearest + 1)[inverse].reshape(np.shape(masses)).astype(np.int64)


def numbers_from_symbols(symbols: np.ndarray) -> np.ndarray:
    """Atomic numbers of an array of element symbols; raises ValueError naming
    the first unknown symbol."""
    unique, inverse = np.unique(np.asarray(symbols, dtype=str), return_inverse=True)
    return np.array([atomic_number(s) for s in unique], dtype=np.int64)[inverse].reshape(np.shape(symbols))
