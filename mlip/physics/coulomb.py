"""The Coulomb engine: one electrostatic sum (real space over the model's edges, k space explicit or
PME on torch-pme).

Given charges q_i (e) on the atoms of a batch of frames, the engine returns the per-frame
energies E (B,) eV and the per-atom potential φ_i = ∂E/∂q_i (eV/e), in LAMMPS metal units:

    E = ½ Σ_i q_i φ_i,   φ_i = k_e Σ_{j,n}' q_j / |x_j + n·cell − x_i|   (+ the neutralising background),
    k_e = 14.399645 eV·Å (``parsers.units.COULOMB_EV_ANGSTROM``, LAMMPS' ``qqr2e``; torch-pme's
    prefactor is set to this value, not to its own ``prefactors.eV_A``).

The per-atom split E_i = ½ q_i φ_i is LAMMPS' ``compute pe/atom`` for ``kspace_style ewald``.
Forces and the virial are not computed here: they come from the caller's autograd pass
through ``positions``, ``edge_vec`` and ``cell`` (everything below is differentiable in them; a
strain of the cell strains the k vectors and the mesh with it). In eager mode the explicit k sum
supplies its own first and second derivatives in closed form (:mod:`mlip.physics.kspace_product`:
training differentiates twice, and autograd through cos and sin cost it most of its time); a
TorchScript-compiled engine differentiates the same sum by autograd.

Periodic frames (``pbc`` all True; any triclinic cell, charged cells included) split 1/r with a
Gaussian smearing σ (Ewald parameter α = 1/(√2 σ)):

    φ_i = φ_i^real + φ_i^k,
    φ_i^real = k_e Σ_{edges (i, j)} q_j erfc(r_ij/(√2σ)) / r_ij · s(r_ij)
    φ_i^k    = the reciprocal sum: explicit, (1/V) Σ_k G(k) [cos(k·x_i) Σ_j q_j cos(k·x_j) + sin ⋯],
               with torch-pme's Coulomb kernel G(k) = k_e 4π e^{−σ²k²/2}/k² (the sum of its
               ``EwaldCalculator``, written out so that the cos/sin factors are kept for repeated
               products, :meth:`CoulombEngine.prepare`), or PME from torch-pme's
               ``lib.MeshInterpolator`` (Lagrange interpolation) and ``lib.KSpaceFilter`` (FFT,
               the same kernel); minus the self term k_e √(2/π)/σ q_i, minus the background term
               2π k_e σ² Q / V for a net charge Q = Σ q (the energy −k_e π Q²/(2Vα²) that LAMMPS
               adds for charged cells).

The real-space pairs are the model's own directed edges (``edge_index`` (2, E), both directions
listed; ``edge_vec`` r_ij = x_j − x_i + shift): no second neighbour list, and torch-pme gets no
pairs (its real-space sum is not used). The real-space range is ``cutoff`` (Å), which must not
exceed the model's neighbour cutoff. s(r) is a C² switch (1 − 10t³ + 15t⁴ − 6t⁵) from
0.9·cutoff to cutoff, so the energy is smooth when pairs cross the cutoff. The explicit k sum
switches its k vectors off the same way between K and 1.2 K (``_SwitchedCoulomb``) and takes
every k inside 1.2 K, so it is smooth under any change of the cell. PME changes its mesh size
in steps (the smallest 2^a 3^b 5^c ≥ L/h + 1 points along a cell vector of length L; torch-pme's
own ``PMECalculator`` rounds up to a power of two, up to 8× the points, so it is not used), so
its energy jumps by about the requested accuracy when a cell crosses such a step (never in
fixed-cell MD); so can ``auto``'s choice between the two sums.

Modes: ``"ewald"`` (always the explicit k sum: exact to ε and smooth; O(N^{3/2}) at best),
``"pme"`` (always the mesh: O(N log N)) and ``"auto"`` (per frame, the explicit sum where
N·N_k < M, see :meth:`CoulombEngine.ewald_is_cheaper`: small cells at tight accuracy).

Accuracy: one number ε, the RMS force error per atom in units of the force between two unit
charges 1 Å apart (k_e e²/Å², as LAMMPS' ``kspace_style ... ε``), estimated for unit charges at a
reference density ρ = 0.1 Å⁻³ (denser than ionic solids such as NaCl, 0.045 Å⁻³). All
parameters follow from ε and the cutoff alone, in closed form at construction, so nothing is
tuned per call, per cell or per MD step (the number of k vectors or mesh points follows the
cell):

    real space (Kolafa & Perram, Mol. Sim. 9, 351 (1992)), r_s = 0.9·cutoff:
        ΔF_real = 2 √(ρ / r_s) e^{−r_s²/(2σ²)} = ε                         → σ
    explicit k sum (Kolafa & Perram), cutoff K on |k|:
        ΔF_k = 2α √(2ρ / K) e^{−K²/(4α²)} = ε                               → K
    PME mesh spacing h, 6 Lagrange interpolation nodes per direction, from a fit of the measured
    force error of torch-pme's PME against its Ewald sum (random ±1 charges at 0.05 Å⁻³ in cubic
    cells of 8 and 12 Å, σ = 0.7–1.4 Å, h/σ = 0.09–0.7; within a factor 2 over 1e-7–1e-3):
        ΔF_mesh = 0.025 √(ρ/0.05) (h/σ)^4.7 σ^−1.4 = ε   (σ in Å)          → h
    torch-pme's own estimate (``tuning.pme.PMEErrorBounds``, after Deserno & Holm) was 10–25×
    below the measured error for these meshes, so it is not used. On 64-ion rock-salt cells
    (orthogonal, triclinic, charged) the measured error is 0.3–0.6 ε for ε = 1e-3 … 1e-6.

For charges of magnitude |q| the absolute error scales with q². The cost of PME at a given ε
is set by σ, hence by the real-space cutoff: with the 5 Å of a typical model the mesh spacing
is 0.33 Å at ε = 1e-4 (about 600 mesh points per atom of NaCl) and 0.17 Å at 1e-5 (8× the
points), which dominates the cost of large cells. The tests check the Ewald mode against LAMMPS
``kspace_style ewald`` and pymatgen, and PME against LAMMPS ``kspace_style pppm`` and the Ewald
mode at the requested accuracy.

Non-periodic frames (``pbc`` all False) are summed directly over all pairs,
φ_i = k_e Σ_{j≠i} q_j / r_ij: O(n²) time and memory, meant for clusters and molecules of up to
a few thousand atoms. Frames periodic along some directions only raise an error. Frames of a
batch are evaluated one at a time (the real-space part in one pass over all edges).

Charge channels: :meth:`CoulombEngine.potential` takes charges (n, C) and returns the C
potentials (n, C) of C independent charge sets on the same atoms in one pass (the k vectors,
mesh weights and pair distances are shared): PotNet's per-element sublattice potentials
(:mod:`mlip.physics.potnet`), and the dense matrix A_ij = ∂φ_i/∂q_j of a charge equilibration
as the potentials of n unit charges (:mod:`mlip.physics.qeq`).

Other kernels: the reciprocal-space part (k vectors, the explicit sum, the PME mesh, the choice
between them) is :class:`KSpaceSum`, for any radial kernel G(|k|), one per charge channel if
wanted; the engine is that sum with the Coulomb kernel, plus its real-space, self and background
terms. The learned filters of Ewald message passing (:mod:`mlip.physics.ewald_mp`) are another.

Gaussian charges: with per-atom widths s_i (Å, the standard deviation of a spherical Gaussian
charge density ∝ exp(−r²/(2 s_i²))) the pair interaction is erf(r/w_ij)/r, w_ij = √(2(s_i² + s_j²)),
and each charge interacts with itself, k_e q_i/(√π s_i) in φ_i (so E = ½ Σ q_i φ_i is the whole
electrostatic energy of the Gaussian charge density). That is the interaction of the EEQ charges of
D4 (widths a_i/√2 of its radii a_i) and of 4G-HDNNP charge equilibration (n2p2's σ_i). Periodic
frames keep the k-space part and the point-charge self and background terms unchanged and
replace the real-space kernel by [erfc(r/(√2σ)) − erfc(r/w_ij)]/r · s(r), plus the Gaussian
self term; clusters sum erf(r/w_ij)/r directly. The real-space sum is converged to ε when every
w_ij ≤ √2 σ, i.e. s_i ≤ σ/√2 (``max_width``; :func:`cutoff_for_width` gives the cutoff that
allows a width); wider Gaussians raise an error in periodic frames.

``prefactor`` (default k_e in eV·Å) sets the units of φ: 1 gives plain lattice sums (1/Å),
BOHR_CODATA2018 gives Hartree/e for positions in Å (D4's EEQ, in atomic units). The error
estimates stay in Å.

TorchScript-compiled: no ``from __future__ import annotations`` here.
"""

