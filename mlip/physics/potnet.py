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

A descriptor with the batch: the features follow the descriptor protocol of
:class:`fingerprints.DescriptorSet` (``cutoff``, ``n_features``, ``block_sizes``, ``long_range``
and ``forward(species, edge_index, edge_vec, n_centers, data)``), with the batch dict ``data``
(``positions`` (N, 3) Å, ``cell`` (B, 3, 3) Å rows, ``pbc`` (B, 3), ``batch`` (N,)) as the
fifth argument, since the reciprocal sums need the cell and every atom of a frame. The frames
must be whole and periodic in all three directions (a long-range model gets them whole); the
first ``n_centers`` atoms are the centres, and ``edge_index``/``edge_vec`` must hold every pair
of a centre within ``cutoff``. Returns (n_centers, 3 · n_species) columns
[C^0..C^{S−1}, D^0.., P^0..], differentiable in positions, edge vectors and cell.

Evaluation, on the model's edges (one neighbour list for every real-space sum) with a real-space
cutoff rc = ``cutoff`` fixed at construction, and precision p (below):

    C_i^s  the Coulomb engine (:class:`~mlip.physics.coulomb.CoulombEngine`, explicit k sum,
           prefactor 1, accuracy ``tolerance``) with one charge channel per element (unit
           charges on the atoms of element s): its real space over the edges, its k space,
           self term (the j = i, L = 0 exclusion) and neutralising background.
    D_i^s = Σ'_{r<rc} Γ(3, η²r²)/(2 r⁶) + (1/V) Σ_{0<|k|<kc} F(k) Σ_{j∈s} cos(k·(x_j−x_i))
            + F(0) N_s/V − δ_{s,s_i} η⁶/6,      η = p/rc,
            Γ(3, x)/2 = e^{−x}(1 + x + x²/2),
            F(k) = (π^{3/2} η³/3) [(1 − 2b²) e^{−b²} + 2√π b³ erfc(b)],  b = k/(2η),  F(0) = π^{3/2}η³/3
    P_i^s = Σ'_{r<rc} exp(−α r)

D's split comes from 1/r⁶ = ½∫₀^∞ t² e^{−r²t} dt cut at t = η²: the short part is the
incomplete gamma term, the smooth part's Fourier transform is F(k) (k = 0 included: the 1/r⁶
sum converges absolutely, so no background). The Pauli sum converges absolutely and
exponentially; a plain real-space sum to rc is its (trivial) split. The k vectors are the
engine's (:func:`~mlip.physics.coulomb.reciprocal_vectors`), k and −k both.

