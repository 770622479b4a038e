"""PotNet "complete interatomic potential" features: per-atom lattice sums by neighbour element.

After Lin et al., "Efficient approximations of complete interatomic potentials for crystal
property prediction" (PotNet, ICML 2023). For a center atom i of a periodic frame and a
neighbour element s (the sublattice of all atoms j of element s and all their images
L = n·cell; the prime omits j = i at L = 0), with r = |x_j + L − x_i|:

    Coulomb  C_i^s = Σ'_{j∈s,L} 1/r  − (uniform background of density N_s/V)   1/Å
    London   D_i^s = Σ'_{j∈s,L} 1/r⁶                                             1/Å⁶
    Pauli    P_i^s = Σ'_{j∈s,L} exp(−α r)                                        (dimensionless)

C_i^s is the Ewald potential at x_i of unit point charges on sublattice s plus a uniform
neutralising background of total charge −N_s per cell, without i's own charge: the
conditionally convergent sum made unique by the background (tin-foil boundary). With
charges q_s per element, ½ k_e Σ_i q_{s_i} Σ_s q_s C_i^s is exactly the Ewald energy of the
frame including LAMMPS' background term −π Q²/(2 V η²)·k_e for charged cells; per atom it is
LAMMPS' ``compute pe/atom`` split.

Evaluation, with splitting parameter η = √π (N/V²)^{1/6} (1/Å) and precision p (below):

    C_i^s = Σ'_{r<rc} erfc(ηr)/r + (4π/V) Σ_{0<|k|<kc} e^{−k²/4η²}/k² Σ_{j∈s} cos(k·(x_j−x_i))
            − δ_{s,s_i} 2η/√π − π N_s/(V η²)
    D_i^s = Σ'_{r<rc} Γ(3, η²r²)/(2 r⁶) + (1/V) Σ_{|k|<kc} F(k) Σ_{j∈s} cos(k·(x_j−x_i)) − δ_{s,s_i} η⁶/6
            Γ(3, x)/2 = e^{−x}(1 + x + x²/2),
            F(k) = (π^{3/2} η³/3) [(1 − 2b²) e^{−b²} + 2√π b³ erfc(b)],  b = k/(2η),  F(0) = π^{3/2}η³/3
    P_i^s = Σ'_{r<rp} exp(−α r)

D's split comes from 1/r⁶ = ½∫₀^∞ t² e^{−r²t} dt cut at t = η²: the short part is the
incomplete gamma term, the smooth part's Fourier transform is F(k) (k = 0 included: the 1/r⁶
sum converges absolutely, so no background). The Pauli sum converges absolutely and
exponentially; a plain real-space sum to rp is its (trivial) split.

Cutoffs and error bounds (per center and element; the neglected tails replaced by integrals
over a uniform density ρ_s = N_s/V, the Kolafa–Perram approximation; |Σ_j cos| ≤ N_s):
rc = p/η and kc = 2ηp, with p the smallest value with e^{−p²}(1 + p² + p⁴/2) ≤ ``tolerance``
(the size of the last real-space London term relative to its leading term), then

    |ΔC_real| ≤ 2√π ρ_s e^{−p²} / (η² p)              |ΔC_recip| ≤ 2 N_s η e^{−p²} / (π p)
    |ΔD_real| ≤ 2π ρ_s η³ (½ + 1/p² + 1/p⁴) e^{−p²}/p   |ΔD_recip| ≤ N_s η⁶ e^{−p²} / (√π p)
    |ΔP| ≤ 4π ρ (rp²/α + 2rp/α² + 2/α³) e^{−α rp} ≤ tolerance   (rp solved for, ρ = N/V)

The default ``tolerance`` 1e-12 gives p = 5.836, e^{−p²} = 1.6e-15; for the test cells (six atoms
in 68.6 Å³, η = 0.58 Å⁻¹) every bound above is below 1e-15 (absolute). The tests check D and P
against brute-force real-space sums, and C against LAMMPS' Ewald, ``mlip.physics.Ewald`` and
the NaCl Madelung constant.

Not on the Coulomb engine (:mod:`mlip.physics.coulomb`): the Coulomb channels are S sublattice
potentials (one charge channel per element), wanted to ~1e-12 with a splitting η chosen per
cell, and the features get no edges (``Potential.lattice_sums`` passes positions, species and
cell), so this module needs its own image search for the London and Pauli sums anyway; the
engine (one channel, σ fixed by the model's edge cutoff) would replace only the reciprocal
Coulomb sum below.

Input convention (not the edge-based descriptor signature, since lattice sums need the cell):
``forward(positions (N, 3) Å, species (N,) int64, cell (3, 3) Å rows, n_centers) ->
(n_centers, 3 · n_species)`` columns [C^0..C^{S−1}, D^0.., P^0..]. All N atoms are the atoms
of one fully periodic cell (no ghost atoms); the first ``n_centers`` are the centers.
Differentiable in positions and cell (pair and k-vector sets are selected without gradient).

TorchScript-compiled: no ``from __future__ import annotations`` here.
"""

