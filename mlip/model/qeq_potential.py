"""A fourth-generation HDNNP (Ko et al., Nat. Commun. 12, 398 (2021)): charges from a global
charge equilibration, short-range energies that see the charges, and the electrostatics.

For each frame (total charge Q, e) and atom i of element s_i, with G_i its (normalised)
descriptors:

1. electronegativity χ_i = c_χ · NN^χ_{s_i}(G_i)  (eV/e; ``electronegativity_scale`` c_χ);
2. charges q minimise  E_QEq(q) = Σ_i (χ_i q_i + ½ J_{s_i} q_i²) + ½ Σ_ij q_i A_ij q_j  under
   Σ_i q_i = Q, with A the Coulomb operator of Gaussian charges of widths σ_{s_i} (Å, standard
   deviations; their self-interaction k_e/(√π σ_i) on the diagonal) and J the element
   hardnesses (eV/e², the magnitude of the ``hardness`` parameter, so that J ≥ 0 however
   training moves it): :class:`~mlip.physics.qeq.ChargeEquilibration` on the Coulomb engine
   (Ewald for periodic frames, a direct sum for clusters);
3. short-range energy E_i^short = shift_{s_i} + c_E · NN^E_{s_i}(G_i, q_i), the charge being
   the network's last input (in e, unscaled);
4. electrostatic energy (n2p2's definition, without the χ and J terms):
   E_elec = ½ qᵀ A q − Σ_i k_e q_i² / (2√π σ_i) − ½ Σ_{i≠j, r_ij < r_out} k_e q_i q_j
   erf(r_ij / √(2(σ_i² + σ_j²))) f(r_ij) / r_ij,
   i.e. the interaction of the Gaussian charges without their self-energies, with the pairs
   closer than ``screening`` = (r_in, r_out) screened: f = 1 below r_in, ½(cos(π x) + 1) with
   x = (r − r_in)/(r_out − r_in) between, 0 beyond (n2p2's ``screen_electrostatics``, its
   cosine core function). Per atom, E_i^elec = ½ q_i φ_i − k_e q_i²/(2√π σ_i) − ½ Σ_j (screened
   pair terms of i), so the atomic energies sum to the total.

Total energy E = Σ_i (E_i^short + E_i^elec + Σ_terms E_i^term), the terms being physics terms
that do not read charges (the repulsive core of ``model.repulsion``). Forces and the virial are
its total derivatives, the charges' response to positions and cell included. Two solves, by the
module's mode:

- evaluation (``eval()``: exported models, ASE, LAMMPS, ``mlip evaluate``): conjugate gradients
  (:meth:`ChargeEquilibration.forward`, no dense matrix, O(N log N) products) and the adjoint
  correction of :meth:`ChargeEquilibration.adjoint_correction` (one more solve), added to the
  atomic energies (its values vanish to the solver tolerance): first derivatives exact to the
  solver tolerance. A charge equilibration that does not converge raises an error (never NaN
  forces);
- training (``train()``, as ``mlip train`` runs it): the dense differentiable solve
  (:meth:`ChargeEquilibration.dense`, O(n_b²) memory per frame of n_b atoms), so that the
  gradient of a force loss with respect to the parameters of χ and J is exact (the adjoint
  correction's second derivatives are not). Both give the same charges, energies and forces
  to the solver tolerance.

Periodic frames: the screened pair sum counts each pair (i, j + image) once; n2p2 counts an
atom's own images within r_out twice (cells shorter than r_out only).

The model is long-range (every atom's charge depends on the whole frame): ``compute`` and
``forward`` need whole frames (``n_local`` = all atoms) whose edges hold every pair within
:attr:`cutoff`, the largest of the descriptors' cutoff, r_out and the Coulomb engine's
real-space cutoff. It has no LAMMPS Coulomb path (``lammps_charges``): LAMMPS runs it in the
plugin's gathered path.

TorchScript-compiled: no ``from __future__ import annotations`` here.
"""

import math
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from mlip import keys
from mlip.model.networks import ElementNetworks
from mlip.model.potential import Potential
from mlip.physics.base import PhysicsTerm
from mlip.physics.coulomb import CoulombEngine
from mlip.physics.qeq import ChargeEquilibration, frame_sums


