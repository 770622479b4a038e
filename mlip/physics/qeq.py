"""Charge equilibration on the Coulomb engine: the charges that minimise a quadratic
electrostatic energy under a total-charge constraint, and their derivatives.

For each frame, with per-atom electronegativities χ_i (energy/e), hardnesses J_i (energy/e²),
Gaussian widths s_i (Å, standard deviations) and the frame's total charge Q (e):

    E(q) = Σ_i (χ_i q_i + ½ J_i q_i²) + ½ Σ_ij q_i A_ij q_j      subject to Σ_i q_i = Q,

with A the Gaussian-charge Coulomb operator of :class:`~mlip.physics.coulomb.CoulombEngine`
(``potential`` with ``widths``, its Gaussian self term included; energies in the engine's
prefactor units). The minimum solves K q + λ 1 = −χ, 1ᵀq = Q, with K = A + diag(J) (symmetric;
positive definite for physical parameters). This is the EEQ model of D4
(:mod:`mlip.physics.eeq`) and the charge equilibration of 4G-HDNNPs (Ko et al., Nat. Commun.
12, 398 (2021)).

Solve: conjugate gradients in the affine subspace Σ_frame q = Q (start at Q/n on every atom,
project every residual and product onto Σ = 0 per frame), all frames of a batch together, one
engine product φ = A p per step (the engine's explicit k sum or PME, O(N log N)): no dense
matrix. It stops when every frame's residual norm is below ``tolerance`` times its first one;
a solve that needs more than ``max_iterations`` steps raises an error (never NaN charges).
The solve runs without gradient.

Derivatives (implicit differentiation by the adjoint method): a caller whose energy U(q, θ)
depends on the charges adds :meth:`ChargeEquilibration.adjoint_correction`, the per-atom terms
−u_i ((K(θ) q)_i + χ_i(θ) + λ), with the adjoint u solving K u + μ 1 = ∂U/∂q, 1ᵀu = 0 per frame
(one more solve). Their values vanish (to the solver tolerance), and their gradient makes
∂(U + correction)/∂θ the total derivative dU/dθ for every θ that K and χ depend on (positions,
cell, χ, J, widths): forces and virial through the charges, exact to the solver tolerance.
Second derivatives through the charges (a force loss differentiated with respect to
parameters that enter χ or J) are not exact; terms with fixed parameters (D4) are unaffected.

Dense solve (:meth:`ChargeEquilibration.dense`, for training): K of each frame is built from
the engine's potentials of unit charges (one charge channel per atom of the largest frame, the
engine's multi-channel ``potential``; A_ij = φ_i of a unit charge on j), symmetrised, bordered
with the constraint and solved by ``torch.linalg.solve`` (LU), all frames of a batch at once
(padded to the largest). The charges are then an ordinary differentiable function of χ, J,
widths, positions and cell, to every order: a force loss has exact gradients with respect to
the parameters of χ and J. Cost O(n_b²) engine work and memory and O(n_b³) time per frame of
n_b atoms: meant for training frames of up to a few thousand atoms. The CG solve stays the
path for inference and large systems.

TorchScript-compiled: no ``from __future__ import annotations`` here.
"""

from typing import Dict, Tuple

import torch
from torch import Tensor

from mlip import keys
from mlip.physics.coulomb import CoulombEngine

TOLERANCE = 1e-13  # relative residual norm at which the conjugate gradients stop (float64)
FLOAT32_TOLERANCE = 1e-5  # the same in float32 (the smallest tolerance used with float32 inputs)
MAX_ITERATIONS = 2000


def frame_sums(values: Tensor, batch: Tensor, n_frames: int) -> Tensor:
    """Σ over each frame's atoms (B,) of per-atom ``values`` (n,); ``batch`` (n,) frame indices."""
    return torch.zeros(n_frames, dtype=values.dtype, device=values.device).index_add(0, batch, values)


