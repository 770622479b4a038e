"""``parsers.read``: files or folders → Frames, with format detection.

Formats (``format=`` names, aliases in parentheses):

- ``lammps-dump`` (``lammps-dump-text``, ``dump``, ``lammpstrj``): ``*.dump``,
  ``*.lammpstrj``, ``dump.*``, content starting with ``ITEM:``;
- ``extxyz`` (``xyz``): ``*.xyz``, ``*.extxyz``;
- ``mlearn`` (``json``, ``mlearn-json``): ``*.json``;
- ``runner`` (``n2p2``, ``input.data``): ``input.data``, ``*.data`` starting with
  ``begin``/``comment``;
- ``vasp-outcar`` (``outcar``): names containing ``OUTCAR``;
- ``vasp-xml`` (``vasprun``): ``vasprun*.xml``.

Any of them may be compressed (``.gz``, ``.bz2``, ``.xz``). A folder is read
with its sub-folders (``calcs/*/OUTCAR``), file by file in natural name order
(``dump.2`` before ``dump.10``), taking the files whose name matches a pattern
above or whose content is unmistakably a LAMMPS dump, RuNNer file or
vasprun.xml; the others are skipped with a reason (:func:`list_files`).
Every frame passes :meth:`Frame.check` (finite numbers, at least one atom, no
two atoms at the same place); an empty file, or one without frames, is an
error.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    ("dump.*", "lammps-dump"),
)
# formats whose content signature is specific enough to take a file of any name from a folder
_DISTINCT_CONTENT = ("lammps-dump", "runner", "vasp-xml")
Echo = Callable[[str], Any]


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


@dataclass
class FileList:
    """What a source path stands for: the ``files`` to read, in order, and the
    ``skipped`` ones as ``(path, reason)``."""

    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _natural_key(path: Path) -> list[str | int]:
    return [int(t) if k % 2 else t for k, t in enumerate(re.split(r"(\d+)", path.as_posix()))]


def _skip_reason(path: Path) -> str | None:
    """Why a file found in a folder is not read, or None when it is."""
    if format_from_name(path) is not None:
        return None
    name = path.name.lower()
    if name.startswith("log.") or fnmatch.fnmatchcase(name, "log*.lammps*"):
        return "a LAMMPS log, not a data file (give it with --log)"
    try:
        if path.stat().st_size and format_from_content(path) in _DISTINCT_CONTENT:
            return None
    except OSError as exc:
        return f"not readable ({exc})"
    return "not a data file (name and content match no format)"


def _walk(folder: Path) -> Iterator[Path]:
    """The files under ``folder``, leaving out hidden files and folders (names starting with '.')."""
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if not name.startswith(".") and os.path.isfile(os.path.join(root, name)):
                yield Path(root, name)


def list_files(path: str | Path) -> FileList:
    """The files :func:`read` takes for ``path``: the file itself, or the files
    of a folder and its sub-folders (hidden ones left out) in natural name
    order, with the skipped ones and why (see the module docstring)."""
    path = Path(path)
    if not path.is_dir():
        return FileList([path])
    found = FileList()
    for file in sorted(_walk(path), key=_natural_key):
        reason = _skip_reason(file)
        if reason is None:
            found.files.append(file)
        else:
            found.skipped.append((file, reason))
    return found


def read(
    path: str | Path,
    format: str | None = None,
    *,
    types: TypesOption = None,
    energy_column: str | None = None,
    log: str | Path | None = None,
    units: str = "atomic",
    energy_key: str | None = None,
    forces_key: str | None = None,
    stress_key: str | None = None,
    echo: Echo | None = None,
) -> Iterator[Frame]:
    """Frames (metal units, see :class:`parsers.Frame`) from a file or folder, lazily.

    ``format`` forces a format (see module docstring); otherwise it is detected
    per file. LAMMPS dump options: ``types`` (``{1: "Cu", 2: "Ni"}``,
    ``["Cu", "Ni"]`` or ``"1=Cu,2=Ni"``), ``energy_column`` (per-atom energy
    column summed, e.g. ``"c_pe"``), ``log`` (LAMMPS log; thermo PotEng matched
    by timestep). RuNNer option: ``units`` (``"atomic"``: Bohr/Hartree, the
    default; ``"metal"``: Å/eV). extxyz options: ``energy_key``, ``forces_key``,
    ``stress_key`` (``info``/``arrays`` keys holding the labels, e.g.
    ``"REF_energy"``; see :func:`parsers.ase_formats.read_with_ase`). Options
    that do not apply to a file's format are ignored. ``echo`` receives one line
    per file read (frames and format) or skipped (and why), and notes such as
    auto-detected extxyz keys.

    Checked at the call: FileNotFoundError for a missing path or log, ValueError
    for a bad option. Raised while iterating: ParseError for malformed input,
    naming the file (and line or frame), also for a frame that fails
    :meth:`Frame.check`, an empty file and a file without frames.
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
    found = list_files(path)
    if echo is not None:
        for file, reason in found.skipped:
            echo(f"skipped {file}: {reason}")
    if not found.files:
        raise ParseError(str(path), None, "files named *.dump, dump.*, *.lammpstrj, *.xyz, *.extxyz, "
                         "*.json, input.data, OUTCAR or vasprun.xml", "none")
    keys = {"energy_key": energy_key, "forces_key": forces_key, "stress_key": stress_key}
    return _frames(found.files, forced, echo, types=types, energy_column=energy_column, log=log,
                   units=units, keys=keys)


def _file_frames(file: Path, fmt: str, echo: Echo | None, *, types: TypesOption,
                 energy_column: str | None, log: str | Path | None, units: str,
                 keys: dict[str, str | None]) -> Iterator[Frame]:
    """The frames of one file in format ``fmt``, unchecked."""
    if fmt == "lammps-dump":
        return read_lammps_dump(file, types=types, energy_column=energy_column, log=log)
    if fmt == "mlearn":
        return read_mlearn_json(file)
    if fmt == "runner":
        return read_runner(file, units=units)
    return read_with_ase(file, fmt, echo=echo, **keys)


def _frames(files: list[Path], forced: str | None, echo: Echo | None, **options: Any) -> Iterator[Frame]:
    for file in files:
        with open_binary(file) as fh:
            if not fh.read(1):
                raise ParseError(str(file), None, "data", "an empty file")
        fmt = forced or detect_format(file)
        count = 0
        for frame in _file_frames(file, fmt, echo, **options):
            frame.check()
            count += 1
            yield frame
        if count == 0:
            raise ParseError(str(file), None, f"at least one frame ({fmt})", "none")
        if echo is not None:
            echo(f"read {file}: {count} frame{'s' * (count != 1)} ({fmt})")


def read_frames(path: str | Path, format: str | None = None, **options) -> list[Frame]:
    """All frames of :func:`read` as a list."""
    return list(read(path, format, **options))
