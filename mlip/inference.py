"""Evaluate a deployed ``model.pt`` (or an in-memory Potential) on frames in batches."""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlip import keys
from mlip.batching import collate, frame_to_graph
from mlip.errors import UserError
from mlip.export import METADATA_FILE
from parsers import Frame


def resolve_model_path(model: str | Path) -> Path:
    """A ``model.pt`` path from a file or a run directory (``RUN/model.pt``)."""
    path = Path(model)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise UserError(f"model file not found: {path}")
    return path


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device; UserError if it names CUDA and CUDA is not available."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UserError(f"device {str(device)!r}: expected cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        build = f"torch {torch.__version__} built for CUDA {torch.version.cuda}" if torch.version.cuda \
            else f"torch {torch.__version__} built without CUDA"
        raise UserError(f"device {str(device)!r}: CUDA is not available on this machine ({build}); "
                        "use --device cpu")
    return dev


def _is_training_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a ``torch.save`` archive of a training checkpoint (checkpoints/*.pt)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    if any("/code/" in name for name in names) or not any(n.endswith("/data.pkl") for n in names):
        return False  # TorchScript, or not a torch.save archive
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError):
        return False
    return isinstance(content, dict) and {"ema", "optimizer"} <= content.keys()


def load_model(model: str | Path, device: str = "cpu") -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """Load ``model.pt`` (or ``RUN_DIR/model.pt``) with its metadata."""
    path = resolve_model_path(model)
    check_device(device)
    extra = {METADATA_FILE: ""}
    try:
        module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except RuntimeError as exc:
        if _is_training_checkpoint(path):
            run = path.parent.parent if path.parent.name == "checkpoints" else Path("RUN")
            raise UserError(f"{path} is a training checkpoint, not a model: pass the run's model.pt "
                            f"(or the run directory), or export one with `mlip export {run}`") from None
        raise UserError(f"{path}: not a valid mlip model file ({str(exc).splitlines()[0]})") from None
    if not extra[METADATA_FILE]:
        raise UserError(f"{path}: no mlip metadata in the model file")
    return module, json.loads(extra[METADATA_FILE])


def committee_size(meta: dict[str, Any]) -> int:
    """Number of committee members of a model from its metadata (1: a single model; files from
    before committees have no such key)."""
    return int(meta.get("committee", 1))


def compute_args(meta: dict[str, Any], deviation: bool) -> tuple[Any, ...]:
    """The arguments of ``compute`` after ``create_graph`` that ask a committee for its members'
    derivatives (``deviation``); none otherwise, so that model files from before committees,
    whose ``compute`` lacks the argument, still run."""
    if not deviation:
        return ()
    if committee_size(meta) < 2:
        raise UserError("this model is a single model, not a committee: it has no force deviation; train "
                        "one with mlip train --committee 4, or combine runs with mlip committee RUN... "
                        "-o model.pt")
    return (-1, False, True)


def predict_frames(module: torch.nn.Module, meta: dict[str, Any], frames: Sequence[Frame],
                   batch_size: int = 8, device: str = "cpu", stress: bool = True,
                   deviation: bool = False) -> list[dict[str, Any]]:
    """Energy (eV), atomic energies (eV), forces (n,3) eV/Å and, for fully periodic frames,
    stress (3,3) eV/Å³ (ASE sign) of each frame, evaluated ``batch_size`` frames at a time.

    Committees also give ``energy_deviation`` (eV/atom) and, with ``deviation`` (one more
    backward pass per member), ``force_deviation`` (n,) eV/Å and ``max_force_deviation`` eV/Å;
    ``deviation`` on a single model raises :class:`UserError`."""
    extra = compute_args(meta, deviation)
    dtype = getattr(torch, meta["dtype"])
    elements, cutoff = meta["elements"], float(meta["cutoff"])
    out: list[dict[str, Any]] = []
    for k in range(0, len(frames), batch_size):
        chunk = frames[k:k + batch_size]
        b = collate([frame_to_graph(f, elements, cutoff) for f in chunk], dtype, device)
        periodic = b["pbc"].all(dim=1).tolist()
        want_stress = stress and any(periodic)
        res = module.compute(b, True, want_stress, False, *extra)
        starts = np.concatenate([[0], np.cumsum(b["n_atoms"].cpu().numpy())])
        for f_i in range(len(chunk)):
            a, z = starts[f_i], starts[f_i + 1]
            item: dict[str, Any] = {
                "energy": float(res["energy"][f_i].detach()),
                "energies": res["atomic_energies"][a:z].detach().cpu().numpy().astype(np.float64),
                "forces": res["forces"][a:z].detach().cpu().numpy().astype(np.float64),
            }
            if want_stress and periodic[f_i]:
                item["stress"] = res["stress"][f_i].detach().cpu().numpy().astype(np.float64)
            if "charges" in res:
                item["charges"] = res["charges"][a:z].detach().cpu().numpy().astype(np.float64)
            if keys.ENERGY_DEVIATION in res:
                item[keys.ENERGY_DEVIATION] = float(res[keys.ENERGY_DEVIATION][f_i].detach())
            if keys.FORCE_DEVIATION in res:
                deviation_i = res[keys.FORCE_DEVIATION][a:z].detach()
                item[keys.FORCE_DEVIATION] = deviation_i.cpu().numpy().astype(np.float64)
                item[keys.MAX_FORCE_DEVIATION] = float(res[keys.MAX_FORCE_DEVIATION][f_i].detach())
            out.append(item)
    return out