import math

import torch
from torch import Tensor

from mlip.errors import UserError
from mlip.physics.images import image_pairs, image_shifts


def precision_for(tolerance: float) -> float:
    """Smallest p (to 1e-3) with e^{−p²}(1 + p² + p⁴/2) ≤ tolerance."""
    p = 1.0
    while math.exp(-p * p) * (1.0 + p * p + 0.5 * p**4) > tolerance:
        p += 1e-3
    return p


class PotNetFeatures(torch.nn.Module):
    """Coulomb, London and Pauli lattice sums per neighbour element (see the module docstring).

    Args:
        n_species: number of elements of the model.
        alpha: Pauli exponent α, 1/Å (default 3.0, a Born–Mayer length of 0.33 Å).
        tolerance: sets the Ewald precision p and the Pauli cutoff (module docstring), default 1e-12.

    Attributes: ``cutoff`` 0.0 (long-range: the features need the cell, not edges),
    ``n_features`` = 3 · n_species.
    """

    cutoff: float
    n_features: int
    n_species: int
    alpha: float
    tolerance: float
    precision: float

    def __init__(self, n_species: int, alpha: float = 3.0, tolerance: float = 1e-12) -> None:
        super().__init__()
        if n_species < 1:
            raise UserError(f"potnet: n_species must be >= 1, got {n_species}")
        if alpha <= 0.0:
            raise UserError(f"potnet: alpha must be > 0 (1/Å), got {alpha}")
        if not 0.0 < tolerance < 1.0:
            raise UserError(f"potnet: tolerance must be in (0, 1), got {tolerance}")
        self.cutoff = 0.0
        self.n_species = int(n_species)
        self.n_features = 3 * self.n_species
        self.alpha = float(alpha)
        self.tolerance = float(tolerance)
        self.precision = precision_for(tolerance)

    def extra_repr(self) -> str:
        return (f"n_species={self.n_species}, alpha={self.alpha}, tolerance={self.tolerance}, "
                f"n_features={self.n_features}")

    def pauli_cutoff(self, density: float) -> float:
        """rp (Å) with 4πρ (rp²/α + 2rp/α² + 2/α³) e^{−α rp} ≤ tolerance, ρ = ``density`` 1/Å³."""
        a = self.alpha
        rp = 1.0 / a
        for _ in range(50):
            tail = 4.0 * math.pi * density * (rp * rp / a + 2.0 * rp / (a * a) + 2.0 / (a * a * a))
            rp = max(rp, math.log(tail / self.tolerance) / a)
        return rp

    def forward(self, positions: Tensor, species: Tensor, cell: Tensor, n_centers: int) -> Tensor:
        dtype = positions.dtype
        n_atoms = positions.shape[0]
        n_sp = self.n_species
        volume = torch.abs(torch.linalg.det(cell))
        v = float(volume)
        eta = math.sqrt(math.pi) * (n_atoms / (v * v)) ** (1.0 / 6.0)
        p = self.precision
        rc = p / eta
        kc = 2.0 * eta * p
        rp = self.pauli_cutoff(n_atoms / v)
        onehot = torch.nn.functional.one_hot(species, n_sp).to(dtype)  # (N, S)
        counts = onehot.sum(dim=0)  # (S,)

        # real space
        pbc = torch.ones(3, dtype=torch.bool, device=positions.device)
        i, j, shifts = image_pairs(positions, cell, pbc, max(rc, rp), n_centers)
        vec = positions[j] - positions[i] + shifts.to(dtype) @ cell
        r = vec.square().sum(dim=1).sqrt()
        x = eta * eta * r * r
        inside = r < rc
        zero = torch.zeros_like(r)
        coul = torch.where(inside, torch.erfc(eta * r) / r, zero)
        r6 = r * r * r * r * r * r
        lond = torch.where(inside, torch.exp(-x) * (1.0 + x + 0.5 * x * x) / r6, zero)
        pauli = torch.where(r < rp, torch.exp(-self.alpha * r), zero)
        slot = i * n_sp + species[j]
        real = torch.zeros(3, n_centers * n_sp, dtype=dtype, device=positions.device)
        real = real.index_add(1, slot, torch.stack([coul, lond, pauli]))
        real = real.view(3, n_centers, n_sp)

        # reciprocal space: half of the k vectors (m > 0 lexicographically), counted twice
        recip_cell = 2.0 * math.pi * torch.linalg.inv(cell).T  # rows b_k, a_i · b_k = 2π δ_ik
        with torch.no_grad():
            lengths = cell.detach().square().sum(dim=1).sqrt()
            m = image_shifts(torch.ceil(lengths * kc / (2.0 * math.pi)).long())
            half = (m[:, 0] > 0) | ((m[:, 0] == 0) & (m[:, 1] > 0)) | ((m[:, 0] == 0) & (m[:, 1] == 0)
                                                                        & (m[:, 2] > 0))
            m = m[half]
            knorm = (m.to(dtype) @ recip_cell.detach()).square().sum(dim=1).sqrt()
            m = m[knorm < kc]
        k = m.to(dtype) @ recip_cell  # (K, 3)
        k2 = k.square().sum(dim=1)
        b = k2.sqrt() / (2.0 * eta)
        phase = positions @ k.T  # (N, K)
        cos_p, sin_p = torch.cos(phase), torch.sin(phase)
        cos_s, sin_s = cos_p.T @ onehot, sin_p.T @ onehot  # (K, S)
        # Σ_{j∈s} cos(k·(x_j − x_i)) = cos(k·x_i) C_s(k) + sin(k·x_i) S_s(k)
        pref_coul = 2.0 * (4.0 * math.pi / volume) * torch.exp(-b * b) / k2
        pref_lond = 2.0 / volume * (math.pi**1.5 * eta**3 / 3.0) * (
            (1.0 - 2.0 * b * b) * torch.exp(-b * b) + 2.0 * math.sqrt(math.pi) * b**3 * torch.erfc(b))
        c_i, s_i = cos_p[:n_centers], sin_p[:n_centers]
        recip_coul = c_i @ (pref_coul[:, None] * cos_s) + s_i @ (pref_coul[:, None] * sin_s)
        recip_lond = c_i @ (pref_lond[:, None] * cos_s) + s_i @ (pref_lond[:, None] * sin_s)

        own = onehot[:n_centers]
        coulomb = (real[0] + recip_coul - own * (2.0 * eta / math.sqrt(math.pi))
                   - math.pi * counts / (volume * eta * eta))
        london = (real[1] + recip_lond + (math.pi**1.5 * eta**3 / 3.0) * counts / volume
                  - own * (eta**6 / 6.0))
        return torch.cat([coulomb, london, real[2]], dim=1)
