"""``parsers.read``: files or folders → Frames, with format detection.

Formats (``format=`` names, aliases in parentheses):

- ``lammps-dump`` (``lammps-dump-text``, ``dump``, ``lammpstrj``): ``*.dump``,
  ``*.lammpstrj``, content starting with ``ITEM:``;
- ``extxyz`` (``xyz``): ``*.xyz``, ``*.extxyz``;
- ``mlearn`` (``json``, ``mlearn-json``): ``*.json``;
- ``runner`` (``n2p2``, ``input.data``): ``input.data``, ``*.data`` starting with
  ``begin``/``comment``;
- ``vasp-outcar`` (``outcar``): names containing ``OUTCAR``;
- ``vasp-xml`` (``vasprun``): ``vasprun*.xml``.

Any of them may be compressed (``.gz``, ``.bz2``, ``.xz``). A folder is read
file by file, sorted by name, taking the files that match the patterns above
(not recursing into sub-folders).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from pathlib import Path

from parsers.ase_formats import read_with_ase
from parsers.elements import TypesOption, parse_types
from parsers.errors import ParseError
from parsers.frame import Frame
from parsers.lammps_dump import read_lammps_dump
from parsers.mlearn import read_mlearn_json
from parsers.runner import RUNNER_UNITS, read_runner
from parsers.textio import open_binary, strip_compression

FORMATS = ("lammps-dump", "extxyz", "mlearn", "runner", "vasp-outcar", "vasp-xml")
_ALIASES = {
    "lammps-dump-text": "lammps-dump",
    "dump": "lammps-dump",
    "lammpstrj": "lammps-dump",
    "xyz": "extxyz",
    "json": "mlearn",
    "mlearn-json": "mlearn",
    "n2p2": "runner",
    "input.data": "runner",
    "outcar": "vasp-outcar",
    "vasprun": "vasp-xml",
}
# (pattern on the lower-cased name without compression suffix, format)
_NAME_PATTERNS = (
    ("*.dump", "lammps-dump"),
    ("*.lammpstrj", "lammps-dump"),
    ("*.extxyz", "extxyz"),
    ("*.xyz", "extxyz"),
    ("*.json", "mlearn"),
    ("input.data", "runner"),
    ("*outcar*", "vasp-outcar"),
    ("vasprun*.xml", "vasp-xml"),
)


def normalise_format(format: str) -> str:
    """Canonical format name for ``format`` or one of its aliases; ValueError otherwise."""
    name = _ALIASES.get(format.lower(), format.lower())
    if name not in FORMATS:
        raise ValueError(f"unknown format {format!r}; known: {', '.join(FORMATS)}")
    return name


def format_from_name(path: str | Path) -> str | None:
    """The format implied by a file name, or None."""
    name = strip_compression(Path(path).name).lower()
    for pattern, fmt in _NAME_PATTERNS:
        if fnmatch.fnmatchcase(name, pattern):
            return fmt
    return None


def format_from_content(path: str | Path) -> str | None:
    """The format implied by the first bytes of a file, or None."""
    with open_binary(path) as fh:
        head = fh.read(4096)
    text = head.decode("utf-8", "replace").lstrip()
    first = text.split(None, 1)[0] if text else ""
    if text.startswith("ITEM:"):
        return "lammps-dump"
    if first in ("begin", "comment"):
        return "runner"
    if text.startswith("<?xml") and "<modeling>" in text:
        return "vasp-xml"
    if text.startswith("["):
        return "mlearn"
    if "vasp." in text[:200]:
        return "vasp-outcar"
    if first.isdigit():
        return "extxyz"
    return None


def detect_format(path: str | Path) -> str:
    """Format of one file: from its content, else from its name; ParseError if neither tells."""
    fmt = format_from_content(path) or format_from_name(path)
    if fmt is None:
        expected = f"a file in one of the formats {', '.join(FORMATS)}"
        raise ParseError(str(path), None, expected, "unknown content")
    return fmt


def files_in(folder: str | Path) -> list[Path]:
    """Files of ``folder`` that :func:`read` takes, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and format_from_name(p) is not None)


def read(
    path: str | Path,
    format: str | None = None,
    *,
    types: TypesOption = None,
    energy_column: str | None = None,
    log: str | Path | None = None,
    units: str = "atomic",
) -> Iterator[Frame]:
    """Frames (metal units, see :class:`parsers.Frame`) from a file or folder, lazily.

    ``format`` forces a format (see module docstring); otherwise it is detected
    per file. LAMMPS dump options: ``types`` (``{1: "Cu", 2: "Ni"}``,
    ``["Cu", "Ni"]`` or ``"1=Cu,2=Ni"``), ``energy_column`` (per-atom energy
    column summed, e.g. ``"c_pe"``), ``log`` (LAMMPS log; thermo PotEng matched
    by timestep). RuNNer option: ``units`` (``"atomic"``: Bohr/Hartree, the
    default; ``"metal"``: Å/eV). Options that do not apply to a file's format
    are ignored.

    Checked at the call: FileNotFoundError for a missing path or log, ValueError
    for a bad option. Raised while iterating: ParseError for malformed input.
    """
    path = Path(path)
    forced = normalise_format(format) if format is not None else None
    parse_types(types)
    if energy_column is not None and log is not None:
        raise ValueError("give energy_column or log, not both")
    if units not in RUNNER_UNITS:
        raise ValueError(f"units must be one of {sorted(RUNNER_UNITS)}, got {units!r}")
    for required in (path, log):
        if required is not None and not Path(required).exists():
            raise FileNotFoundError(f"no such file or folder: {required}")
    files = files_in(path) if path.is_dir() else [path]
    if not files:
        raise ParseError(str(path), None, "files named *.dump, *.lammpstrj, *.xyz, *.extxyz, *.json, "
                         "input.data, OUTCAR or vasprun.xml", "none")
    return _frames(files, forced, types, energy_column, log, units)


def _frames(
    files: list[Path], forced: str | None, types: TypesOption, energy_column: str | None,
    log: str | Path | None, units: str,
) -> Iterator[Frame]:
    for file in files:
        fmt = forced or detect_format(file)
        if fmt == "lammps-dump":
            yield from read_lammps_dump(file, types=types, energy_column=energy_column, log=log)
        elif fmt == "mlearn":
            yield from read_mlearn_json(file)
        elif fmt == "runner":
            yield from read_runner(file, units=units)
        else:
            yield from read_with_ase(file, fmt)


def read_frames(path: str | Path, format: str | None = None, **options) -> list[Frame]:
    """All frames of :func:`read` as a list."""
    return list(read(path, format, **options))
