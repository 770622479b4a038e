"""Training data: the run's dataset file from its sources, element checks and the data hash."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase.data import atomic_numbers

from mlip.data import Dataset, build_dataset
from mlip.data.build import read_options as options_from
from mlip.errors import UserError
from parsers import Frame


def read_options(data_cfg: dict[str, Any]) -> dict[str, Any]:
    """Keyword options for :func:`parsers.read` from the ``data`` config section."""
    types = {int(k): str(v) for k, v in (data_cfg.get("types") or {}).items()}
    return options_from(types=types, energy_column=data_cfg.get("energy_column"),
                        log=data_cfg.get("log"), format=data_cfg.get("format"),
                        energy_key=data_cfg.get("energy_key"), forces_key=data_cfg.get("forces_key"),
                        stress_key=data_cfg.get("stress_key"))


def open_dataset(data_cfg: dict[str, Any], run_dir: Path, build: bool = True) -> Dataset:
    """The run's dataset: a single ``.h5`` source is used as it is; otherwise the sources are
    parsed once into ``run_dir/data.h5`` (reused on resume). ``build=False`` waits for another
    process (DDP rank 0) to write it."""
    sources = [Path(s) for s in data_cfg.get("sources") or []]
    if not sources:
        raise UserError("no training data given: pass files or folders (mlip train dumps/)")
    for src in sources:
        if not src.exists():
            raise UserError(f"data source not found: {src}")
        if src.is_dir() and not any(src.iterdir()):
            raise UserError(f"data folder is empty: {src}")
    if len(sources) == 1 and sources[0].suffix == ".h5":
        return Dataset(sources[0])
    path = run_dir / "data.h5"
    if build and not path.exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        build_dataset(sources, path, **read_options(data_cfg))  # raises UserError if no frames
    return Dataset(path)


def check_elements(elements: Sequence[str]) -> list[str]:
    """Validate symbols and sort them by atomic number."""
    bad = [e for e in elements if e not in atomic_numbers]
    if bad:
        raise UserError(f"unknown element symbol(s): {', '.join(bad)}")
    return sorted(elements, key=lambda e: atomic_numbers[e])


def data_hash(frames: Iterable[Frame]) -> str:
    """SHA-256 over numbers, positions, cells and energies of all frames (provenance)."""
    h = hashlib.sha256()
    for f in frames:
        h.update(f.numbers.tobytes())
        h.update(f.positions.tobytes())
        h.update(f.cell.tobytes())
        h.update(np.float64(np.nan if f.energy is None else f.energy).tobytes())
    return h.hexdigest()