class ChargeEquilibration(torch.nn.Module):
    """Charge equilibration (module docstring) on ``engine``, a :class:`CoulombEngine` whose
    ``max_width`` covers the Gaussian widths it will be given.

    Args:
        engine: the Coulomb engine; its prefactor sets the energy unit of χ and J.
        tolerance: relative residual norm at which the conjugate gradients stop (at least
            :data:`FLOAT32_TOLERANCE` for float32 inputs).
        max_iterations: conjugate-gradient steps after which the solve raises an error.

    A charge problem is ``hardness`` J (n,), ``widths`` s (n,) Å and ``system``, a dict with the
    batch keys of :mod:`mlip.keys` ``positions`` (n, 3) Å, ``cell`` (B, 3, 3) Å rows, ``pbc``
    (B, 3) bool, ``batch`` (n,) int64 and the engine's edges ``edge_index`` (2, E) and
    ``edge_vec`` (E, 3) Å (every pair of a periodic frame within the engine's cutoff, see
    :meth:`CoulombEngine.forward`).
    """

    tolerance: float
    float32_tolerance: float
    max_iterations: int

    def __init__(self, engine: CoulombEngine, tolerance: float = TOLERANCE,
                 max_iterations: int = MAX_ITERATIONS) -> None:
        super().__init__()
        self.engine = engine
        self.tolerance = float(tolerance)
        self.float32_tolerance = FLOAT32_TOLERANCE
        self.max_iterations = int(max_iterations)

    def forward(self, electronegativity: Tensor, hardness: Tensor, widths: Tensor, total_charge: Tensor,
                system: Dict[str, Tensor]) -> Tensor:
        """The equilibrated charges (n,) e, without gradient: ``electronegativity`` χ (n,),
        ``total_charge`` Q (B,) e."""
        # detached as well as under no_grad: TorchScript's optimised graphs do not always keep no_grad
        detached = {k: v.detach() for k, v in system.items()}
        with torch.no_grad():
            charges = self.solve(-electronegativity.detach(), total_charge.detach(), hardness.detach(),
                                 widths.detach(), detached)
        return charges.detach()

    def apply(self, charges: Tensor, hardness: Tensor, widths: Tensor, system: Dict[str, Tensor]) -> Tensor:
        """K q = A q + J q (n,) for charges q (n,), differentiable in every input."""
        return self._product(self._prepare(widths, system), charges, hardness, widths, system)

    def _prepare(self, widths: Tensor, system: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """The engine's shared part of the products K q on this geometry (:meth:`CoulombEngine.prepare`)."""
        return self.engine.prepare(system[keys.POSITIONS], system[keys.CELL], system[keys.PBC],
                                   system[keys.BATCH], system[keys.EDGE_INDEX], system[keys.EDGE_VEC], widths)

    def _product(self, prepared: Dict[str, Tensor], charges: Tensor, hardness: Tensor, widths: Tensor,
                 system: Dict[str, Tensor]) -> Tensor:
        """K q (n,) from :meth:`_prepare`'s output."""
        phi = self.engine.apply(prepared, charges.unsqueeze(1), system[keys.POSITIONS], system[keys.CELL],
                                system[keys.PBC], system[keys.BATCH], system[keys.EDGE_INDEX], widths)
        return phi.squeeze(1) + hardness * charges

    def solve(self, rhs: Tensor, total_charge: Tensor, hardness: Tensor, widths: Tensor,
              system: Dict[str, Tensor]) -> Tensor:
        """x (n,) with K x + λ_b 1 = ``rhs`` (n,) and Σ_frame x = ``total_charge`` (B,), by projected
        conjugate gradients (module docstring); call without gradient."""
        batch = system[keys.BATCH]
        n_frames = system[keys.CELL].shape[0]
        counts = frame_sums(torch.ones_like(rhs), batch, n_frames)
        prepared = self._prepare(widths, system)
        x = (total_charge.to(rhs.dtype) / torch.clamp(counts, min=1.0)).index_select(0, batch)
        r = self._project(rhs - self._product(prepared, x, hardness, widths, system), batch, counts)
        p = r
        rr = frame_sums(r * r, batch, n_frames)
        tolerance = self.tolerance
        if rhs.dtype == torch.float32:
            tolerance = max(tolerance, self.float32_tolerance)
        stop = (tolerance * tolerance) * rr
        for _ in range(self.max_iterations):
            active = rr > stop  # converged frames stay where they are
            if not bool(active.any()):
                break
            kp = self._project(self._product(prepared, p, hardness, widths, system), batch, counts)
            pkp = frame_sums(p * kp, batch, n_frames)
            step = active & (pkp > 0)
            alpha = torch.where(step, rr / torch.where(step, pkp, torch.ones_like(pkp)), torch.zeros_like(rr))
            x = x + alpha.index_select(0, batch) * p
            r = r - alpha.index_select(0, batch) * kp
            rr_new = frame_sums(r * r, batch, n_frames)
            beta = torch.where(active, rr_new / torch.where(active, rr, torch.ones_like(rr)), 0.0 * rr)
            p = r + beta.index_select(0, batch) * p
            rr = torch.where(active, rr_new, rr)
        if not bool((rr <= stop).all()):
            worst = float((rr / torch.clamp(stop, min=1e-300)).max().sqrt()) * tolerance
            raise RuntimeError("qeq: the charge equilibration did not converge in " + str(self.max_iterations)
                               + " conjugate-gradient steps (relative residual " + str(worst)
                               + "); is K = A + diag(J) positive definite (hardnesses, widths)?")
        return x

    def dense(self, electronegativity: Tensor, hardness: Tensor, widths: Tensor, total_charge: Tensor,
              system: Dict[str, Tensor]) -> Tensor:
        """The equilibrated charges (n,) e by a dense, differentiable solve of each frame's bordered
        system [[K, 1], [1ᵀ, 0]] [q; λ] = [−χ; Q] (module docstring): differentiable to every
        order in ``electronegativity`` χ (n,), ``hardness`` J (n,), ``widths`` (n,) Å and the
        geometry of ``system``; ``total_charge`` Q (B,) e."""
        batch = system[keys.BATCH]
        n = electronegativity.shape[0]
        n_frames = system[keys.CELL].shape[0]
        counts = torch.bincount(batch, minlength=n_frames)
        first = torch.cumsum(counts, 0) - counts
        index = torch.arange(n, device=batch.device)
        local = index - first.index_select(0, batch)  # each atom's place in its frame
        m = int(counts.max())
        dtype = electronegativity.dtype
        # channel c: a unit charge on the c-th atom of every frame (frames do not interact)
        unit = torch.zeros(n, m, dtype=dtype, device=electronegativity.device)
        unit = unit.index_put([index, local], torch.ones_like(electronegativity))
        phi = self.engine.potential(unit, system[keys.POSITIONS], system[keys.CELL], system[keys.PBC], batch,
                                    system[keys.EDGE_INDEX], system[keys.EDGE_VEC], widths)
        a = torch.zeros(n_frames, m, m, dtype=dtype, device=phi.device).index_put([batch, local], phi)
        mask = torch.zeros(n_frames, m, dtype=dtype, device=phi.device).index_put(
            [batch, local], torch.ones_like(electronegativity))
        # padding rows and columns: 1 on the diagonal, 0 in the border, so their charges are 0
        diagonal = torch.zeros_like(mask).index_put([batch, local], hardness) + (1.0 - mask)
        k = 0.5 * (a + a.transpose(1, 2)) + torch.diag_embed(diagonal)
        top = torch.cat([k, mask.unsqueeze(2)], dim=2)
        bottom = torch.cat([mask, torch.zeros_like(mask[:, :1])], dim=1).unsqueeze(1)
        rhs = torch.cat([torch.zeros_like(mask).index_put([batch, local], -electronegativity),
                         total_charge.to(dtype).unsqueeze(1)], dim=1)
        solution = torch.linalg.solve(torch.cat([top, bottom], dim=1), rhs.unsqueeze(2)).squeeze(2)
        return solution[:, :m].reshape(-1).index_select(0, batch * m + local)

    def _project(self, values: Tensor, batch: Tensor, counts: Tensor) -> Tensor:
        """``values`` (n,) minus their frame means: the component with Σ_frame = 0."""
        mean = frame_sums(values, batch, counts.shape[0]) / torch.clamp(counts, min=1.0)
        return values - mean.index_select(0, batch)

    def adjoint_correction(self, energy: Tensor, charges: Tensor, electronegativity: Tensor, hardness: Tensor,
                           widths: Tensor, system: Dict[str, Tensor]) -> Tensor:
        """Per-atom terms (n,) (values ~0) that give ``energy`` (any shape, summed) its derivatives
        through the charges (module docstring). ``charges``: this module's output (n,) made a leaf
        that requires grad, on which ``energy`` depends; the inputs of :meth:`forward` with their
        gradients. Zeros when gradients are off or ``energy`` does not depend on the charges."""
        zeros = torch.zeros_like(electronegativity)
        if not (torch.is_grad_enabled() and charges.requires_grad):
            return zeros
        g = torch.autograd.grad([energy.sum()], [charges], retain_graph=True, allow_unused=True)[0]
        if g is None:
            return zeros
        u = self.forward(-g, hardness, widths, torch.zeros_like(system[keys.CELL][:, 0, 0]), system)
        residual, multiplier = self.residual(charges.detach(), electronegativity, hardness, widths, system)
        return -u * (residual + multiplier)

    def residual(self, charges: Tensor, electronegativity: Tensor, hardness: Tensor, widths: Tensor,
                 system: Dict[str, Tensor]) -> Tuple[Tensor, Tensor]:
        """K q + χ (n,), differentiable, and the detached per-atom Lagrange multiplier λ (n,) that
        makes each frame's terms vanish at the solution (K q + χ + λ = 0)."""
        residual = self.apply(charges, hardness, widths, system) + electronegativity
        batch = system[keys.BATCH]
        n_frames = system[keys.CELL].shape[0]
        counts = frame_sums(torch.ones_like(charges), batch, n_frames)
        mean = frame_sums(residual.detach(), batch, n_frames) / torch.clamp(counts, min=1.0)
        return residual, -mean.index_select(0, batch)
