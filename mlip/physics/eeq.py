"""Electronegativity-equilibration (EEQ) atomic partial charges, the charge model of DFT-D4.

Model (Caldeweyher et al., J. Chem. Phys. 150, 154122 (2019), parametrisation "EEQ 2019"),
in atomic units (positions in bohr, energies in Hartree, charges in e). The charges minimise

    E(q) = Σ_i [−X_i q_i + ½ J_ii q_i²] + ½ Σ_{i≠j} q_i q_j A_ij      subject to Σ_i q_i = Q,
    X_i = −χ_i + κ_i √CN_i,     J_ii = η_i + √(2/π) / a_i,     A_ij = erf(γ_ij r_ij) / r_ij,
    γ_ij = 1 / √(a_i² + a_j²)   (Gaussian charges of widths a_i),

so (q, λ) solves the bordered linear system [[A, 1], [1ᵀ, 0]] [q; λ] = [X; Q]
(``torch.linalg.solve``; autograd gives ∂q/∂x and ∂q/∂cell). The coordination number is the
error-function count CN_i = Σ_j ½ (1 + erf(−7.5 (r_ij − R_ij) / R_ij)), R_ij = Rcov_i + Rcov_j,
over pairs within ``cn_cutoff`` (25 bohr), capped smoothly at 8:
CN ← log(1 + e⁸) − log(1 + e^{8 − CN}). √CN is evaluated as CN / √(CN + 10⁻¹⁴) (finite gradient
at CN = 0), as the reference program does.

Periodic frames (any ``pbc`` True) use an Ewald sum of the Gaussian-charge interaction over the
three cell vectors (this is what the reference program ``multicharge`` does for any periodic
system, slabs included, so a slab's charges see its periodic images along the vacuum
direction too):

    A_ij = Σ_L' (erf(γ_ij r) − erf(ε r)) / r |_{r = |r_ij + L|}
           + (4π/V) Σ_{k≠0} e^{−k²/4ε²} / k² cos(k·r_ij)   [− 2ε/√π if i = j]

(the k = 0 term is a constant shift of A, which the charge constraint absorbs). The splitting
ε = min(√π (N/V²)^{1/6}, min γ) and the cutoffs r < 6/ε, |k| < 12 ε converge both sums to
~1e-15 relative (terms e^{−36}). The reference program (multicharge, used by dftd4 4.3.1)
instead sums ±2 cells and ±2 reciprocal vectors with its own ε: on 8-atom cells of ~8 bohr
that truncation moves its charges by up to ~1e-4 e from the converged ones (reproduced to
1e-12 by emulating its truncation), on cells of ≥ 16 Å by ~2e-8 e.

Parameters (χ, η, κ, a per element; the D3 covalent radii Rcov): see ``mlip/physics/d4.py``.

Not on the Coulomb engine (:mod:`mlip.physics.coulomb`), for now: A_ij has a per-pair Gaussian
damping and q comes from a dense bordered solve (O(N²) memory, O(N³) time; the solve dominates
beyond ~2,000 atoms). The engine fits as the matrix-vector product of an iterative solve,
A q = φ(q)/k_e − Σ_j erfc(γ_ij r_ij)/r_ij q_j + diag(J − 2ε/√π) q (conjugate gradient on the
charge-constrained system), but that needs (i) the erfc correction over pairs out to ~6/γ_min
(~25 bohr, longer than any model's edges; D4 gets no edges and searches its own images), and
(ii) forces through the solve by an adjoint solve (implicit differentiation) instead of
autograd through ``torch.linalg.solve``; the dftd4 reference tests need charges to 5e-8 e.

TorchScript-compiled: no ``from __future__ import annotations`` here.
"""

import math
from typing import Tuple

import torch
from torch import Tensor

from mlip.physics.images import image_pairs, image_shifts

CN_STEEPNESS = 7.5
CN_MAX = 8.0
SQRT_REGULARISER = 1e-14
EWALD_EXPONENT = 6.0  # real and reciprocal terms are cut where they fall to e^{−36}