import math
from typing import Dict, Optional, Tuple

import torch
import torchpme
from torch import Tensor
from torchpme.lib import KSpaceFilter, MeshInterpolator

from mlip.errors import UserError
from mlip.physics.kspace_product import kspace_product, phase_factors
from mlip.physics.pairs import image_grid
from parsers.units import COULOMB_EV_ANGSTROM

MODES = ("auto", "ewald", "pme")
REFERENCE_DENSITY = 0.1  # unit charges per Å³ of the error estimates
SWITCH_START = 0.9  # real-space switch from SWITCH_START·cutoff to cutoff
K_SWITCH_WIDTH = 1.2  # Ewald k vectors switched off from K to 1.2 K
INTERPOLATION_NODES = 6  # Lagrange nodes per direction of the PME mesh
MESH_ERROR_PREFACTOR = 0.025  # fitted PME force error (module docstring), units of k_e e²/Å²
MESH_FIT_DENSITY = 0.05  # Å⁻³, density of the fit
MESH_SPACING_POWER = 4.7
MESH_SMEARING_POWER = 1.4


def smooth_size(n: int) -> int:
    """The smallest integer ≥ ``n`` with no prime factor above 5 (a fast FFT length)."""
    m = max(n, 1) - 1
    rest = 0
    while rest != 1:
        m += 1
        rest = m
        for p in [2, 3, 5]:
            while rest % p == 0:
                rest = rest // p
    return m


