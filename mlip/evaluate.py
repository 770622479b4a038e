"""Error tables of a model on data files (``mlip evaluate``)."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mlip.data import read_sources
from mlip.errors import UserError
from mlip.fileio import atomic_write_text
from mlip.inference import load_model, predict_frames
from mlip.metrics import error_table

COLUMNS = [("energy_mae_meV_atom", "E MAE meV/at"), ("energy_rmse_meV_atom", "E RMSE meV/at"),
           ("force_mae_eV_A", "F MAE eV/Å"), ("force_rmse_eV_A", "F RMSE eV/Å"),
           ("stress_mae_GPa", "S MAE GPa")]


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """A plain-text table, one row per group."""
    width = max(12, *(len(k) for k in rows))
    head = f"{'group':<{width}} {'frames':>7} " + " ".join(f"{h:>14}" for _, h in COLUMNS)
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        vals = " ".join(f"{r[k]:>14.4f}" if k in r else f"{'-':>14}" for k, _ in COLUMNS)
        lines.append(f"{name:<{width}} {int(r['frames']):>7} {vals}")
    return "\n".join(lines)


def evaluate_model(model: str, data: list[str], read_options: dict[str, Any], device: str = "cpu",
                   csv_path: str | None = None, parity_path: str | None = None,
                   echo: Callable[[str], Any] = print) -> dict[str, dict[str, float]]:
    """Evaluate and print the table; returns rows keyed by ``all``, sources and groups."""
    module, meta = load_model(model, device)
    frames = list(read_sources(data, **read_options))
    if not frames:
        raise UserError(f"no frames found in {', '.join(data)}")
    preds = predict_frames(module, meta, frames, device=device)
    groups: dict[str, list[int]] = defaultdict(list)
    for k, f in enumerate(frames):
        groups["all"].append(k)
        groups[Path(f.source).name].append(k)
        if f.group:
            groups[f"group:{f.group}"].append(k)
    rows = {}
    for name, idx in groups.items():
        nan33 = np.full((3, 3), np.nan)
        ref = {"energy": [np.nan if frames[i].energy is None else frames[i].energy for i in idx],
               "forces": [frames[i].forces if frames[i].forces is not None
                          else np.full((len(frames[i]), 3), np.nan) for i in idx],
               "stress": [frames[i].stress if frames[i].stress is not None else nan33 for i in idx]}
        pred = {"energy": [preds[i]["energy"] for i in idx], "forces": [preds[i]["forces"] for i in idx],
                "stress": [preds[i].get("stress", nan33) for i in idx]}
        rows[name] = error_table(pred, ref, np.array([len(frames[i]) for i in idx]))
    echo(format_table(rows))
    if csv_path:
        _write_csv(Path(csv_path), frames, preds)
    if parity_path:
        _write_parity(Path(parity_path), frames, preds)
    return rows


def _write_parity(path: Path, frames: list, preds: list[dict[str, Any]]) -> None:
    """Energy parity plot at ``path`` (coloured by composition) and, where frames have forces,
    the force parity plot at ``<stem>_forces<suffix>`` (coloured by element)."""
    from ase.data import chemical_symbols

    from mlip.plots import parity

    ok = [i for i, f in enumerate(frames) if f.energy is not None]
    compositions = ["".join(chemical_symbols[z] for z in np.unique(frames[i].numbers)) for i in ok]
    parity(np.array([frames[i].energy / len(frames[i]) for i in ok]),
           np.array([preds[i]["energy"] / len(frames[i]) for i in ok]), "energy (eV/atom)", path,
           "evaluated frames", compositions)
    with_forces = [i for i, f in enumerate(frames) if f.forces is not None]
    if with_forces:
        parity(np.concatenate([frames[i].forces.ravel() for i in with_forces]),
               np.concatenate([preds[i]["forces"].ravel() for i in with_forces]), "force (eV/Å)",
               path.with_name(f"{path.stem}_forces{path.suffix}"), "evaluated force components",
               np.concatenate([np.repeat([chemical_symbols[z] for z in frames[i].numbers], 3)
                               for i in with_forces]))


def _write_csv(path: Path, frames: list, preds: list[dict[str, Any]]) -> None:
    """One row per frame: reference and predicted energy, their error and the force MAE."""
    text = io.StringIO()
    w = csv.writer(text)
    w.writerow(["source", "index", "group", "n_atoms", "energy_ref_eV", "energy_pred_eV",
                "energy_err_meV_atom", "force_mae_eV_A"])
    for f, p in zip(frames, preds, strict=True):
        e_err = (p["energy"] - f.energy) / len(f) * 1000 if f.energy is not None else ""
        f_mae = float(np.mean(np.abs(p["forces"] - f.forces))) if f.forces is not None else ""
        w.writerow([f.source, f.index, f.group or "", len(f), f.energy, p["energy"], e_err, f_mae])
    atomic_write_text(path, text.getvalue())