Cutoffs and error bounds (per center and element; the neglected tails replaced by integrals
over a uniform density ρ_s = N_s/V, the Kolafa–Perram approximation; |Σ_j cos| ≤ N_s):
p is the smallest value with e^{−p²}(1 + p² + p⁴/2) ≤ ``tolerance`` (the size of the last
real-space London term relative to its leading term), kc = 2ηp, and rc is the Pauli range

    |ΔP| ≤ 4π ρ (rc²/α + 2rc/α² + 2/α³) e^{−α rc} ≤ tolerance   (rc solved for at ρ = 0.1 Å⁻³,
                                                                 the engine's reference density)

(10.5 Å for α = 3 Å⁻¹, 51.7 Å for α = 0.7 Å⁻¹), so that

    |ΔD_real| ≤ 2π ρ_s η³ (½ + 1/p² + 1/p⁴) e^{−p²}/p   |ΔD_recip| ≤ N_s η⁶ e^{−p²} / (√π p)

and the Coulomb channels carry the engine's error at accuracy ``tolerance``. The default
``tolerance`` 1e-12 gives p = 5.836, e^{−p²} = 1.6e-15. The parameters are fixed at
construction (not per cell), so a supercell gives the same features. The tests check D and P
against brute-force real-space sums, and C against LAMMPS' Ewald, ``mlip.physics.Ewald`` and the
NaCl Madelung constant.

TorchScript-compiled: no ``from __future__ import annotations`` here.
"""

import math
from typing import Dict, List

import torch
from torch import Tensor

from mlip import keys
from mlip.errors import UserError
from mlip.physics.coulomb import REFERENCE_DENSITY, CoulombEngine, reciprocal_vectors


def precision_for(tolerance: float) -> float:
    """Smallest p (to 1e-3) with e^{−p²}(1 + p² + p⁴/2) ≤ tolerance."""
    p = 1.0
    while math.exp(-p * p) * (1.0 + p * p + 0.5 * p**4) > tolerance:
        p += 1e-3
    return p


def pauli_cutoff(alpha: float, tolerance: float, density: float = REFERENCE_DENSITY) -> float:
    """rc (Å) with 4πρ (rc²/α + 2rc/α² + 2/α³) e^{−α rc} ≤ ``tolerance``, α 1/Å, ρ = ``density`` 1/Å³."""
    rc = 1.0 / alpha
    for _ in range(50):
        tail = 4.0 * math.pi * density * (rc * rc / alpha + 2.0 * rc / alpha**2 + 2.0 / alpha**3)
        rc = max(rc, math.log(tail / tolerance) / alpha)
    return rc


class PotNetFeatures(torch.nn.Module):
    """Coulomb, London and Pauli lattice sums per neighbour element (see the module docstring).

    Args:
        n_species: number of elements of the model.
        alpha: Pauli exponent α, 1/Å (default 3.0, a Born–Mayer length of 0.33 Å).
        tolerance: sets the precision p, the real-space cutoff and the Coulomb accuracy (module
            docstring), default 1e-12.

    Attributes: ``cutoff`` Å (the model's edges must reach it), ``n_features`` = 3 · n_species,
    ``block_sizes`` [S, S, S] (one normalisation scale per kind of sum), ``long_range`` True
    (the descriptor protocol's mark of a descriptor that takes the batch dict).
    """

    cutoff: float
    n_features: int
    n_species: int
    alpha: float
    tolerance: float
    precision: float
    eta: float
    k_cutoff: float
    long_range: bool
    block_sizes: List[int]

    def __init__(self, n_species: int, alpha: float = 3.0, tolerance: float = 1e-12) -> None:
        super().__init__()
        if n_species < 1:
            raise UserError(f"potnet: n_species must be >= 1, got {n_species}")
        if alpha <= 0.0:
            raise UserError(f"potnet: alpha must be > 0 (1/Å), got {alpha}")
        if not 0.0 < tolerance < 1.0:
            raise UserError(f"potnet: tolerance must be in (0, 1), got {tolerance}")
        self.n_species = int(n_species)
        self.n_features = 3 * self.n_species
        self.block_sizes = [self.n_species] * 3
        self.long_range = True
        self.alpha = float(alpha)
        self.tolerance = float(tolerance)
        self.precision = precision_for(tolerance)
        self.cutoff = pauli_cutoff(self.alpha, self.tolerance)
        self.eta = self.precision / self.cutoff
        self.k_cutoff = 2.0 * self.eta * self.precision
        self.engine = CoulombEngine(self.cutoff, self.tolerance, "ewald", prefactor=1.0)

    def extra_repr(self) -> str:
        return (f"n_species={self.n_species}, alpha={self.alpha}, tolerance={self.tolerance}, "
                f"cutoff={self.cutoff:.3f}, n_features={self.n_features}")

    def forward(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, n_centers: int,
                data: Dict[str, Tensor]) -> Tensor:
        """Features (n_centers, 3 · n_species) (module docstring)."""
        positions = data[keys.POSITIONS]
        cell = data[keys.CELL]
        pbc = data[keys.PBC]
        batch = data[keys.BATCH]
        if not bool(pbc.all()):
            raise RuntimeError("potnet: lattice sums need frames periodic in all three directions")
        n_sp = self.n_species
        n_atoms = positions.shape[0]
        onehot = torch.nn.functional.one_hot(species, n_sp).to(positions.dtype)  # (N, S)
        coulomb = self.engine.potential(onehot, positions, cell, pbc, batch, edge_index, edge_vec)

        # real space over the edges: London's short part and Pauli
        src = edge_index[0]
        r = torch.linalg.vector_norm(edge_vec, dim=1)
        inside = r < self.cutoff
        r = torch.where(inside, r, torch.full_like(r, self.cutoff))
        x = self.eta * self.eta * r * r
        r6 = r * r * r * r * r * r
        zero = torch.zeros_like(r)
        lond = torch.where(inside, torch.exp(-x) * (1.0 + x + 0.5 * x * x) / r6, zero)
        pauli = torch.where(inside, torch.exp(-self.alpha * r), zero)
        slot = src * n_sp + species.index_select(0, edge_index[1])
        real = torch.zeros(2, n_atoms * n_sp, dtype=r.dtype, device=r.device)
        real = real.index_add(1, slot, torch.stack([lond, pauli])).view(2, n_atoms, n_sp)

        london = real[0] + self.london_reciprocal(onehot, positions, cell, batch) \
            - onehot * (self.eta**6 / 6.0)
        return torch.cat([coulomb, london, real[1]], dim=1)[:n_centers]

    def london_reciprocal(self, onehot: Tensor, positions: Tensor, cell: Tensor, batch: Tensor) -> Tensor:
        """(1/V) Σ_{|k|<kc} F(k) Σ_{j∈s} cos(k·(x_j − x_i)) + F(0) N_s/V (N, S), frame by frame;
        ``onehot`` (N, S) the atoms' elements."""
        out = torch.zeros_like(onehot)
        eta = self.eta
        f0 = math.pi**1.5 * eta**3 / 3.0
        for b in range(cell.shape[0]):
            idx = (batch == b).nonzero().squeeze(1)
            if idx.numel() == 0:
                continue
            x = positions.index_select(0, idx)
            members = onehot.index_select(0, idx)
            volume = torch.linalg.det(cell[b]).abs()
            k = reciprocal_vectors(cell[b], self.k_cutoff)  # (K, 3)
            bk = torch.linalg.vector_norm(k, dim=1) / (2.0 * eta)
            kernel = f0 * ((1.0 - 2.0 * bk * bk) * torch.exp(-bk * bk)
                           + 2.0 * math.sqrt(math.pi) * bk**3 * torch.erfc(bk))
            phase = x @ k.T  # (n, K)
            cos, sin = torch.cos(phase), torch.sin(phase)
            # Σ_{j∈s} cos(k·(x_j − x_i)) = cos(k·x_i) Σ_{j∈s} cos(k·x_j) + sin(k·x_i) Σ_{j∈s} sin(k·x_j)
            weight = kernel.unsqueeze(1)
            part = cos @ (weight * (cos.T @ members)) + sin @ (weight * (sin.T @ members))
            part = (part + f0 * members.sum(dim=0, keepdim=True)) / volume
            out = out.index_add(0, idx, part)
        return out
