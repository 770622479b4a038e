"""Electronegativity-equilibration (EEQ) atomic partial charges, the charge model of DFT-D4.

Model (Caldeweyher et al., J. Chem. Phys. 150, 154122 (2019), parametrisation "EEQ 2019"),
in atomic units (positions in bohr, energies in Hartree, charges in e). The charges minimise

    E(q) = Σ_i [−X_i q_i + ½ J_ii q_i²] + ½ Σ_{i≠j} q_i q_j A_ij      subject to Σ_i q_i = Q,
    X_i = −χ_i + κ_i √CN_i,     J_ii = η_i + √(2/π) / a_i,     A_ij = erf(γ_ij r_ij) / r_ij,
    γ_ij = 1 / √(a_i² + a_j²)   (Gaussian charges of widths a_i),

so (q, λ) solves the bordered linear system [[A, 1], [1ᵀ, 0]] [q; λ] = [X; Q]. The coordination
number is the error-function count CN_i = Σ_j ½ (1 + erf(−7.5 (r_ij − R_ij) / R_ij)), R_ij = Rcov_i + Rcov_j,
over pairs within ``cn_cutoff`` (25 bohr), capped smoothly at 8:
CN ← log(1 + e⁸) − log(1 + e^{8 − CN}). √CN is evaluated as CN / √(CN + 10⁻¹⁴) (finite gradient
at CN = 0), as the reference program does.

The charges come from :class:`~mlip.physics.qeq.ChargeEquilibration` on the Coulomb engine
(:mod:`mlip.physics.coulomb`): the EEQ model is a charge equilibration with electronegativities
−X_i, hardnesses η_i and Gaussian charges of widths s_i = a_i/√2 (the engine's convention,
erf(r/√(2(s_i² + s_j²)))/r = erf(γ_ij r)/r, Gaussian self term √(2/π)/a_i), in Hartree for
positions in Å (engine prefactor 1 Hartree·bohr). Periodic frames (any ``pbc`` True) sum the
Gaussian-charge interaction over the three cell vectors with the engine's Ewald sum (this is
what the reference program ``multicharge`` does for any periodic system, slabs included, so a
slab's charges see its periodic images along the vacuum direction too); isolated frames sum it
directly. The engine's accuracy (:data:`ACCURACY`, RMS force error in units of the force
between unit charges 1 Å apart, here in Hartree/Å) and real-space cutoff (``cutoff``, at least
:func:`~mlip.physics.coulomb.cutoff_for_width` of the widest Gaussian) keep the sums converged
to ~1e-10. The reference program (multicharge, used by dftd4 4.3.1) instead sums ±2 cells and
±2 reciprocal vectors with its own splitting: on 8-atom cells of ~8 bohr that truncation moves
its charges by up to ~1e-4 e from the converged ones, on cells of ≥ 16 Å by ~2e-8 e.

The charge problem is solved by conjugate gradients (no dense matrix), its derivatives by the
adjoint method (one more solve; :mod:`mlip.physics.qeq`), so memory is O(N · pairs) and time
O(N · pairs + iterations · N log N) instead of the dense O(N²)/O(N³).

Parameters (χ, η, κ, a per element; the D3 covalent radii Rcov): see ``mlip/physics/d4.py``.

TorchScript-compiled: no ``from __future__ import annotations`` here.
"""

import math
from typing import Dict, Tuple

import torch
from torch import Tensor

from mlip import keys
from mlip.physics.coulomb import CoulombEngine, cutoff_for_width
from mlip.physics.pairs import directed_pairs
from mlip.physics.qeq import ChargeEquilibration
from parsers.units import BOHR_CODATA2018

CN_STEEPNESS = 7.5
CN_MAX = 8.0
SQRT_REGULARISER = 1e-14
ACCURACY = 1e-10  # the Coulomb engine's accuracy for the EEQ sums
CUTOFF = 15.0  # Å, real-space cutoff of the EEQ Ewald sum (fastest of 12, 15, 20 Å: D4, 1,728-atom MgO)


def erf_count(r: Tensor, r_cov: Tensor, steepness: float) -> Tensor:
    """The error-function counting function ½ (1 + erf(−k (r − R)/R)) (dimensionless)."""
    return 0.5 * (1.0 + torch.erf(-steepness * (r - r_cov) / r_cov))


