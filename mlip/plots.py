"""Figures of a run: learning curve and energy/force parity plots.

Drawn on :class:`matplotlib.figure.Figure` directly, never through pyplot, so training does
not change the matplotlib backend of the caller (a notebook keeps showing its own figures).
The functions take plain arrays: the trainer computes the predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from mlip.fileio import atomic_write


@dataclass
class ParitySet:
    """Reference and predicted values of one split, for the parity plots.

    ``energy_*``: one value per frame (eV/atom), ``energy_group`` its composition (``"CuNi"``);
    ``force_*``: one value per force component (eV/Å), ``force_group`` the atom's element.
    NaN references (absent labels) are left out of the plots.
    """

    split: str  # "validation" or "training"
    energy_ref: np.ndarray
    energy_pred: np.ndarray
    energy_group: np.ndarray
    force_ref: np.ndarray
    force_pred: np.ndarray
    force_group: np.ndarray


def learning_curve(history: list[dict[str, float]], path: Path, stage_two_start: int | None = None) -> None:
    """Train/validation energy and force MAE per epoch; a dotted line where stage two starts
    (``stage_two_start``, an epoch of ``history``). A panel without any finite value (forces of
    energy-only data) says so instead of a curve."""
    fig = Figure(figsize=(9, 3.5))
    axes = fig.subplots(1, 2)
    ep = [h["epoch"] for h in history]
    for ax, key, label in ((axes[0], "energy_mae_meV_atom", "energy MAE (meV/atom)"),
                           (axes[1], "force_mae_eV_A", "force MAE (eV/Å)")):
        values = {name: np.array([h[f"{split}_{key}"] for h in history], dtype=float)
                  for split, name in (("train", "train"), ("val", "validation"))}
        if not any(np.isfinite(v).any() for v in values.values()):
            ax.text(0.5, 0.5, "no reference values", ha="center", va="center", transform=ax.transAxes)
            ax.set_ylabel(label)
            continue
        for name, v in values.items():
            ax.plot(ep, v, label=name)
        if stage_two_start is not None and ep and ep[0] < stage_two_start <= ep[-1]:
            ax.axvline(stage_two_start - 0.5, color="0.4", ls=":", lw=1, label="stage two starts")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_yscale("log")
        ax.legend()
    _save(fig, path)


def parity(ref: np.ndarray, pred: np.ndarray, label: str, path: Path, split: str | None = None,
           groups: Sequence[str] | np.ndarray | None = None) -> None:
    """Predicted against reference values with the y = x line; the title names ``split`` and
    gives MAE, RMSE and the count; points are coloured by ``groups`` (e.g. element) if given."""
    ref, pred = np.asarray(ref, dtype=float), np.asarray(pred, dtype=float)
    ok = np.isfinite(ref)
    groups = np.asarray(groups)[ok] if groups is not None else np.full(int(ok.sum()), "")
    ref, pred = ref[ok], pred[ok]
    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.subplots()
    for name in dict.fromkeys(groups.tolist()):
        sel = groups == name
        ax.scatter(ref[sel], pred[sel], s=4, alpha=0.6, label=name or None)
    if ref.size:
        lo, hi = float(ref.min()), float(ref.max())
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    err = pred - ref
    mae = float(np.mean(np.abs(err))) if err.size else float("nan")
    rmse = float(np.sqrt(np.mean(err**2))) if err.size else float("nan")
    unit = label[label.index("(") + 1:label.rindex(")")] if "(" in label and label.endswith(")") else ""
    ax.set_title(f"{split + ': ' if split else ''}MAE {mae:.4g}, RMSE {rmse:.4g} {unit}\nN = {ref.size}",
                 fontsize=9)
    if set(groups.tolist()) - {""}:
        ax.legend(markerscale=3, fontsize=8)
    ax.set_xlabel(f"reference {label}")
    ax.set_ylabel(f"predicted {label}")
    _save(fig, path)


def write_plots(run_dir: Path, history: list[dict[str, float]], stage_two_start: int | None,
                data: ParitySet) -> None:
    """learning_curve.png, parity_energy.png and (if forces exist) parity_forces.png in ``run_dir``."""
    learning_curve(history, run_dir / "learning_curve.png", stage_two_start)
    parity(data.energy_ref, data.energy_pred, "energy (eV/atom)", run_dir / "parity_energy.png",
           f"{data.split} frames", data.energy_group)
    if np.isfinite(data.force_ref).any():
        parity(data.force_ref, data.force_pred, "force (eV/Å)", run_dir / "parity_forces.png",
               f"{data.split} force components", data.force_group)


def _save(fig: Figure, path: Path) -> None:
    """Write ``fig`` as PNG to ``path``, whole or not at all (a full disk leaves no partial file)."""
    fig.tight_layout()
    with atomic_write(path) as out:
        fig.savefig(out, format="png", dpi=100)
