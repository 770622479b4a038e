"""The names of the fields of a batch: one vocabulary for data, model and physics terms.

A batch is a ``Dict[str, Tensor]`` of B frames with N atoms and E directed edges in all.
:func:`mlip.batching.collate` writes it, :meth:`mlip.model.Potential.compute` reads it and
returns its outputs under the names below, and the physics terms get the same dict (with the
strained positions and cell, ``edge_vec`` and ``charges`` added). Use the names from this
module (``keys.POSITIONS``), in TorchScript code too, never the strings.

Units are LAMMPS ``metal``; sign conventions are stated in ``docs/architecture.md``.

Inputs (model):

=================  ==========  =====  ==============================================
name               shape       unit   meaning
=================  ==========  =====  ==============================================
``positions``      (N, 3)      Å      Cartesian positions, frame by frame
``species``        (N,) int64         index into the model's element list
``edge_index``     (2, E) i64         directed pairs (i, j), both directions
``edge_shift``     (E, 3)      Å      periodic image shift: r_ij = x_j − x_i + shift
``cell``           (B, 3, 3)   Å      lattice vectors as rows
``pbc``            (B, 3) bool        periodic directions
``batch``          (N,) int64         frame of each atom
``total_charge``   (B,)        e      net charge of each frame (0 if absent)
=================  ==========  =====  ==============================================

Derived inside the model: ``edge_vec`` (E, 3) Å, r_ij; ``charges`` (N,) e when the model
has charges; ``features`` (n_local, F), the normalised descriptors the networks see (for terms
with learned inputs, :mod:`mlip.physics.ewald_mp`).

Labels (training batches; NaN where a frame lacks the label): ``energy`` (B,) eV,
``forces`` (N, 3) eV/Å, ``stress`` (B, 3, 3) eV/Å³, ``charges`` (N,) e, and the per-frame
loss weights ``energy_weight`` and ``force_weight`` (B,); ``n_atoms`` (B,) int64.

Outputs (:meth:`~mlip.model.Potential.compute`): ``energy`` (B,) eV, ``atomic_energies``
(N,) eV, ``forces`` (N, 3) eV/Å, ``virial`` (B, 3, 3) eV, ``stress`` (B, 3, 3) eV/Å³
(−virial/V; NaN for frames that are not periodic in all three directions), ``charges``
(N,) e. The deployed ``forward`` of a short-range model also gives, when asked (LAMMPS'
per-atom virials), ``edge_forces`` (E, 3) eV/Å: F_e = −∂E/∂r_ij, the force on j of edge (i, j).
``extrapolation`` (n_local,): how far each atom's descriptors lie beyond the training range
(:mod:`mlip.physics.extrapolation`), for models that recorded it.

Committee models (:mod:`mlip.model.committee`, K members) also give ``member_energy`` (B, K) eV
and ``energy_deviation`` (B,) eV/atom, and when per-member derivatives are asked for,
``member_forces`` (K, N, 3) eV/Å, ``member_virial`` (K, B, 3, 3) eV, ``force_deviation``
(n_local,) eV/Å and ``max_force_deviation`` (B,) eV/Å. A single model gives none of them.
"""

from typing import Final

POSITIONS: Final[str] = "positions"
SPECIES: Final[str] = "species"
EDGE_INDEX: Final[str] = "edge_index"
EDGE_SHIFT: Final[str] = "edge_shift"
EDGE_VEC: Final[str] = "edge_vec"
FEATURES: Final[str] = "features"
CELL: Final[str] = "cell"
PBC: Final[str] = "pbc"
BATCH: Final[str] = "batch"
TOTAL_CHARGE: Final[str] = "total_charge"
N_ATOMS: Final[str] = "n_atoms"

ENERGY: Final[str] = "energy"
ATOMIC_ENERGIES: Final[str] = "atomic_energies"
FORCES: Final[str] = "forces"
EDGE_FORCES: Final[str] = "edge_forces"
VIRIAL: Final[str] = "virial"
STRESS: Final[str] = "stress"
CHARGES: Final[str] = "charges"
EXTRAPOLATION: Final[str] = "extrapolation"
MEMBER_ENERGY: Final[str] = "member_energy"
MEMBER_FORCES: Final[str] = "member_forces"
MEMBER_VIRIAL: Final[str] = "member_virial"
ENERGY_DEVIATION: Final[str] = "energy_deviation"
FORCE_DEVIATION: Final[str] = "force_deviation"
MAX_FORCE_DEVIATION: Final[str] = "max_force_deviation"

ENERGY_WEIGHT: Final[str] = "energy_weight"
FORCE_WEIGHT: Final[str] = "force_weight"
