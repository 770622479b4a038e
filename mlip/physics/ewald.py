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

``train_accuracy`` (optional) is the accuracy of the sum while the term is in training mode
(``module.train()``, as :mod:`mlip.train` trains), with the same error estimates; the exported
model (eval mode) keeps ``accuracy``. Training differentiates the sum twice per step, and on small
cells the explicit k sum dominates the cost, its number of k vectors growing as about log(1/ε)³:
on the NaCl cells of ``benchmarks/long_range.py`` (64 ions, 5 Å real space) 1e-5 takes 2,000 k
vectors per 1,430 Å³ where 1e-6 takes 3,700. Measured there against the sum at 1e-8: at 1e-5 the
energy is off by at most 0.0025 meV/atom and the forces by 0.012 meV/Å RMS; at 1e-4 by 0.08 meV/atom
(bulk and slabs differently, as large as the errors a long-range model removes) and 0.21 meV/Å.
Unset, training uses ``accuracy``.

Against LAMMPS (``coul/long`` with ``pair_modify table 0`` + ``kspace_style ewald``) the
``"ewald"`` mode agrees to ~5e-7 relative in energies, per-atom energies, forces and virial
(LAMMPS' polynomial erfc is the floor; pymatgen's exact Ewald agrees to 1e-11); the ``"pme"``
mode agrees with ``kspace_style pppm`` to the requested accuracy. For a charged cell LAMMPS
includes E_bg in the energy but not in its virial; the virial here is the exact strain
derivative, E_bg·I more than LAMMPS'.
"""

from typing import Dict, Optional

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
        train_accuracy: the accuracy in training mode (module docstring); None: ``accuracy``.

    Reads ``positions``, ``charges``, ``cell``, ``pbc``, ``batch``, ``edge_index`` and ``edge_vec``
    of atoms ``[:n_local]`` (a long-range model gets whole frames without ghost atoms).
    Attributes: ``engine`` (at ``accuracy``), ``train_engine`` (at ``train_accuracy``, None when
    that is unset or equal: the state dict then has the engine's entries only).
    """

    def __init__(self, accuracy: float = 1e-4, mode: str = "auto", cutoff: float = DEFAULT_CUTOFF,
                 train_accuracy: Optional[float] = None) -> None:
        for key, value in (("accuracy", accuracy), ("train_accuracy", train_accuracy)):
            if value is not None and not 0.0 < value < 1.0:
                raise UserError(f"ewald: {key} must lie in (0, 1), got {value}")
        super().__init__("ewald", cutoff=cutoff, long_range=True, needs_charges=True)
        self.engine = CoulombEngine(cutoff, accuracy, mode)
        self.train_engine = None
        if train_accuracy is not None and float(train_accuracy) != float(accuracy):
            self.train_engine = CoulombEngine(cutoff, train_accuracy, mode)

    def forward(self, data: Dict[str, Tensor], n_local: int) -> Tensor:
        """Per-atom Coulomb energies (n_local,) eV."""
        charges = data["charges"][:n_local]
        positions = data["positions"][:n_local]
        batch = data["batch"][:n_local]
        cell, pbc, edge_index, edge_vec = data["cell"], data["pbc"], data["edge_index"], data["edge_vec"]
        if self.training and self.train_engine is not None:
            _, phi = self.train_engine(charges, positions, cell, pbc, batch, edge_index, edge_vec)
        else:
            _, phi = self.engine(charges, positions, cell, pbc, batch, edge_index, edge_vec)
        return 0.5 * charges * phi