def erf_count(r: Tensor, r_cov: Tensor, steepness: float) -> Tensor:
    """The error-function counting function ½ (1 + erf(−k (r − R)/R)) (dimensionless)."""
    return 0.5 * (1.0 + torch.erf(-steepness * (r - r_cov) / r_cov))


class EEQCharges(torch.nn.Module):
    """EEQ 2019 charges of one frame.

    Args (all tensors per model species, atomic units):
        chi: (S,) electronegativities χ, Hartree/e. hardness: (S,) η, Hartree/e².
        kcn: (S,) CN scaling κ of χ. rad: (S,) Gaussian charge widths a, bohr.
        rcov: (S,) covalent radii for the CN, bohr.
        cn_cutoff: bohr, pair cutoff of the CN (the reference program's 25 bohr).
    """

    cn_cutoff: float
    cn_steepness: float
    cn_max: float
    sqrt_regulariser: float
    ewald_exponent: float

    def __init__(self, chi: Tensor, hardness: Tensor, kcn: Tensor, rad: Tensor, rcov: Tensor,
                 cn_cutoff: float = 25.0) -> None:
        super().__init__()
        self.cn_cutoff = float(cn_cutoff)
        self.cn_steepness, self.cn_max = CN_STEEPNESS, CN_MAX
        self.sqrt_regulariser, self.ewald_exponent = SQRT_REGULARISER, EWALD_EXPONENT
        self.register_buffer("chi", chi.double())
        self.register_buffer("kcn", kcn.double())
        self.register_buffer("rad", rad.double())
        self.register_buffer("self_energy", hardness.double() + math.sqrt(2.0 / math.pi) / rad.double())
        self.register_buffer("rcov", rcov.double())

    def coordination_numbers(self, species: Tensor, i: Tensor, j: Tensor, r: Tensor, n_atoms: int) -> Tensor:
        """Capped EEQ coordination numbers (n_atoms,) from directed pairs i, j at distances r (bohr)."""
        near = (r <= self.cn_cutoff).nonzero().squeeze(1)
        i, j, r = i[near], j[near], r[near]
        rcov = self.rcov.to(r.dtype)
        count = erf_count(r, rcov[species[i]] + rcov[species[j]], self.cn_steepness)
        cn = torch.zeros(n_atoms, dtype=r.dtype, device=r.device).index_add(0, i, count)
        cap = math.log1p(math.exp(self.cn_max))
        return cap - torch.nn.functional.softplus(self.cn_max - cn)

    def forward(self, positions: Tensor, species: Tensor, cell: Tensor, pbc: Tensor,
                total_charge: Tensor) -> Tensor:
        """Charges (N,) e of one frame: positions (N, 3) bohr, species (N,), cell (3, 3) bohr rows,
        pbc (3,) bool, total_charge () e."""
        n_atoms = positions.shape[0]
        i, j, shifts = image_pairs(positions, cell, pbc, self.cn_cutoff, n_atoms)
        r = (positions[j] - positions[i] + shifts.to(positions.dtype) @ cell).square().sum(dim=1).sqrt()
        cn = self.coordination_numbers(species, i, j, r, n_atoms)
        sqrt_cn = cn / torch.sqrt(cn + self.sqrt_regulariser)
        x = -self.chi.to(r.dtype)[species] + self.kcn.to(r.dtype)[species] * sqrt_cn
        if bool(pbc.any()):
            a = self.ewald_matrix(positions, species, cell)
        else:
            a = self.direct_matrix(positions, species)
        ones = torch.ones(n_atoms, 1, dtype=a.dtype, device=a.device)
        corner = torch.zeros(1, 1, dtype=a.dtype, device=a.device)
        bordered = torch.cat([torch.cat([a, ones], dim=1), torch.cat([ones.T, corner], dim=1)], dim=0)
        rhs = torch.cat([x, total_charge.to(x.dtype).reshape(1)])
        return torch.linalg.solve(bordered, rhs)[:n_atoms]

    def gamma(self, species: Tensor) -> Tensor:
        """γ_ij = 1/√(a_i² + a_j²) (N, N), 1/bohr."""
        rad = self.rad[species]
        return torch.rsqrt(rad[:, None] ** 2 + rad[None, :] ** 2)

    def direct_matrix(self, positions: Tensor, species: Tensor) -> Tensor:
        """A (N, N) in Hartree/e² of an isolated frame."""
        n_atoms = positions.shape[0]
        eye = torch.eye(n_atoms, dtype=torch.bool, device=positions.device)
        diff = positions[:, None, :] - positions[None, :, :]
        # unit distance on the diagonal keeps sqrt/erf finite (and their gradients); replaced below
        r = torch.where(eye, torch.ones_like(diff[..., 0]), diff.square().sum(dim=-1)).sqrt()
        a = torch.erf(self.gamma(species).to(r.dtype) * r) / r
        return torch.where(eye, torch.diag(self.self_energy.to(r.dtype)[species]), a)

    def ewald_parameters(self, species: Tensor, cell: Tensor) -> Tuple[float, float, float]:
        """(ε 1/bohr, real-space cutoff bohr, reciprocal cutoff 1/bohr) of one periodic frame."""
        volume = float(torch.linalg.det(cell.detach().double()).abs())
        n_atoms = species.shape[0]
        gamma_min = float(self.gamma(species).min())
        eps = min(math.sqrt(math.pi) * (n_atoms / volume**2) ** (1.0 / 6.0), gamma_min)
        return eps, self.ewald_exponent / eps, 2.0 * self.ewald_exponent * eps

    def ewald_matrix(self, positions: Tensor, species: Tensor, cell: Tensor) -> Tensor:
        """A (N, N) in Hartree/e² of a frame periodic along all three cell vectors."""
        n_atoms = positions.shape[0]
        dtype = positions.dtype
        eps, r_cut, k_cut = self.ewald_parameters(species, cell)
        gamma = self.gamma(species).to(dtype)
        # real space: every image pair (i, j, L) with 0 < |r_ij + L| <= r_cut, self images included
        periodic = torch.ones(3, dtype=torch.bool, device=positions.device)
        i, j, shifts = image_pairs(positions, cell, periodic, r_cut, n_atoms)
        r = (positions[j] - positions[i] + shifts.to(dtype) @ cell).square().sum(dim=1).sqrt()
        term = (torch.erf(gamma[i, j] * r) - torch.erf(eps * r)) / r
        term = torch.where(r <= r_cut, term, torch.zeros_like(term))
        a = torch.zeros(n_atoms * n_atoms, dtype=dtype, device=positions.device)
        a = a.index_add(0, i * n_atoms + j, term).reshape(n_atoms, n_atoms)
        # reciprocal space: k = 2π m · cell⁻ᵀ over a half space (k and −k give equal cosines)
        recip = 2.0 * math.pi * torch.linalg.inv(cell).T
        with torch.no_grad():
            lengths = cell.detach().square().sum(dim=1).sqrt()
            m_max = torch.ceil(lengths * k_cut / (2.0 * math.pi)).long()
            m = image_shifts(m_max).to(dtype)
            half = (m[:, 0] > 0) | ((m[:, 0] == 0) & ((m[:, 1] > 0) | ((m[:, 1] == 0) & (m[:, 2] > 0))))
            m = m[half]
            m = m[(m @ recip.detach()).square().sum(dim=1) <= k_cut * k_cut]
        k = m @ recip
        k2 = k.square().sum(dim=1)
        volume = torch.linalg.det(cell).abs()
        weight = (8.0 * math.pi / volume) * torch.exp(-k2 / (4.0 * eps * eps)) / k2  # ×2: half space
        phase = positions @ k.T  # (N, K)
        cos, sin = torch.cos(phase), torch.sin(phase)
        a = a + (cos * weight) @ cos.T + (sin * weight) @ sin.T
        diagonal = self.self_energy.to(dtype)[species] - 2.0 * eps / math.sqrt(math.pi)
        return a + torch.diag(diagonal)
