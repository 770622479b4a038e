"""The training loss and per-batch predictions."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mlip.model import Potential


@dataclass
class LossWeights:
    """Global loss weights: energy (eV/atom)⁻², force (eV/Å)⁻², stress (eV/Å³)⁻², charge e⁻²."""

    energy: float = 1.0
    force: float = 1.0
    stress: float = 0.0
    charge: float = 0.0


def predict(model: Potential, b: dict[str, Tensor], forces: bool, stress: bool,
            create_graph: bool) -> dict[str, Tensor]:
    """Model outputs for a collated batch (see :func:`mlip.batching.collate`); ``stress`` (the
    virial's) when requested."""
    return model.compute(b, compute_forces=forces, compute_virial=stress, create_graph=create_graph)


def batch_loss(model: Potential, b: dict[str, Tensor], w: LossWeights,
               create_graph: bool) -> tuple[Tensor, dict[str, Tensor]]:
    """w_E·MSE(E/N) + w_F·MSE(F) + w_S·MSE(σ) (+ w_q·MSE(q)), with the per-frame
    ``energy_weight`` and ``force_weight``; absent (NaN) references are left out.

    Returns the loss and the absolute errors (for MAE bookkeeping): ``e`` (frames with
    energies) eV/atom and ``f`` (force components) eV/Å.
    """
    f_ok = torch.isfinite(b["forces"]).all(dim=1)
    s_ok = torch.isfinite(b["stress"]).all(dim=2).all(dim=1)
    want_f = w.force > 0 and bool(f_ok.any())
    want_s = w.stress > 0 and bool(s_ok.any())
    res = predict(model, b, want_f, want_s, create_graph)
    n_atoms = b["n_atoms"].to(res["energy"].dtype)
    e_ok = torch.isfinite(b["energy"])
    e_err = (res["energy"] - b["energy"]) / n_atoms
    zero = res["energy"].sum() * 0.0
    loss = zero
    errors: dict[str, Tensor] = {"e": e_err[e_ok].detach().abs()}
    if bool(e_ok.any()):
        loss = loss + w.energy * (b["energy_weight"][e_ok] * e_err[e_ok] ** 2).mean()
    if want_f:
        d = res["forces"][f_ok] - b["forces"][f_ok]
        fw = b["force_weight"][b["batch"]][f_ok]
        loss = loss + w.force * (fw[:, None] * d**2).mean()
        errors["f"] = d.detach().abs().reshape(-1)
    if want_s:
        d = res["stress"][s_ok] - b["stress"][s_ok]
        loss = loss + w.stress * (d**2).mean()
    if w.charge > 0 and "charges" in res:
        q_ok = torch.isfinite(b["charges"])
        if bool(q_ok.any()):
            loss = loss + w.charge * ((res["charges"][q_ok] - b["charges"][q_ok]) ** 2).mean()
    return loss, errors
