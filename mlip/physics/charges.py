"""Atomic charges for the electrostatics: the total-charge constraint and fixed per-element charges."""

from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor

from mlip.errors import UserError


def enforce_total_charge(charges: Tensor, batch: Tensor, total_charge: Tensor) -> Tensor:
    """Shift charges so that each frame sums to its total charge: q_i ← q_i − (Σ_frame q − Q) / N_frame.

    Args:
        charges: (n,) e, raw charges of the atoms of all frames.
        batch: (n,) int64, frame index of each atom.
        total_charge: (B,) e, the required total charge Q of each frame.

    Returns:
        (n,) e; differentiable in ``charges`` (and ``total_charge``).
    """
    n_frames = total_charge.shape[0]
    sums = torch.zeros(n_frames, dtype=charges.dtype, device=charges.device).index_add(0, batch, charges)
    counts = torch.zeros(n_frames, dtype=charges.dtype, device=charges.device).index_add(
        0, batch, torch.ones_like(charges))
    excess = (sums - total_charge.to(charges.dtype)) / torch.clamp(counts, min=1.0)
    return charges - excess[batch]


IONIC_ELECTRONEGATIVITY_GAP = 1.0  # Pauling units; below it a compound is treated as covalent/metallic


def initial_charges(elements: Sequence[str]) -> List[float]:
    """Starting charges (e) per element, before any training.

    Charges learned from energies and forces alone start at a stationary point if they start at
    zero (the Coulomb energy is quadratic in q), so ionic systems start from formal charges: when
    the elements' Pauling electronegativities span more than
    :data:`IONIC_ELECTRONEGATIVITY_GAP`, the most electronegative element gets its most negative
    common oxidation state and every other element its most positive one (pymatgen's tables);
    per-frame neutralisation then fixes the sum. Otherwise (metals, covalent systems) all start at 0.
    """
    from pymatgen.core import Element

    els = [Element(e) for e in elements]
    chi = [float(e.X) for e in els]
    if len(els) < 2 or max(chi) - min(chi) <= IONIC_ELECTRONEGATIVITY_GAP:
        return [0.0] * len(els)
    anion = chi.index(max(chi))
    out: List[float] = []
    for k, el in enumerate(els):
        states = [s for s in el.common_oxidation_states if (s < 0) == (k == anion) and s != 0]
        out.append(float((min(states) if k == anion else max(states)) if states else 0.0))
    return out


class FixedCharges(torch.nn.Module):
    """One learnable charge per element, optionally shifted to each frame's total charge.

    Args:
        elements: chemical symbols of the model (``species`` indexes this list).
        initial: optional initial charge per element (e); default :func:`initial_charges`.
        neutralize: if True, apply :func:`enforce_total_charge` with ``data["total_charge"]``.

    ``forward(data, n_atoms)`` returns the charges (n_atoms,) e of the first ``n_atoms``
    atoms, reading ``species`` (and ``batch``, ``total_charge`` when ``neutralize``).
    """

    neutralize: bool

    def __init__(self, elements: Sequence[str], initial: Optional[Sequence[float]] = None,
                 neutralize: bool = True) -> None:
        super().__init__()
        values = initial_charges(elements) if initial is None else [float(q) for q in initial]
        if len(values) != len(elements):
            raise UserError(
                f"fixed charges: {len(values)} initial charges for {len(elements)} elements {list(elements)}")
        self.charge = torch.nn.Parameter(torch.tensor(values, dtype=torch.float64))
        self.neutralize = bool(neutralize)

    def forward(self, data: Dict[str, Tensor], n_atoms: int) -> Tensor:
        """Charges (n_atoms,) e."""
        species = data["species"][:n_atoms]
        q = self.charge.to(data["positions"].dtype)[species]
        if self.neutralize:
            q = enforce_total_charge(q, data["batch"][:n_atoms], data["total_charge"])
        return q