def switch(x: Tensor, start: float, end: float) -> Tensor:
    """C² switch (dimensionless, shape of ``x``): 1 for x ≤ start, 0 for x ≥ end,
    1 − 10t³ + 15t⁴ − 6t⁵ between (t = (x − start)/(end − start))."""
    t = torch.clamp((x - start) / (end - start), 0.0, 1.0)
    return 1.0 - t * t * t * (10.0 - 15.0 * t + 6.0 * t * t)


def smearing_for(cutoff: float, accuracy: float, density: float = REFERENCE_DENSITY) -> float:
    """σ (Å) with 2 √(ρ/r_s) e^{−r_s²/(2σ²)} = ``accuracy``, r_s = 0.9 ``cutoff`` (Å),
    ρ = ``density`` 1/Å³."""
    r_s = SWITCH_START * cutoff
    log_ratio = math.log(2.0 * math.sqrt(density / r_s) / accuracy)
    if log_ratio <= 0.0:
        raise UserError(f"coulomb: accuracy {accuracy} is too coarse for a {cutoff} Å cutoff")
    return r_s / math.sqrt(2.0 * log_ratio)


def k_cutoff_for(smearing: float, accuracy: float, density: float = REFERENCE_DENSITY) -> float:
    """K (1/Å) with 2α √(2ρ/K) e^{−K²/(4α²)} = ``accuracy``, α = 1/(√2 σ), σ = ``smearing`` Å."""
    alpha = 1.0 / (math.sqrt(2.0) * smearing)
    k = 2.0 * alpha * math.sqrt(math.log(1.0 / accuracy))
    for _ in range(50):  # fixed point; the prefactor changes slowly with K
        pref = 2.0 * alpha * math.sqrt(2.0 * density / k)
        k = 2.0 * alpha * math.sqrt(max(math.log(pref / accuracy), 1.0))
    return k


def mesh_spacing_for(smearing: float, accuracy: float, density: float = REFERENCE_DENSITY) -> float:
    """Largest mesh spacing h (Å) of PME (6 interpolation nodes) with the fitted error estimate
    A √(ρ/0.05) (h/σ)^4.7 σ^-1.4 = ``accuracy`` (module docstring), σ = ``smearing`` Å."""
    scale = MESH_ERROR_PREFACTOR * math.sqrt(density / MESH_FIT_DENSITY)
    return smearing * (accuracy * smearing**MESH_SMEARING_POWER / scale) ** (1.0 / MESH_SPACING_POWER)


def cutoff_for_width(width: float, accuracy: float, density: float = REFERENCE_DENSITY) -> float:
    """The smallest real-space cutoff (Å) whose smearing (:func:`smearing_for`) allows Gaussian
    charges of width ``width`` (Å, standard deviation) at ``accuracy``: σ(cutoff)/√2 ≥ width."""
    low, high = 1e-3, 1.0
    while smearing_for(high, accuracy, density) < math.sqrt(2.0) * width:
        low, high = high, 2.0 * high
    for _ in range(60):  # σ grows monotonically with the cutoff: bisection
        mid = 0.5 * (low + high)
        if smearing_for(mid, accuracy, density) < math.sqrt(2.0) * width:
            low = mid
        else:
            high = mid
    return high


