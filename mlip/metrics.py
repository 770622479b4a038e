"""Errors of predictions against reference data, overall and per group."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from parsers.units import GPA_PER_EV_A3


def error_table(pred: dict[str, Sequence[np.ndarray]], ref: dict[str, Sequence[np.ndarray]],
                n_atoms: np.ndarray) -> dict[str, float]:
    """Energy MAE/RMSE (meV/atom), force MAE/RMSE (eV/Å), stress MAE (GPa) of matched frames.

    ``pred``/``ref`` hold per-frame ``energy`` (scalars, eV), ``forces`` ((n,3) eV/Å) and
    ``stress`` ((3,3) eV/Å³); NaN reference values are skipped.
    """
    out: dict[str, float] = {"frames": float(len(n_atoms)), "atoms": float(np.sum(n_atoms))}
    e_ref = np.asarray(ref["energy"], dtype=float)
    e_pred = np.asarray(pred["energy"], dtype=float)
    ok = np.isfinite(e_ref)
    if ok.any():
        d = (e_pred[ok] - e_ref[ok]) / n_atoms[ok] * 1000.0
        out["energy_mae_meV_atom"] = float(np.mean(np.abs(d)))
        out["energy_rmse_meV_atom"] = float(np.sqrt(np.mean(d**2)))
    if "forces" in pred and len(ref["forces"]):
        fr = np.concatenate([np.asarray(f).reshape(-1, 3) for f in ref["forces"]])
        fp = np.concatenate([np.asarray(f).reshape(-1, 3) for f in pred["forces"]])
        ok = np.isfinite(fr).all(axis=1)
        if ok.any():
            d = fp[ok] - fr[ok]
            out["force_mae_eV_A"] = float(np.mean(np.abs(d)))
            out["force_rmse_eV_A"] = float(np.sqrt(np.mean(d**2)))
    if "stress" in pred and len(ref["stress"]):
        sr = np.stack([np.asarray(s).reshape(3, 3) for s in ref["stress"]])
        sp = np.stack([np.asarray(s).reshape(3, 3) for s in pred["stress"]])
        ok = np.isfinite(sr).all(axis=(1, 2))
        if ok.any():
            out["stress_mae_GPa"] = float(np.mean(np.abs(sp[ok] - sr[ok])) * GPA_PER_EV_A3)
    return out


@dataclass
class ErrorSums:
    """Running sums of one epoch's loss and absolute errors.

    Checkpoints save them mid-epoch, so an epoch resumed after an interruption reports the
    numbers an uninterrupted one does (the same additions in the same order).
    """

    loss: float = 0.0  # sum of the loss values added
    weight: float = 0.0  # sum of their weights (batches, or frames)
    energy: float = 0.0  # sum of |ΔE/N|, eV/atom
    energy_count: int = 0
    force: float = 0.0  # sum of |ΔF| components, eV/Å
    force_count: int = 0

    def add(self, loss: float, weight: float, errors: dict[str, Any]) -> None:
        """Add one batch: its loss with ``weight`` and its absolute errors ``e`` (and ``f``)."""
        self.loss += loss * weight
        self.weight += weight
        for key, total, count in (("e", "energy", "energy_count"), ("f", "force", "force_count")):
            if key in errors:
                setattr(self, total, getattr(self, total) + float(errors[key].sum()))
                setattr(self, count, getattr(self, count) + int(errors[key].numel()))

    def summary(self) -> dict[str, float]:
        """``loss`` (weighted mean), ``e_mae`` meV/atom and ``f_mae`` eV/Å (NaN when absent)."""
        return {"loss": self.loss / self.weight if self.weight else math.nan,
                "e_mae": self.energy / self.energy_count * 1000 if self.energy_count else math.nan,
                "f_mae": self.force / self.force_count if self.force_count else math.nan}
