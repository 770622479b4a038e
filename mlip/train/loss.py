"""The training loss and per-batch predictions."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mlip import keys
from mlip.model import Potential
from mlip.model.potential import stress_from_virial


@dataclass
class LossWeights:
    """Global loss weights: energy (eV/atom)⁻², force (eV/Å)⁻², stress (eV/Å³)⁻², charge e⁻²."""

    energy: float = 1.0
    force: float = 1.0
    stress: float = 0.0
    charge: float = 0.0


def predict(model: Potential, b: dict[str, Tensor], forces: bool, stress: bool,
            create_graph: bool, members: bool = False) -> dict[str, Tensor]:
    """Model outputs for a collated batch (see :func:`mlip.batching.collate`); ``stress`` (the
    virial's) when requested; ``members``: a committee's per-member derivatives too."""
    return model.compute(b, compute_forces=forces, compute_virial=stress, create_graph=create_graph,
                         deviation=members)


def _fit_loss(b: dict[str, Tensor], w: LossWeights, energy: Tensor, forces: Tensor | None,
              stress: Tensor | None, charges: Tensor | None, frame_weight: Tensor) -> Tensor:
    """w_E·MSE(E/N) + w_F·MSE(F) + w_S·MSE(σ) (+ w_q·MSE(q)) of one prediction (``energy`` (B,) eV,
    ``forces`` (N, 3) eV/Å, ``stress`` (B, 3, 3) eV/Å³, ``charges`` (N,) e; None = not fitted),
    each frame's terms weighted by ``frame_weight`` (B,) and its ``energy_weight``/``force_weight``."""
    n_atoms = b["n_atoms"].to(energy.dtype)
    e_ok = torch.isfinite(b["energy"])
    e_err = (energy - b["energy"]) / n_atoms
    loss = energy.sum() * 0.0
    if bool(e_ok.any()):
        loss = loss + w.energy * (frame_weight[e_ok] * b["energy_weight"][e_ok] * e_err[e_ok] ** 2).mean()
    if forces is not None:
        f_ok = torch.isfinite(b["forces"]).all(dim=1)
        d = forces[f_ok] - b["forces"][f_ok]
        fw = (frame_weight * b["force_weight"])[b["batch"]][f_ok]
        loss = loss + w.force * (fw[:, None] * d**2).mean()
    if stress is not None:
        s_ok = torch.isfinite(b["stress"]).all(dim=2).all(dim=1)
        d = stress[s_ok] - b["stress"][s_ok]
        loss = loss + w.stress * (frame_weight[s_ok][:, None, None] * d**2).mean()
    if charges is not None:
        q_ok = torch.isfinite(b["charges"])
        if bool(q_ok.any()):
            d = charges[q_ok] - b["charges"][q_ok]
            loss = loss + w.charge * (frame_weight[b["batch"]][q_ok] * d**2).mean()
    return loss


def batch_loss(model: Potential, b: dict[str, Tensor], w: LossWeights, create_graph: bool,
               member_weights: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """w_E·MSE(E/N) + w_F·MSE(F) + w_S·MSE(σ) (+ w_q·MSE(q)), with the per-frame
    ``energy_weight`` and ``force_weight``; absent (NaN) references are left out.

    ``member_weights`` (K, B) (a committee in training): the loss is the mean over members of
    each member's own loss, its frames weighted by how often its bootstrap resample holds them
    (:func:`mlip.train.loader.bootstrap_counts`); otherwise (a single model, or a committee's
    validation) the loss of the model's prediction, for a committee the members' mean.

    Returns the loss and the absolute errors of the model's prediction (for MAE bookkeeping):
    ``e`` (frames with energies) eV/atom and ``f`` (force components) eV/Å.
    """
    f_ok = torch.isfinite(b["forces"]).all(dim=1)
    s_ok = torch.isfinite(b["stress"]).all(dim=2).all(dim=1)
    want_f = w.force > 0 and bool(f_ok.any())
    want_s = w.stress > 0 and bool(s_ok.any())
    members = member_weights is not None and model.committee > 1
    res = predict(model, b, want_f, want_s, create_graph, members)
    e_ok = torch.isfinite(b["energy"])
    e_err = (res["energy"] - b["energy"]) / b["n_atoms"].to(res["energy"].dtype)
    errors: dict[str, Tensor] = {"e": e_err[e_ok].detach().abs()}
    if want_f:
        errors["f"] = (res["forces"][f_ok] - b["forces"][f_ok]).detach().abs().reshape(-1)
    charges = res.get("charges") if w.charge > 0 else None
    if not members:
        frame_weight = torch.ones_like(res["energy"])
        loss = _fit_loss(b, w, res["energy"], res["forces"] if want_f else None,
                         res["stress"] if want_s else None, charges, frame_weight)
        return loss, errors
    assert member_weights is not None
    losses = []
    for k in range(model.committee):
        stress = stress_from_virial(res[keys.MEMBER_VIRIAL][k], b["cell"], b["pbc"]) if want_s else None
        forces = res[keys.MEMBER_FORCES][k] if want_f else None
        losses.append(_fit_loss(b, w, res[keys.MEMBER_ENERGY][:, k], forces, stress, charges,
                                member_weights[k].to(res["energy"].dtype)))
    return torch.stack(losses).mean(), errors
