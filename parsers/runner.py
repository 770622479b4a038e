"""RuNNer / n2p2 ``input.data``.

Each structure is::

    begin
    comment ...                       (optional, any number)
    lattice ax ay az                  (three lines, periodic structures only)
    atom x y z Element q e fx fy fz   (one per atom; q charge, e unused)
    energy E
    charge Q
    end

Units in the file are Bohr, Hartree and e (``units="atomic"``, the default);
they are converted to Å (× 0.529177210903) and eV (× 27.211386245988), forces
to eV/Å. ``units="metal"`` reads a file already in Å / eV. Per-atom charges are
kept when any is non-zero; ``charge`` becomes ``total_charge``. A structure
without ``lattice`` lines is non-periodic (zero cell, pbc False).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from parsers.elements import atomic_number
from parsers.errors import ParseError
from parsers.frame import Frame
from parsers.textio import open_binary
from parsers.units import BOHR_CODATA2018, HARTREE_CODATA2018

_ATOM_LINE = "atom x y z El q e fx fy fz"
RUNNER_UNITS = {"atomic": (BOHR_CODATA2018, HARTREE_CODATA2018), "metal": (1.0, 1.0)}


class _Structure:
    """The lines of one begin … end block, collected for bulk conversion."""

    def __init__(self, begin_line: int) -> None:
        self.begin_line = begin_line
        self.lattice: list[list[float]] = []
        self.atoms: list[list[str]] = []
        self.atom_lines: list[int] = []
        self.energy: float | None = None
        self.charge = 0.0


def _float(path: str, line: int, word: str, what: str) -> float:
    try:
        value = float(word)
    except ValueError:
        raise ParseError(path, line, what, repr(word)) from None
    if not np.isfinite(value):
        raise ParseError(path, line, what + " (finite)", repr(word))
    return value


def _frame(s: _Structure, path: str, index: int, length: float, energy: float) -> Frame:
    if len(s.lattice) not in (0, 3):
        raise ParseError(path, s.begin_line, "0 or 3 lattice lines", str(len(s.lattice)))
    try:
        table = np.array([w[1:4] + w[5:10] for w in s.atoms], dtype=float).reshape(-1, 8)
    except ValueError:
        for words, line in zip(s.atoms, s.atom_lines, strict=True):
            for w in words[1:4] + words[5:10]:
                _float(path, line, w, f"a number in an atom line '{_ATOM_LINE}'")
        raise
    cell = np.array(s.lattice, dtype=float).reshape(-1, 3)
    bad = ~np.isfinite(table).all(axis=1)
    if bad.any():
        row = int(np.argmax(bad))
        raise ParseError(path, s.atom_lines[row], "finite numbers", " ".join(s.atoms[row][1:]))
    numbers = []
    for words, line in zip(s.atoms, s.atom_lines, strict=True):
        try:
            numbers.append(atomic_number(words[4]))
        except ValueError:
            raise ParseError(path, line, "an element symbol in column 5", repr(words[4])) from None
    periodic = len(s.lattice) == 3
    charges = table[:, 3]
    return Frame(
        numbers=numbers,
        positions=table[:, 0:3] * length,
        cell=cell * length if periodic else np.zeros((3, 3)),
        pbc=np.full(3, periodic),
        energy=None if s.energy is None else s.energy * energy,
        forces=table[:, 5:8] * (energy / length),
        charges=charges if np.any(charges != 0) else None,
        total_charge=s.charge,
        source=path,
        index=index,
    )


def read_runner(path: str | Path, units: str = "atomic") -> Iterator[Frame]:
    """Yield the structures of a RuNNer/n2p2 ``input.data`` file as Frames in
    metal units (see module docstring). Raises ParseError with the line number
    on malformed input."""
    if units not in RUNNER_UNITS:
        raise ValueError(f"units must be one of {sorted(RUNNER_UNITS)}, got {units!r}")
    length, energy = RUNNER_UNITS[units]
    path = str(path)
    current: _Structure | None = None
    index = 0
    line = 0
    with open_binary(path) as fh:
        for line, raw in enumerate(fh, start=1):
            words = raw.decode("utf-8", "replace").split()
            if not words:
                continue
            key = words[0]
            if key == "begin":
                if current is not None:
                    raise ParseError(path, line, "'end' before the next 'begin'", "begin")
                current = _Structure(line)
                continue
            if current is None:
                raise ParseError(path, line, "'begin'", repr(key))
            if key == "end":
                yield _frame(current, path, index, length, energy)
                index += 1
                current = None
            elif key == "atom":
                if len(words) != 10:
                    raise ParseError(path, line, f"10 fields '{_ATOM_LINE}'", f"{len(words)} fields")
                current.atoms.append(words)
                current.atom_lines.append(line)
            elif key == "lattice":
                if len(words) != 4:
                    raise ParseError(path, line, "4 fields 'lattice ax ay az'", f"{len(words)} fields")
                current.lattice.append([_float(path, line, w, "a number in 'lattice'") for w in words[1:]])
            elif key in ("energy", "charge"):
                value = _float(path, line, words[1] if len(words) > 1 else "", f"a number after {key!r}")
                setattr(current, key, value)
            elif key != "comment":
                raise ParseError(path, line, "a begin/comment/lattice/atom/energy/charge/end line", repr(key))
    if current is not None:
        expected = f"'end' of the structure begun at line {current.begin_line}"
        raise ParseError(path, line + 1, expected, "end of file")
