"""Export a training run's checkpoint to a deployable ``model.pt`` (``mlip export``)."""

from __future__ import annotations

from pathlib import Path

from mlip.errors import UserError
from mlip.export import export_model, model_metadata
from mlip.inference import load_model
from mlip.train.checkpoint import load_checkpoint
from mlip.train.config import load_config
from mlip.train.model_builder import build_potential


def export_run(run_dir: str | Path, output: str | Path | None = None, checkpoint: str | None = None) -> Path:
    """Write the EMA weights of ``run_dir/checkpoints/<checkpoint>`` (default: the run's
    ``train.export``, ``last.pt`` or ``best.pt``) as TorchScript to ``output`` (default
    ``run_dir/model.pt``); the data hash of the run's ``model.pt`` is kept. Returns the path."""
    run = Path(run_dir)
    config = load_config(run / "config.yaml")
    ckpt = run / "checkpoints" / (checkpoint or f"{config['train']['export']}.pt")
    if not ckpt.is_file():
        raise UserError(f"checkpoint not found: {ckpt}")
    model = build_potential(config["model"], config["model"]["elements"])
    model.load_state_dict(load_checkpoint(ckpt)["ema"])
    old = run / "model.pt"
    data_hash = load_model(old)[1].get("data_hash") if old.is_file() else None
    meta = model_metadata(model, config["model"]["descriptors"], data_hash)
    return export_model(model, output or old, meta)
