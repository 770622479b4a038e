"""Statistics of a dataset file, as shown by ``mlip data info``."""

from __future__ import annotations

from typing import Any

import numpy as np

from mlip.data.dataset import Dataset


def summarize(ds: Dataset) -> dict[str, Any]:
    """Counts, elements, energy-per-atom statistics (eV/atom, over frames with an
    energy and at least one atom), how many frames carry each property, the
    frame count of each group (e.g. extxyz ``config_type``) and of each source
    file. Plain Python types (JSON-serialisable)."""
    n = len(ds)
    with_energy = ds.has_energy & (ds.n_atoms > 0)
    per_atom = ds.energy[with_energy] / ds.n_atoms[with_energy]
    energy_stats = None
    if per_atom.size:
        energy_stats = {
            "frames": int(per_atom.size),
            "min": float(per_atom.min()),
            "mean": float(per_atom.mean()),
            "max": float(per_atom.max()),
            "std": float(per_atom.std()),
        }
    counts = np.bincount(ds.source_id, minlength=len(ds.sources))
    group_counts = np.bincount(ds.group_id[ds.group_id >= 0], minlength=len(ds.groups))
    return {
        "path": str(ds.path),
        "format_version": ds.format_version,
        "units": ds.units,
        "frames": n,
        "atoms": ds.total_atoms,
        "atoms_per_frame": {"min": int(ds.n_atoms.min()), "max": int(ds.n_atoms.max())},
        "elements": list(ds.elements),
        "energy_per_atom": energy_stats,
        "present": {
            "energy": int(ds.has_energy.sum()),
            "forces": int(ds.has_forces.sum()),
            "stress": int(ds.has_stress.sum()),
            "charges": int(ds.has_charges.sum()),
            "charged": int(np.count_nonzero(ds.total_charge)),
            "grouped": int(np.count_nonzero(ds.group_id >= 0)),
        },
        "groups": {name: int(count) for name, count in zip(ds.groups, group_counts, strict=True)},
        "sources": [
            {"path": path, "frames": int(count), "sha256": sha}
            for path, count, sha in zip(ds.sources, counts, ds.source_sha256, strict=True)
        ],
    }
