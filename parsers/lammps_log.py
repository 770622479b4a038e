"""Potential energies per timestep from a LAMMPS log (thermo output).

Reads every thermo table whose header line holds ``Step`` and ``PotEng``
(``thermo_style custom step pe ...`` or any style that prints ``pe``), up to
its ``Loop time`` line. Lines inside a table that are not rows of numbers
(warnings) are skipped. When a step is printed twice (the last step of one
``run`` and the first of the next) the first value is kept. For full
precision, write the log with ``thermo_modify format float %20.15g``. A
PotEng that is not a finite number (``nan``, ``inf``) is an error, not a
missing energy.
"""

from __future__ import annotations

import math
from pathlib import Path

from parsers.errors import ParseError
from parsers.textio import open_binary


def _numbers(words: list[str]) -> list[float] | None:
    try:
        return [float(w) for w in words]
    except ValueError:
        return None


def read_thermo_energies(path: str | Path) -> dict[int, float]:
    """``{timestep: PotEng}`` in eV (metal units) from a LAMMPS log file.

    Raises ParseError when the log holds no thermo table with Step and PotEng,
    or (with the line) when a PotEng is not finite."""
    energies: dict[int, float] = {}
    columns: list[str] | None = None
    with open_binary(path) as fh:
        for line, raw in enumerate(fh, start=1):
            words = raw.decode("utf-8", "replace").split()
            if not words:
                continue
            if "Step" in words and "PotEng" in words:
                columns = words
                continue
            if columns is None:
                continue
            if words[0] == "Loop":
                columns = None
                continue
            values = _numbers(words)
            if values is None or len(values) != len(columns):
                continue
            column = columns.index("PotEng")
            if not math.isfinite(values[column]):
                raise ParseError(str(path), line, "a finite PotEng", words[column])
            energies.setdefault(int(values[columns.index("Step")]), values[column])
    if not energies:
        raise ParseError(
            str(path),
            None,
            "a thermo table with Step and PotEng columns (add 'pe' to thermo_style)",
            "none",
        )
    return energies
