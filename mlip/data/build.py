"""Build a dataset file from source files through :func:`parsers.read`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from mlip.data.store import write_dataset
from parsers.frame import Frame

Echo = Callable[[str], Any]

# What to do when the data has no energies: said by `mlip data build` and meant for any
# message about missing energies.
MISSING_ENERGY_HINT = (
    "for LAMMPS dumps give --energy-column c_pe (a per-atom energy column) or --log log.lammps; "
    "for extxyz give --energy-key KEY (the info key holding the energy, e.g. REF_energy; "
    "--forces-key and --stress-key likewise)"
)


def read_options(
    types: dict[int, str] | None = None,
    energy_column: str | None = None,
    log: str | None = None,
    format: str | None = None,
    energy_key: str | None = None,
    forces_key: str | None = None,
    stress_key: str | None = None,
) -> dict[str, Any]:
    """The keyword arguments for ``parsers.read``, leaving out the ones not given."""
    options = {"types": types or None, "energy_column": energy_column, "log": log, "format": format,
               "energy_key": energy_key, "forces_key": forces_key, "stress_key": stress_key}
    return {k: v for k, v in options.items() if v is not None}


def read_sources(
    sources: Sequence[str | os.PathLike], echo: Echo | None = None, **read_options: Any
) -> Iterator[Frame]:
    """Frames of every source (file or folder) in order, read by :func:`parsers.read`
    with ``read_options`` (``format``, ``types``, ``energy_column``, ``log``,
    ``energy_key``, ``forces_key``, ``stress_key``). ``echo`` receives a line per
    file read or skipped (see :func:`parsers.read`)."""
    import parsers

    for source in sources:
        yield from parsers.read(source, echo=echo, **read_options)


def _count_energies(frames: Iterable[Frame], counter: list[int]) -> Iterator[Frame]:
    """``frames`` unchanged, adding 1 to ``counter[0]`` for each frame with an energy."""
    for frame in frames:
        counter[0] += frame.energy is not None
        yield frame


def build_dataset(
    sources: Sequence[str | os.PathLike], path: str | os.PathLike, echo: Echo | None = print,
    **read_options: Any,
) -> int:
    """Read ``sources`` and write them to the dataset file ``path``; returns the number
    of frames. A parse error leaves no file behind (see :func:`write_dataset`).

    ``echo`` (None: quiet) receives the files read and skipped, and a warning
    with :data:`MISSING_ENERGY_HINT` when no frame has an energy."""
    with_energy = [0]
    n_frames = write_dataset(_count_energies(read_sources(sources, echo, **read_options), with_energy), path)
    if echo is not None and with_energy[0] == 0:
        echo(f"warning: no frame has an energy, which training needs: {MISSING_ENERGY_HINT}")
    return n_frames