def screening_factor(r: Tensor, inner: float, outer: float) -> Tensor:
    """n2p2's screening core f(r) (dimensionless, shape of ``r`` Å): 1 below ``inner``, 0 from
    ``outer`` on, ½(cos(π x) + 1) with x = (r − inner)/(outer − inner) between."""
    if outer <= inner:
        return torch.zeros_like(r)
    x = torch.clamp((r - inner) / (outer - inner), 0.0, 1.0)
    return 0.5 * (torch.cos(math.pi * x) + 1.0)


class QEqPotential(Potential):
    """A 4G-HDNNP (module docstring) on a descriptor set.

    Args:
        descriptors: the descriptor set (its ``cutoff`` Å and ``n_features`` F).
        elements: element symbols, sorted by atomic number.
        hidden_electronegativity: hidden widths of the electronegativity networks (F inputs).
        hidden_short: hidden widths of the short-range networks (F + 1 inputs: G, q).
        widths: (n_species,) Å, Gaussian charge widths σ (standard deviations).
        hardness: (n_species,) eV/e², J.
        engine: the Coulomb engine (its prefactor k_e sets the energy unit; its ``max_width``
            must cover ``widths`` for periodic frames).
        screening: (r_in, r_out) Å; (0, 0) for none.
        activation: hidden activation of both network sets (n2p2 imports set theirs per layer).
        tolerance, max_iterations: of the conjugate-gradient solve (:mod:`mlip.physics.qeq`).
        physics: physics terms that do not read charges (the repulsive core), added to the
            atomic energies.

    Buffers ``electronegativity_scale`` (eV/e per network unit) and the inherited
    ``energy_shift`` (n_species,) eV and ``energy_scale`` (eV per network unit) of the
    short-range energies; ``hardness`` is a parameter (J = its magnitude).
    """

    screen_inner: float
    screen_outer: float

    def __init__(self, descriptors: torch.nn.Module, elements: List[str], hidden_electronegativity: List[int],
                 hidden_short: List[int], widths: Tensor, hardness: Tensor, engine: CoulombEngine,
                 screening: Tuple[float, float] = (0.0, 0.0), activation: str = "tanh",
                 tolerance: float = 1e-13, max_iterations: int = 2000,
                 physics: Optional[List[PhysicsTerm]] = None) -> None:
        super().__init__(descriptors, elements, hidden_electronegativity, activation, physics=physics)
        n_species = len(elements)
        n_in = int(descriptors.n_features)
        self.short_networks = ElementNetworks(n_species, n_in + 1, list(hidden_short), activation)
        self.qeq = ChargeEquilibration(engine, tolerance, max_iterations)
        self.register_buffer("widths", torch.as_tensor(widths, dtype=torch.float64).clone())
        self.hardness = torch.nn.Parameter(torch.as_tensor(hardness, dtype=torch.float64).clone())
        self.register_buffer("electronegativity_scale", torch.ones((), dtype=torch.float64))
        self.screen_inner = float(screening[0])
        self.screen_outer = float(screening[1])
        self.cutoff = float(max(self.cutoff, self.screen_outer, engine.cutoff))
        self.long_range = True
        self.has_charges = True

    def _energies(self, data: Dict[str, Tensor], pos: Tensor, edge_vec: Tensor, cell: Tensor,
                  total_charge: Tensor, n_local: int, lammps: bool = False,
                  short_range: bool = False) -> Dict[str, Tensor]:
        """``energy`` (B,) eV, ``atomic_energies`` (n,) eV, ``charges`` (n,) e and
        ``extrapolation`` (n,) of whole frames (inputs as :meth:`Potential._energies`)."""
        species = data[keys.SPECIES]
        edge_index = data[keys.EDGE_INDEX]
        batch = data[keys.BATCH]
        if short_range:
            raise RuntimeError("qeq: a 4G-HDNNP has no short-range Coulomb path; LAMMPS runs it whole")
        if n_local != species.shape[0]:
            raise RuntimeError("qeq: charge equilibration needs whole frames (n_local = all "
                               + str(species.shape[0]) + " atoms, got " + str(n_local) + ")")
        # the descriptors see their own pairs only (the edges reach the Coulomb cutoff)
        near = torch.nonzero(torch.linalg.vector_norm(edge_vec.detach(), dim=1)
                             < float(self.descriptors.cutoff)).squeeze(1)
        near_index = edge_index.index_select(1, near)
        near_vec = self._descriptor_edges(species, near_index, edge_vec.index_select(0, near))
        features = self.descriptors(species, near_index, near_vec, n_local)
        # the charge problem's geometry, and the physics terms' input
        system: Dict[str, Tensor] = {keys.POSITIONS: pos, keys.SPECIES: species, keys.CELL: cell,
                                     keys.PBC: data[keys.PBC], keys.BATCH: batch, keys.EDGE_INDEX: edge_index,
                                     keys.EDGE_VEC: edge_vec, keys.TOTAL_CHARGE: total_charge}
        chi = self.electronegativity_scale.to(features.dtype) * self.networks(features, species)[:, 0]
        hardness = self.hardness.to(features.dtype).abs().index_select(0, species)
        widths = self.widths.to(features.dtype).index_select(0, species)
        if self.training:  # differentiable to every order (module docstring)
            charges = self.qeq.dense(chi, hardness, widths, total_charge, system)
        else:
            charges = self.qeq(chi, hardness, widths, total_charge, system)
            if torch.is_grad_enabled() and (chi.requires_grad or pos.requires_grad or edge_vec.requires_grad
                                            or cell.requires_grad):
                charges = charges.requires_grad_(True)

        short = self.short_networks(torch.cat([features, charges.unsqueeze(1)], dim=1), species)[:, 0]
        atomic = self.energy_shift.to(short.dtype).index_select(0, species) \
            + self.energy_scale.to(short.dtype) * short + self.electrostatic_energies(charges, widths, system)
        for term in self.physics:
            if not (lammps and term.lammps_overlay):
                atomic = atomic + term(system, n_local)
        n_frames = cell.shape[0]
        if not self.training:
            energy = frame_sums(atomic, batch, n_frames)
            atomic = atomic + self.qeq.adjoint_correction(energy, charges, chi, hardness, widths, system)
        return {keys.ENERGY: frame_sums(atomic, batch, n_frames), keys.ATOMIC_ENERGIES: atomic,
                keys.CHARGES: charges, keys.EXTRAPOLATION: self._extrapolation(features, species)}

    def electrostatic_energies(self, charges: Tensor, widths: Tensor, system: Dict[str, Tensor]) -> Tensor:
        """E_i^elec (n,) eV of ``charges`` (n,) e with Gaussian ``widths`` (n,) Å (module
        docstring), differentiable in the charges and the geometry of ``system``."""
        engine = self.qeq.engine
        phi = engine.potential(charges.unsqueeze(1), system[keys.POSITIONS], system[keys.CELL],
                               system[keys.PBC], system[keys.BATCH], system[keys.EDGE_INDEX],
                               system[keys.EDGE_VEC], widths).squeeze(1)
        own = engine.coulomb / (2.0 * math.sqrt(math.pi)) * charges * charges / widths
        energies = 0.5 * charges * phi - own
        if self.screen_outer > 0.0:
            edge_index = system[keys.EDGE_INDEX]
            src = edge_index[0]
            dst = edge_index[1]
            r = torch.linalg.vector_norm(system[keys.EDGE_VEC], dim=1)
            close = torch.nonzero(r.detach() < self.screen_outer).squeeze(1)
            i = src.index_select(0, close)
            j = dst.index_select(0, close)
            r = r.index_select(0, close)
            pair_width = torch.sqrt(2.0 * (widths.index_select(0, i).square()
                                           + widths.index_select(0, j).square()))
            pair = engine.coulomb * charges.index_select(0, i) * charges.index_select(0, j) \
                * torch.erf(r / pair_width) * screening_factor(r, self.screen_inner, self.screen_outer) / r
            energies = energies.index_add(0, i, -0.5 * pair)
        return energies


def qeq_metadata(model: QEqPotential) -> Dict[str, Any]:
    """The ``model.pt`` metadata of a 4G model (:func:`mlip.export.model_metadata` adds it):
    ``long_range`` true (LAMMPS runs it gathered: every rank solves the whole charge problem) and
    ``qeq``: widths Å, hardness J eV/e² per element, screening (r_in, r_out) Å, the Coulomb
    engine's cutoff Å, accuracy and mode."""
    engine = model.qeq.engine
    return {"long_range": True, "qeq": {
        "widths_angstrom": dict(zip(model.elements, model.widths.tolist(), strict=True)),
        "hardness_ev": dict(zip(model.elements, model.hardness.detach().abs().tolist(), strict=True)),
        "screening_angstrom": [model.screen_inner, model.screen_outer],
        "coulomb_cutoff": engine.cutoff, "coulomb_accuracy": engine.accuracy, "coulomb_mode": engine.mode,
    }}
