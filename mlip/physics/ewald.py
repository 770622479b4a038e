"""Coulomb energy of the model's charges, on the Coulomb engine (:mod:`mlip.physics.coulomb`).

Per-atom energies E_i = ½ q_i φ_i with φ_i = ∂E/∂q_i the engine's potential (eV/e): for a
periodic frame (``pbc`` all True, any triclinic cell) the Ewald sum with the neutralising
background of a charged cell, E_i^bg = −k_e π q_i Q / (2 V α²), exactly as LAMMPS ``compute
pe/atom`` reports for ``pair_style coul/long`` + ``kspace_style ewald``; for an isolated frame
(``pbc`` all False) the direct sum over all pairs; mixed periodicity raises an error.
k_e = 14.399645 eV·Å (LAMMPS metal ``qqr2e``).

The real-space part runs over the model's edges up to ``cutoff`` (default 5 Å, the smallest
default descriptor cutoff; a larger one widens the model's neighbour cutoff); the reciprocal
part is torch-pme's PME or explicit Ewald sum (by default whichever is cheaper per frame).
``accuracy`` is the RMS force error per atom in units of k_e e²/Å² (LAMMPS' ``kspace_style ...
accuracy``); the engine's docstring gives the error estimates that turn it into the smearing,
k cutoff and mesh spacing.

Against LAMMPS (``coul/long`` with ``pair_modify table 0`` + ``kspace_style ewald``) the
``"ewald"`` mode agrees to ~5e-7 relative in energies, per-atom energies, forces and virial
(LAMMPS' polynomial erfc is the floor; pymatgen's exact Ewald agrees to 1e-11); the ``"pme"``
mode agrees with ``kspace_style pppm`` to the requested accuracy. For a charged cell LAMMPS
includes E_bg in the energy but not in its virial; the virial here is the exact strain
derivative, E_bg·I more than LAMMPS'.
"""

from typing import Dict

from torch import Tensor

from mlip.errors import UserError
from mlip.physics.base import PhysicsTerm
from mlip.physics.coulomb import CoulombEngine

DEFAULT_CUTOFF = 5.0  # Å, real-space range (≤ every default descriptor cutoff)


class Ewald(PhysicsTerm):
    """Electrostatic energy of the model's charges, per-atom energies in eV.

    Args:
        accuracy: RMS force error per atom in units of k_e e²/Å² (see :mod:`mlip.physics.coulomb`).
        mode: ``"auto"`` (default: per frame the cheaper of the two), ``"pme"`` (O(N log N)) or
            ``"ewald"`` (explicit k vectors; smooth under cell changes, for tests and small cells).
        cutoff: Å, real-space range over the model's edges (the model's cutoff is at least this).

    Reads ``positions``, ``charges``, ``cell``, ``pbc``, ``batch``, ``edge_index`` and ``edge_vec``
    of atoms ``[:n_local]`` (a long-range model gets whole frames without ghost atoms).
    """

    def __init__(self, accuracy: float = 1e-4, mode: str = "auto", cutoff: float = DEFAULT_CUTOFF) -> None:
        if not 0.0 < accuracy < 1.0:
            raise UserError(f"ewald: accuracy must lie in (0, 1), got {accuracy}")
        super().__init__("ewald", cutoff=cutoff, long_range=True, needs_charges=True)
        self.engine = CoulombEngine(cutoff, accuracy, mode)

    def forward(self, data: Dict[str, Tensor], n_local: int) -> Tensor:
        """Per-atom Coulomb energies (n_local,) eV."""
        charges = data["charges"][:n_local]
        _, phi = self.engine(charges, data["positions"][:n_local], data["cell"], data["pbc"],
                             data["batch"][:n_local], data["edge_index"], data["edge_vec"])
        return 0.5 * charges * phi