class EEQCharges(torch.nn.Module):
    """EEQ 2019 charges of one frame.

    Args (tensors per model species, atomic units):
        chi: (S,) electronegativities χ, Hartree/e. hardness: (S,) η, Hartree/e².
        kcn: (S,) CN scaling κ of χ. rad: (S,) Gaussian charge widths a, bohr.
        rcov: (S,) covalent radii for the CN, bohr.
        cn_cutoff: bohr, pair cutoff of the CN (the reference program's 25 bohr).
        cutoff: Å, real-space cutoff of the Ewald sum (raised to what the widest Gaussian needs).
        accuracy: the Coulomb engine's accuracy (:mod:`mlip.physics.coulomb`).

    ``reach`` (Å): the pairs a caller passes must hold every pair within it (CN and, for
    periodic frames, the Ewald sum's real space).
    """

    cn_cutoff: float
    cn_steepness: float
    cn_max: float
    sqrt_regulariser: float
    bohr: float
    reach: float

    def __init__(self, chi: Tensor, hardness: Tensor, kcn: Tensor, rad: Tensor, rcov: Tensor,
                 cn_cutoff: float = 25.0, cutoff: float = CUTOFF, accuracy: float = ACCURACY) -> None:
        super().__init__()
        self.cn_cutoff = float(cn_cutoff)
        self.cn_steepness, self.cn_max = CN_STEEPNESS, CN_MAX
        self.sqrt_regulariser = SQRT_REGULARISER
        self.bohr = BOHR_CODATA2018
        self.register_buffer("chi", chi.double())
        self.register_buffer("kcn", kcn.double())
        self.register_buffer("hardness", hardness.double())
        self.register_buffer("widths", rad.double() * self.bohr / math.sqrt(2.0))  # Å
        self.register_buffer("rcov", rcov.double())
        widest = float(self.widths.max())
        engine = CoulombEngine(max(float(cutoff), cutoff_for_width(widest, accuracy)), accuracy, "auto",
                               prefactor=self.bohr)
        self.qeq = ChargeEquilibration(engine)
        self.reach = max(self.cn_cutoff * self.bohr, engine.cutoff)

    def coordination_numbers(self, species: Tensor, i: Tensor, j: Tensor, r: Tensor, n_atoms: int) -> Tensor:
        """Capped EEQ coordination numbers (n_atoms,) from directed pairs i, j at distances r (bohr)."""
        near = (r <= self.cn_cutoff).nonzero().squeeze(1)
        i, j, r = i[near], j[near], r[near]
        rcov = self.rcov.to(r.dtype)
        count = erf_count(r, rcov[species[i]] + rcov[species[j]], self.cn_steepness)
        cn = torch.zeros(n_atoms, dtype=r.dtype, device=r.device).index_add(0, i, count)
        cap = math.log1p(math.exp(self.cn_max))
        return cap - torch.nn.functional.softplus(self.cn_max - cn)

    def problem(self, positions: Tensor, species: Tensor, cell: Tensor, pbc: Tensor, i: Tensor, j: Tensor,
                vec: Tensor) -> Tuple[Tensor, Tensor, Tensor, Dict[str, Tensor]]:
        """The frame's charge problem for :class:`ChargeEquilibration`: electronegativities
        (N,) Hartree/e (−X_i), hardnesses (N,) Hartree/e², widths (N,) Å and the system dict,
        differentiable in ``positions`` (N, 3) Å and ``cell`` (3, 3) Å rows. ``pbc`` (3,) bool;
        ``i``, ``j`` (P,), ``vec`` (P, 3) Å: the frame's directed pairs
        (:func:`~mlip.physics.pairs.directed_pairs`) within ``reach``."""
        n_atoms = positions.shape[0]
        r = torch.linalg.vector_norm(vec, dim=1)
        cn = self.coordination_numbers(species, i, j, r / self.bohr, n_atoms)
        sqrt_cn = cn / torch.sqrt(cn + self.sqrt_regulariser)
        chi = self.chi.to(r.dtype)[species] - self.kcn.to(r.dtype)[species] * sqrt_cn
        periodic = pbc.any().expand(3)  # multicharge: a slab's EEQ is periodic in all three directions
        engine = self.qeq.engine
        if bool(pbc.any()) and not bool(pbc.all()):
            i, j, vec = directed_pairs(positions, cell, periodic, engine.cutoff)
            r = torch.linalg.vector_norm(vec, dim=1)
        near = (r < engine.cutoff).nonzero().squeeze(1)
        system = {
            keys.POSITIONS: positions,
            keys.CELL: cell.unsqueeze(0),
            keys.PBC: periodic.unsqueeze(0),
            keys.BATCH: torch.zeros(n_atoms, dtype=torch.long, device=positions.device),
            keys.EDGE_INDEX: torch.stack([i.index_select(0, near), j.index_select(0, near)]),
            keys.EDGE_VEC: vec.index_select(0, near),
        }
        return chi, self.hardness.to(r.dtype)[species], self.widths.to(r.dtype)[species], system

    def forward(self, positions: Tensor, species: Tensor, cell: Tensor, pbc: Tensor, total_charge: Tensor,
                i: Tensor, j: Tensor, vec: Tensor) -> Tensor:
        """Charges (N,) e of one frame, without gradient (:meth:`problem` for the inputs;
        ``total_charge`` () e)."""
        chi, hardness, widths, system = self.problem(positions, species, cell, pbc, i, j, vec)
        return self.qeq(chi, hardness, widths, total_charge.reshape(1), system)