def reciprocal_vectors(cell: Tensor, k_max: float, half: bool = False) -> Tensor:
    """All k = 2π m·cell⁻ᵀ (K, 3) 1/Å with 0 < |k| < ``k_max`` (1/Å) of a periodic ``cell``
    (3, 3) Å rows, k and −k both, or with ``half`` one of each pair (m in the half space whose
    first non-zero component is positive); the set is chosen without gradient, the vectors
    follow the cell."""
    recip = 2.0 * math.pi * torch.linalg.inv(cell).transpose(0, 1)
    with torch.no_grad():
        lengths = torch.linalg.vector_norm(cell.detach(), dim=1)
        m = image_grid(torch.ceil(lengths * k_max / (2.0 * math.pi)).long()).to(cell.dtype)
        k2 = (m @ recip.detach()).square().sum(dim=1)
        keep = (k2 < k_max * k_max) & (k2 > 0.0)
        if half:
            first_positive = (m[:, 1] > 0) | ((m[:, 1] == 0) & (m[:, 2] > 0))
            keep = keep & ((m[:, 0] > 0) | ((m[:, 0] == 0) & first_positive))
        m = m[keep]
    return m @ recip


class _SwitchedCoulomb(torchpme.CoulombPotential):
    """torch-pme's Coulomb potential with its reciprocal kernel switched off between K and 1.2 K (1/Å)."""

    k_start: float
    k_end: float

    def __init__(self, smearing: float, prefactor: float, k_cutoff: float) -> None:
        super().__init__(smearing=smearing, prefactor=prefactor)
        self.k_start = float(k_cutoff)
        self.k_end = float(K_SWITCH_WIDTH * k_cutoff)

    def lr_from_k_sq(self, k_sq: Tensor) -> Tensor:
        """k_e 4π e^{−σ²k²/2} / k² · s(k), 0 at k = 0; ``k_sq`` (K,) 1/Å²."""
        smearing = self.smearing
        assert smearing is not None
        masked = torch.where(k_sq == 0, torch.ones_like(k_sq), k_sq)
        kernel = 4.0 * math.pi * torch.exp(-0.5 * smearing * smearing * masked) / masked
        kernel = kernel * switch(torch.sqrt(masked), self.k_start, self.k_end)
        return self.prefactor * torch.where(k_sq == 0, torch.zeros_like(k_sq), kernel)


