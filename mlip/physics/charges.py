"""Atomic charges for the electrostatics: the total-charge constraint and fixed per-element charges."""

from typing import Dict, Optional, Sequence

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


class FixedCharges(torch.nn.Module):
    """One learnable charge per element, optionally shifted to each frame's total charge.

    Args:
        elements: chemical symbols of the model (``species`` indexes this list).
        initial: optional initial charge per element (e), default 0.
        neutralize: if True, apply :func:`enforce_total_charge` with ``data["total_charge"]``.

    ``forward(data, n_atoms)`` returns the charges (n_atoms,) e of the first ``n_atoms``
    atoms, reading ``species`` (and ``batch``, ``total_charge`` when ``neutralize``).
    """

    neutralize: bool

    def __init__(self, elements: Sequence[str], initial: Optional[Sequence[float]] = None,
                 neutralize: bool = True) -> None:
        super().__init__()
        values = [0.0] * len(elements) if initial is None else [float(q) for q in initial]
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
