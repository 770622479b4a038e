"""Export a training run's checkpoint to a deployable ``model.pt`` (``mlip export``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlip.errors import UserError
from mlip.export import export_model, lammps_overlay_terms, model_metadata
from mlip.inference import load_model
from mlip.model import Potential
from mlip.train.checkpoint import load_checkpoint
from mlip.train.config import load_run_config
from mlip.train.model_builder import build_potential


def load_run(run_dir: str | Path, checkpoint: str | None = None) -> tuple[Potential, dict[str, Any], Path]:
    """(model with the EMA weights of ``run_dir/checkpoints/<checkpoint>``, the run's config, the
    checkpoint's path); ``checkpoint`` defaults to the run's ``train.export`` (``last.pt`` or
    ``best.pt``). UserError when ``run_dir`` is not a run or the checkpoint is missing."""
    run = Path(run_dir)
    if not (run / "config.yaml").is_file():
        raise UserError(f"{run} is not a run directory (no config.yaml)")
    config = load_run_config(run / "config.yaml")
    ckpt = run / "checkpoints" / (checkpoint or f"{config['train']['export']}.pt")
    if not ckpt.is_file():
        raise UserError(f"checkpoint not found: {ckpt}")
    model = build_potential(config["model"], config["model"]["elements"])
    model.load_state_dict(load_checkpoint(ckpt)["ema"])
    return model, config, ckpt


def run_data_hash(run_dir: str | Path) -> str | None:
    """The data hash recorded in the run's ``model.pt``, or None without one."""
    path = Path(run_dir) / "model.pt"
    return load_model(path)[1].get("data_hash") if path.is_file() else None


def export_run(run_dir: str | Path, output: str | Path | None = None, checkpoint: str | None = None,
               lammps_overlay: bool = True) -> Path:
    """Write the EMA weights of ``run_dir/checkpoints/<checkpoint>`` (default: the run's
    ``train.export``, ``last.pt`` or ``best.pt``) as TorchScript to ``output`` (default
    ``run_dir/model.pt``); the data hash of the run's ``model.pt`` is kept. Returns the path.

    ``lammps_overlay``: the fixed physics terms LAMMPS has itself (D3, ZBL) are left to LAMMPS in
    the model's LAMMPS path, and ``<output>.lammps`` holds the ``pair_style hybrid/overlay`` and
    ``pair_coeff`` lines that add them (:func:`mlip.export.export_model`); False keeps every term in
    the model for ``pair_style mlip`` alone."""
    model, config, _ = load_run(run_dir, checkpoint)
    overlay = lammps_overlay_terms(model) if lammps_overlay else []
    meta = model_metadata(model, config["model"]["descriptors"], run_data_hash(run_dir), overlay)
    return export_model(model, output or Path(run_dir) / "model.pt", meta)
