"""Figures of a run: learning curve and energy/force parity plots.

Drawn on :class:`matplotlib.figure.Figure` directly, never through pyplot, so training does
not change the matplotlib backend of the caller (a notebook keeps showing its own figures).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from mlip.train.loss import predict

if TYPE_CHECKING:  # pragma: no cover
    from mlip.model import Potential
    from mlip.train.trainer import Trainer


def learning_curve(history: list[dict[str, float]], path: Path) -> None:
    """Train/validation energy and force MAE per epoch."""
    fig = Figure(figsize=(9, 3.5))
    axes = fig.subplots(1, 2)
    ep = [h["epoch"] for h in history]
    for ax, key, label in ((axes[0], "energy_mae_meV_atom", "energy MAE (meV/atom)"),
                           (axes[1], "force_mae_eV_A", "force MAE (eV/Å)")):
        for split in ("train", "val"):
            ax.plot(ep, [h[f"{split}_{key}"] for h in history], label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_yscale("log")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def parity(ref: np.ndarray, pred: np.ndarray, label: str, path: Path) -> None:
    """Predicted against reference values with the y = x line."""
    fig = Figure(figsize=(4, 4))
    ax = fig.subplots()
    ax.scatter(ref, pred, s=4, alpha=0.6)
    lo, hi = float(np.nanmin(ref)), float(np.nanmax(ref))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel(f"reference {label}")
    ax.set_ylabel(f"predicted {label}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_plots(trainer: Trainer, model: Potential) -> None:
    """learning_curve.png, parity_energy.png and (if forces exist) parity_forces.png."""
    run = trainer.run_dir
    learning_curve(trainer.state.history, run / "learning_curve.png")
    idx = trainer.val_idx if len(trainer.val_idx) else trainer.train_idx
    e_ref, e_pred, f_ref, f_pred = [], [], [], []
    for k in range(0, len(idx), 8):
        b = trainer._collate(idx[k:k + 8])
        res = predict(model.to(b["positions"].device), b, forces=True, stress=False, create_graph=False)
        n = b["n_atoms"].cpu().numpy()
        e_ref.append(b["energy"].cpu().numpy() / n)
        e_pred.append(res["energy"].detach().cpu().numpy() / n)
        f_ref.append(b["forces"].cpu().numpy().ravel())
        f_pred.append(res["forces"].detach().cpu().numpy().ravel())
    parity(np.concatenate(e_ref), np.concatenate(e_pred), "energy (eV/atom)", run / "parity_energy.png")
    fr = np.concatenate(f_ref)
    if np.isfinite(fr).any():
        ok = np.isfinite(fr)
        parity(fr[ok], np.concatenate(f_pred)[ok], "force (eV/Å)", run / "parity_forces.png")