class KSpaceSum(torch.nn.Module):
    """The reciprocal-space sum of the engine, for any radial kernel G(|k|) (torch-pme's
    ``KSpaceKernel``): for C charge channels q (n, C) of one periodic frame of volume V,

        φ_i = (1/V) Σ_{k ≠ 0} G(k) [cos(k·x_i) Σ_j q_j cos(k·x_j) + sin(k·x_i) Σ_j q_j sin(k·x_j)]  (n, C),

    explicitly over the k vectors 0 < |k| < ``k_end`` (:func:`reciprocal_vectors`, k and −k both)
    or by PME on a mesh of spacing ≤ ``mesh_spacing`` (Lagrange interpolation with
    ``interpolation_nodes`` nodes per direction, torch-pme's ``MeshInterpolator`` and
    ``KSpaceFilter``), per frame as ``mode`` says (module docstring: ``ewald``, ``pme``, ``auto``).
    ``mesh_kernel.kernel_from_k_sq(k²)`` gives G in the shape of k² (one kernel for every channel)
    or (C,) + that shape (one kernel per channel). The explicit sum takes :meth:`explicit_kernel`,
    the same kernel unless a subclass overrides it; it must vanish from ``k_end`` on. The Coulomb
    engine is one such sum; the learned filters of :mod:`mlip.physics.ewald_mp` are another.

    Args:
        mesh_kernel: G on the mesh (and, by default, of the explicit sum).
        k_end: 1/Å, the explicit sum's k cutoff.
        mesh_spacing: Å, the largest PME mesh spacing.
        mode: ``"auto"``, ``"ewald"`` or ``"pme"``.
        mesh_cost: the cost of one PME mesh point in (atom, k) terms of the explicit sum, measured
            for the kernel (``auto``'s choice, :meth:`ewald_is_cheaper`; 1 for the Coulomb kernel).
    """

    mode: str
    k_end: float
    mesh_spacing: float
    interpolation_nodes: int
    mesh_cost: float

    def __init__(self, mesh_kernel: torch.nn.Module, k_end: float, mesh_spacing: float, mode: str,
                 mesh_cost: float = 1.0) -> None:
        super().__init__()
        if mode not in MODES:
            raise UserError(f"k-space sum: mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self.k_end = float(k_end)
        self.mesh_spacing = float(mesh_spacing)
        self.mesh_cost = float(mesh_cost)
        self.interpolation_nodes = INTERPOLATION_NODES
        # PME from torch-pme's building blocks (the mesh size is ours: see mesh_points)
        unit_cell = torch.eye(3, dtype=torch.float64)
        one_point = torch.ones(3, dtype=torch.long)
        self.mesh_interpolator = MeshInterpolator(unit_cell, one_point, self.interpolation_nodes, "Lagrange")
        with torch.no_grad():  # the filter evaluated now holds no graph of a learned kernel (deepcopy)
            self.mesh_filter = KSpaceFilter(unit_cell, one_point, mesh_kernel, fft_norm="backward",
                                            ifft_norm="forward")

    def explicit_kernel(self, k_sq: Tensor) -> Tensor:
        """G of the explicit sum at k² ``k_sq`` (K,) 1/Å²: (K,) or (C, K)."""
        return self.mesh_filter.kernel.kernel_from_k_sq(k_sq)

    def reciprocal_potential(self, charges: Tensor, positions: Tensor, cell: Tensor) -> Tensor:
        """φ (n, C) of charges (n, C) at ``positions`` (n, 3) Å in one periodic ``cell`` (3, 3)
        Å rows: the explicit sum or PME, as :meth:`explicit_sum` chooses."""
        if self.explicit_sum(positions.shape[0], cell):
            k, phases, weight = self.kspace_factors(positions, cell)
            return self.kspace_product(k, phases, weight, positions, charges, torch.linalg.det(cell).abs())
        return self.mesh_potential(charges, positions, cell)

    def kspace_factors(self, positions: Tensor, cell: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """The explicit k sum of one periodic frame as factors: the k vectors (K, 3) 1/Å,
        [cos(k·x_i) | sin(k·x_i)] (n, 2K) and the kernel G(k) (K,) or (C, K)
        (:meth:`explicit_kernel`), so that φ = (cos G cosᵀ + sin G sinᵀ) q / V
        (:meth:`kspace_product`). The terms of k and −k are equal (G is even), so the factors hold
        one k of each pair with twice its G: half the work of the sum over :meth:`kvectors`. For
        the Coulomb kernel this is torch-pme's ``EwaldCalculator`` sum, with the factors kept for
        repeated products. In eager mode cos and sin carry no gradient: the product's derivatives
        are :mod:`mlip.physics.kspace_product`'s closed forms (training differentiates twice;
        autograd through cos and sin made that several times slower); a scripted module
        differentiates them."""
        k = reciprocal_vectors(cell, self.k_end, True)
        if torch.jit.is_scripting():
            phase = positions @ k.T
            phases = torch.cat([torch.cos(phase), torch.sin(phase)], dim=1)
        else:
            phases = self._detached_phases(positions, k)
        return k, phases, 2.0 * self.explicit_kernel(k.square().sum(dim=1))

    def kspace_product(self, k: Tensor, phases: Tensor, weight: Tensor, positions: Tensor, charges: Tensor,
                       volume: Tensor) -> Tensor:
        """φ = (cos G cosᵀ + sin G sinᵀ) q / V (n, C) from :meth:`kspace_factors`' output for
        ``positions`` (n, 3) Å, charges (n, C) and the cell volume V () Å³."""
        w = weight.unsqueeze(0).expand(charges.shape[1], weight.shape[0]) if weight.dim() == 1 else weight
        if torch.jit.is_scripting():
            n_k = k.shape[0]
            cos = phases[:, :n_k]
            sin = phases[:, n_k:]
            return (cos @ (w.T * (cos.T @ charges)) + sin @ (w.T * (sin.T @ charges))) / volume
        return self._eager_product(positions, charges, k, w, phases) / volume

    @torch.jit.unused
    def _detached_phases(self, positions: Tensor, k: Tensor) -> Tensor:
        """[cos | sin] (n, 2K) without gradient (:func:`mlip.physics.kspace_product.phase_factors`)."""
        return phase_factors(positions, k)

    @torch.jit.unused
    def _eager_product(self, positions: Tensor, charges: Tensor, k: Tensor, weight: Tensor,
                       phases: Tensor) -> Tensor:
        """The product with closed-form derivatives (:func:`mlip.physics.kspace_product.kspace_product`)."""
        return kspace_product(positions, charges, k, weight, phases)

    def mesh_potential(self, charges: Tensor, positions: Tensor, cell: Tensor) -> Tensor:
        """PME: the k-space sum (n, C) of charges (n, C) of one periodic frame (for the Coulomb
        kernel without the self and background terms). Charges are spread on the mesh by
        Lagrange interpolation, filtered by G in k space, interpolated back and divided by V."""
        n_mesh = self.mesh_points(cell)
        self.mesh_interpolator.update(cell, n_mesh)
        self.mesh_filter.update(cell, n_mesh)
        self.mesh_interpolator.compute_weights(positions)
        density = self.mesh_interpolator.points_to_mesh(charges)
        mesh_phi = self.mesh_interpolator.mesh_to_points(self.mesh_filter(density))
        return mesh_phi / torch.linalg.det(cell).abs()

    def mesh_points(self, cell: Tensor) -> Tensor:
        """Mesh points (3,) int64 along the cell vectors: the smallest 2^a 3^b 5^c ≥ L/h + 1
        for a cell vector of length L (FFT-friendly, spacing ≤ h; torch-pme's own PME rounds up
        to a power of two, up to 8× more points)."""
        lengths = torch.linalg.vector_norm(cell.detach(), dim=1)
        sizes = [smooth_size(int(math.ceil(float(lengths[d]) / self.mesh_spacing + 1.0))) for d in range(3)]
        return torch.tensor(sizes, dtype=torch.long, device=cell.device)

    def explicit_sum(self, n_atoms: int, cell: Tensor) -> bool:
        """Whether a periodic frame of ``n_atoms`` takes the explicit k sum (mode ``ewald``, or
        ``auto`` where :meth:`ewald_is_cheaper`) rather than PME."""
        return self.mode == "ewald" or (self.mode == "auto" and self.ewald_is_cheaper(n_atoms, cell))

    def ewald_is_cheaper(self, n_atoms: int, cell: Tensor) -> bool:
        """Whether the explicit k sum is cheaper than PME for this frame: N·N_k < c M, with
        N_k = ½ (4π/3) k_end³ V/(2π)³ k vectors (one of each ±k pair), M the PME mesh points
        (:meth:`mesh_points`) and c ``mesh_cost``.
        Measured on one CPU thread for the Coulomb kernel,
        energy + forces: one (atom, k) term of the explicit sum costs about as much as one mesh
        point of PME (1.4e-7 s against 2e-7 s, NaCl cells of 64 to 1,000 atoms): c = 1."""
        with torch.no_grad():  # the explicit sum takes one k of each ±k pair
            volume = float(torch.linalg.det(cell.detach()).abs())
            n_k = 0.5 * 4.0 * math.pi / 3.0 * self.k_end**3 * volume / (8.0 * math.pi**3)
        return n_atoms * n_k < self.mesh_cost * float(self.mesh_points(cell).prod())

    def kvectors(self, cell: Tensor) -> Tensor:
        """All k = 2π m·cell⁻ᵀ (K, 3) 1/Å with 0 < |k| < ``k_end`` (:func:`reciprocal_vectors`)."""
        return reciprocal_vectors(cell, self.k_end)


class CoulombEngine(KSpaceSum):
    """Coulomb energies and potentials of point or Gaussian charges (see the module docstring).

    Args:
        cutoff: Å, real-space range; the edges passed to ``forward`` must hold every pair within it.
        accuracy: ε, RMS force error per atom in units of k_e e²/Å² (module docstring), in (0, 1).
        mode: ``"pme"`` (default, O(N log N)) or ``"ewald"`` (explicit k vectors,
            O(N^{3/2}) at best; exact to ε and smooth, for tests and small cells).
        prefactor: the Coulomb constant of φ's units (default k_e = 14.399645 eV·Å).

    Attributes: ``smearing`` σ Å, ``k_cutoff`` K 1/Å (Ewald), ``mesh_spacing`` h Å and
    ``interpolation_nodes`` p (PME), ``coulomb`` the prefactor, ``max_width`` Å the widest
    Gaussian charge (standard deviation) of periodic frames, σ/√2.
    """

    cutoff: float
    switch_start: float
    accuracy: float
    smearing: float
    k_cutoff: float
    coulomb: float
    self_term: float
    background_term: float
    max_width: float

    def __init__(self, cutoff: float, accuracy: float = 1e-4, mode: str = "auto",
                 prefactor: float = COULOMB_EV_ANGSTROM) -> None:
        if mode not in MODES:
            raise UserError(f"coulomb: mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not 0.0 < accuracy < 1.0:
            raise UserError(f"coulomb: accuracy must lie in (0, 1), got {accuracy}")
        if not cutoff > 0.0:
            raise UserError(f"coulomb: the real-space cutoff must be positive (Å), got {cutoff}")
        smearing = smearing_for(float(cutoff), float(accuracy))
        k_cutoff = k_cutoff_for(smearing, float(accuracy))
        super().__init__(torchpme.CoulombPotential(smearing=smearing, prefactor=float(prefactor)),
                         K_SWITCH_WIDTH * k_cutoff, mesh_spacing_for(smearing, float(accuracy)), mode)
        self.cutoff = float(cutoff)
        self.switch_start = SWITCH_START * self.cutoff
        self.accuracy = float(accuracy)
        self.coulomb = float(prefactor)
        self.smearing = smearing
        self.max_width = self.smearing / math.sqrt(2.0)
        self.k_cutoff = k_cutoff
        self.k_kernel = _SwitchedCoulomb(self.smearing, self.coulomb, self.k_cutoff)
        self.self_term = self.coulomb * math.sqrt(2.0 / math.pi) / self.smearing
        self.background_term = 2.0 * math.pi * self.coulomb * self.smearing**2

    def extra_repr(self) -> str:
        return (f"mode={self.mode}, cutoff={self.cutoff}, accuracy={self.accuracy}, "
                f"smearing={self.smearing:.4f}, "
                f"k_cutoff={self.k_cutoff:.4f}, mesh_spacing={self.mesh_spacing:.4f}, "
                f"interpolation_nodes={self.interpolation_nodes}")

    def forward(self, charges: Tensor, positions: Tensor, cell: Tensor, pbc: Tensor, batch: Tensor,
                edge_index: Tensor, edge_vec: Tensor) -> Tuple[Tensor, Tensor]:
        """Energies (B,) eV and potentials φ (n,) eV/e of point charges.

        charges: (n,) e; positions: (n, 3) Å; cell: (B, 3, 3) Å rows; pbc: (B, 3) bool;
        batch: (n,) int64 frame of each atom; edge_index: (2, E) int64 directed pairs (i, j) of
        these atoms, both directions listed; edge_vec: (E, 3) Å, r_ij = x_j − x_i + shift.
        """
        phi = self.potential(charges.unsqueeze(1), positions, cell, pbc, batch, edge_index, edge_vec)
        phi = phi.squeeze(1)
        energy = torch.zeros(cell.shape[0], dtype=phi.dtype, device=phi.device)
        energy = energy.index_add(0, batch, 0.5 * charges * phi)
        return energy, phi

    def potential(self, charges: Tensor, positions: Tensor, cell: Tensor, pbc: Tensor, batch: Tensor,
                  edge_index: Tensor, edge_vec: Tensor, widths: Optional[Tensor] = None) -> Tensor:
        """Potentials φ (n, C) (prefactor units per e) of C charge channels ``charges`` (n, C) e,
        of point charges, or of Gaussian charges of widths ``widths`` (n,) Å (standard deviations;
        module docstring). The other inputs as in :meth:`forward`. Linear in ``charges``:
        :meth:`prepare` once and :meth:`apply` per product for repeated products on one geometry."""
        prepared = self.prepare(positions, cell, pbc, batch, edge_index, edge_vec, widths)
        return self.apply(prepared, charges, positions, cell, pbc, batch, edge_index, widths)

    def prepare(self, positions: Tensor, cell: Tensor, pbc: Tensor, batch: Tensor, edge_index: Tensor,
                edge_vec: Tensor, widths: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """What the products φ = A q of one geometry share (differentiable in it): the real-space
        kernel of every edge (``pair``, (E,)), and per frame b the explicit k sum's factors
        (``k{b}`` (K, 3), ``phases{b}`` (n_b, 2K), ``weight{b}`` (K,), :meth:`kspace_factors`) or the
        direct sum's kernel (``direct{b}`` (n_b, n_b)); PME frames keep nothing (the mesh
        weights are recomputed per product). Inputs as in :meth:`potential`."""
        periodic = pbc.all(dim=1)
        too_wide = widths is not None and float(widths.max()) > self.max_width * (1.0 + 1e-12)
        if too_wide and bool(periodic.any()):
            assert widths is not None
            raise RuntimeError("coulomb: a Gaussian width of " + str(float(widths.max())) + " Å exceeds the "
                               + str(self.max_width) + " Å that a real-space cutoff of " + str(self.cutoff)
                               + " Å converges at this accuracy (cutoff_for_width)")
        prepared = {"pair": self.pair_kernel(periodic.index_select(0, batch), edge_index, edge_vec, widths)}
        for b in range(cell.shape[0]):
            idx = (batch == b).nonzero().squeeze(1)
            if idx.numel() == 0:
                continue
            x = positions.index_select(0, idx)
            if bool(periodic[b]):
                if self.explicit_sum(x.shape[0], cell[b]):
                    k, phases, weight = self.kspace_factors(x, cell[b])
                    prepared["k" + str(b)] = k
                    prepared["phases" + str(b)] = phases
                    prepared["weight" + str(b)] = weight
            elif not bool(pbc[b].any()):
                s: Optional[Tensor] = None
                if widths is not None:
                    s = widths.index_select(0, idx)
                prepared["direct" + str(b)] = self.direct_kernel(x, s)
            else:
                raise RuntimeError(
                    "coulomb: frame " + str(b) + " is periodic along some directions only (pbc="
                    + str(pbc[b]) + "); use fully periodic or fully non-periodic frames"
                )
        return prepared

    def apply(self, prepared: Dict[str, Tensor], charges: Tensor, positions: Tensor, cell: Tensor,
              pbc: Tensor, batch: Tensor, edge_index: Tensor, widths: Optional[Tensor] = None) -> Tensor:
        """φ (n, C) of charges (n, C) from :meth:`prepare`'s output for the same inputs."""
        src = edge_index[0]
        dst = edge_index[1]
        pair = prepared["pair"].unsqueeze(1) * charges.index_select(0, dst)
        phi = self.coulomb * torch.zeros_like(charges).index_add(0, src, pair)
        periodic = pbc.all(dim=1)
        for b in range(cell.shape[0]):
            idx = (batch == b).nonzero().squeeze(1)
            if idx.numel() == 0:
                continue
            q = charges.index_select(0, idx)
            key = str(b)
            if bool(periodic[b]):
                volume = torch.linalg.det(cell[b]).abs()
                x = positions.index_select(0, idx)
                if "k" + key in prepared:
                    part = self.kspace_product(prepared["k" + key], prepared["phases" + key],
                                               prepared["weight" + key], x, q, volume)
                else:
                    part = self.mesh_potential(q, x, cell[b])
                part = part - self.self_term * q - self.background_term * q.sum(dim=0, keepdim=True) / volume
                if widths is not None:  # each Gaussian with itself
                    own = self.coulomb / math.sqrt(math.pi) / widths.index_select(0, idx)
                    part = part + own.unsqueeze(1) * q
            else:
                part = self.coulomb * (prepared["direct" + key] @ q)
            phi = phi.index_add(0, idx, part)
        return phi

    def pair_kernel(self, periodic_atom: Tensor, edge_index: Tensor, edge_vec: Tensor,
                    widths: Optional[Tensor] = None) -> Tensor:
        """Real-space kernel (E,) 1/Å of every edge whose centre lies in a periodic frame
        (``periodic_atom`` (n,) bool), erfc(r/(√2σ))/r · s(r), minus erfc(r/w_ij)/r · s(r) for
        Gaussian charges of ``widths`` (n,) Å; 0 for other edges and beyond the cutoff."""
        src = edge_index[0]
        r = torch.linalg.vector_norm(edge_vec, dim=1)
        keep = (r < self.cutoff) & periodic_atom.index_select(0, src)
        r = torch.where(keep, r, torch.full_like(r, self.cutoff))  # finite, and s(cutoff) = 0
        kernel = torch.erfc(r / (math.sqrt(2.0) * self.smearing))
        if widths is not None:
            pair_width = torch.sqrt(2.0 * (widths.index_select(0, src).square()
                                           + widths.index_select(0, edge_index[1]).square()))
            kernel = kernel - torch.erfc(r / pair_width)
        kernel = kernel / r * switch(r, self.switch_start, self.cutoff)
        return torch.where(keep, kernel, torch.zeros_like(kernel))

    def explicit_kernel(self, k_sq: Tensor) -> Tensor:
        """The explicit sum's Coulomb kernel G(k) = k_e 4π e^{−σ²k²/2}/k² · s(k) (K,), switched off
        between K and 1.2 K (``_SwitchedCoulomb``), at ``k_sq`` (K,) 1/Å²."""
        return self.k_kernel.lr_from_k_sq(k_sq)

    def direct_kernel(self, positions: Tensor, widths: Optional[Tensor] = None) -> Tensor:
        """Kernel (n, n) 1/Å of the direct sum of an isolated frame: 1/r_ij (0 on the diagonal), or,
        with ``widths`` (n,) Å, erf(r_ij/w_ij)/r_ij and 1/(√π s_i) on the diagonal."""
        n = positions.shape[0]
        diff = positions.unsqueeze(0) - positions.unsqueeze(1)
        eye = torch.eye(n, dtype=torch.bool, device=positions.device)
        r2 = (diff * diff).sum(dim=2)
        r = torch.sqrt(torch.where(eye, torch.ones_like(r2), r2))
        if widths is None:
            return torch.where(eye, torch.zeros_like(r), 1.0 / r)
        s2 = widths.square()
        pair_width = torch.sqrt(2.0 * (s2.unsqueeze(0) + s2.unsqueeze(1)))
        own = torch.diag(1.0 / (math.sqrt(math.pi) * widths))
        return torch.where(eye, own, torch.erf(r / pair_width) / r)
