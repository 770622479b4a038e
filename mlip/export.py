"""Export a trained :class:`~mlip.model.Potential` to one TorchScript file, ``model.pt``.

The file follows the deployed-model contract (``docs/architecture.md``) and carries its
metadata as ``_extra_files["metadata.json"]``, so it loads with plain ``torch.jit.load``
where mlip is not installed (ASE calculator, LAMMPS plugin).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mlip import __version__
from mlip.fileio import atomic_write
from mlip.model import Potential

METADATA_FILE = "metadata.json"


def model_metadata(model: Potential, descriptors: Any = None, data_hash: str | None = None) -> dict[str, Any]:
    """The metadata dict stored in ``model.pt``."""
    dtype = next(model.parameters()).dtype
    return {
        "elements": list(model.elements),
        "cutoff": float(model.cutoff),
        "dtype": str(dtype).replace("torch.", ""),
        "mlip_version": __version__,
        "physics": [t.name for t in model.physics],
        "long_range": bool(model.long_range),
        "charges": bool(model.has_charges),
        "descriptors": descriptors,
        "data_hash": data_hash,
        "units": "metal",
    }


def export_model(model: Potential | torch.jit.ScriptModule, path: str | Path,
                 metadata: dict[str, Any]) -> Path:
    """Script (unless ``model`` is scripted already), freeze where possible and write ``model`` to
    ``path`` atomically (:func:`mlip.fileio.atomic_write`).

    Training scripts its model when it starts and passes that module here with the best weights
    loaded, so the exported code is the code that was trained even if the sources change meanwhile.
    """
    path = Path(path)
    model = model.eval()
    scripted = model if isinstance(model, torch.jit.ScriptModule) else torch.jit.script(model)
    try:
        scripted = torch.jit.freeze(scripted, preserved_attrs=["compute"])
    except RuntimeError:  # freezing is an optimisation; an unfrozen module is still valid
        pass
    with atomic_write(path) as out:
        torch.jit.save(scripted, out, _extra_files={METADATA_FILE: json.dumps(metadata)})
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Metadata of a ``model.pt`` file (loads the file)."""
    extra = {METADATA_FILE: ""}
    torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra[METADATA_FILE])
