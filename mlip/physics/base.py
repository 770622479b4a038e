"""The interface every physics term (ZBL, Ewald, D3, lattice sums, ...) implements.

A term adds an energy on top of the per-element networks. It sees the
strained geometry, so forces (−∂E/∂x) and the virial (−∂E/∂ε) of the whole
model come from one autograd pass; a term never computes its own forces.
See ``docs/architecture.md`` for the keys of ``data``.
"""


from typing import Dict

import torch
from torch import Tensor


class PhysicsTerm(torch.nn.Module):
    """Base class of physics terms.

    Attributes (TorchScript constants for the deployed model):
        name: short name used in configs and metadata (``"zbl"``, ``"ewald"`` ...).
        cutoff: Å, the pair range it needs from the model's edges (0 for none).
        long_range: True if it needs the whole periodic system (``cell``) rather than edges.
        needs_charges: True if it reads ``data["charges"]``.
        lammps_overlay: True if LAMMPS adds this term itself (a ``pair_style hybrid/overlay``
            partner of ``mlip``, written by :func:`mlip.export.export_model`): the deployed
            model's LAMMPS path (``forward``) leaves it out, ``compute`` keeps it. False unless
            set at export.
    """

    name: str
    cutoff: float
    long_range: bool
    needs_charges: bool
    lammps_overlay: bool

    def __init__(self, name: str, cutoff: float = 0.0, long_range: bool = False,
                 needs_charges: bool = False) -> None:
        super().__init__()
        self.name = name
        self.cutoff = float(cutoff)
        self.long_range = bool(long_range)
        self.needs_charges = bool(needs_charges)
        self.lammps_overlay = False

    def forward(self, data: Dict[str, Tensor], n_local: int) -> Tensor:
        """Per-atom energies of the local atoms, shape (n_local,), eV."""
        raise NotImplementedError
