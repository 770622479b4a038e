"""The potential: per-element networks on descriptors, plus physics terms.

Energy of atom i: E_i = shift[s_i] + scale · NN_{s_i}(D_i) + Σ_terms E_i^term, with D_i
the (normalised) descriptors of atom i and s_i its element. Forces are
−∂E/∂x and the virial is −∂E/∂ε for a homogeneous strain ε applied to
positions, image shifts and cell (x → x(I+ε), rows), so every term, the
long-range ones included, gets a correct stress from one autograd pass.
The deployed ``forward`` of a short-range model differentiates through the edge vectors
r_ij instead (its energy depends on positions only through them): one autograd pass gives
the edge forces −∂E/∂r_ij, whose sums are the forces and Σ r_ij ⊗ (−∂E/∂r_ij) the virial.
"""

from typing import Any, Dict, List, Optional

import torch
from torch import Tensor

from mlip import keys
from mlip.model.committee import (
    CommitteeNetworks,
    add_member_derivatives,
    deployed_outputs,
    edge_member_forces,
    energy_deviation,
    keep_member_inputs,
    member_energies,
    member_gradients,
    member_inputs,
    pop_member_inputs,
)
from mlip.model.networks import ElementNetworks
from mlip.physics.base import PhysicsTerm
from mlip.physics.charges import FixedCharges, enforce_total_charge, initial_charges

# buffers added after the first checkpoints were written (training-data ranges, per-pair ZBL
# radii): a state dict without them loads, keeping the values the model was built or fitted with
_LATER_BUFFERS = ("min_pair_distance", "min_pair_seen", "feature_min", "feature_max",
                  "inner_pair", "outer_pair")


def _fold_lattice_normalization(model: torch.nn.Module, state_dict: Dict[str, Any], prefix: str,
                                *args: Any) -> None:
    """``load_state_dict`` pre-hook of :class:`Potential`: a checkpoint written when the PotNet
    lattice sums were a separate path of the model (``lattice_mean``/``lattice_std``, one mean and
    std per lattice feature, appended after the descriptors) loads into a model whose descriptor
    set holds them (built from the same config, local descriptors first): their statistics become
    the last columns of every element's ``descriptors.mean``/``std``, the same normalised
    features, and the feature range of those columns is unknown (±inf)."""
    if prefix + "lattice_mean" not in state_dict:
        return
    lattice_mean = state_dict.pop(prefix + "lattice_mean")
    lattice_std = state_dict.pop(prefix + "lattice_std")
    n_lattice = lattice_mean.shape[0]
    for name, extra in (("descriptors.mean", lattice_mean), ("descriptors.std", lattice_std),
                        ("feature_min", torch.full_like(lattice_mean, -torch.inf)),
                        ("feature_max", torch.full_like(lattice_mean, torch.inf))):
        old = state_dict.get(prefix + name)
        if old is not None and old.shape[1] + n_lattice == model.descriptors.n_features:
            state_dict[prefix + name] = torch.cat([old, extra.to(old.dtype).expand(old.shape[0], -1)], dim=1)


def _allow_later_buffers(model: torch.nn.Module, incompatible: Any) -> None:
    """``load_state_dict`` post-hook of :class:`Potential`: missing later buffers, and the whole
    ``core`` term (absent from checkpoints written before it), are not an error."""
    cores = tuple(f"physics.{k}." for k, t in enumerate(model.physics) if t.name == "core")
    missing = [k for k in incompatible.missing_keys
               if k.rsplit(".", 1)[-1] not in _LATER_BUFFERS and not k.startswith(cores)]
    incompatible.missing_keys[:] = missing


def stress_from_virial(virial: Tensor, cell: Tensor, pbc: Tensor) -> Tensor:
    """Stress σ = −W/V (B, 3, 3) eV/Å³ from the virial W (B, 3, 3) eV, with V = |det(cell)|
    (cell (B, 3, 3) Å rows); NaN for frames whose ``pbc`` (B, 3) is not all true."""
    volume = torch.linalg.det(cell).abs()
    periodic = pbc.all(dim=1) & (volume > 0)
    stress = -virial / torch.where(periodic, volume, torch.ones_like(volume))[:, None, None]
    return torch.where(periodic[:, None, None], stress, torch.full_like(stress, float("nan")))


class Potential(torch.nn.Module):
    """A machine-learned interatomic potential.

    Args:
        descriptors: module ``(species, edge_index, edge_vec, n_centers) -> (n_centers, F)``
            with attributes ``cutoff`` (Å) and ``n_features``; a descriptor set with
            ``long_range`` (global descriptors such as PotNet's lattice sums, see
            :class:`fingerprints.DescriptorSet`) gets the batch dict too (the strained positions
            and cell), and makes the model long-range.
        elements: element symbols, sorted by atomic number; ``species`` indexes this list.
        hidden: hidden layer widths of each element's network.
        activation: hidden activation (see :mod:`mlip.model.activations`).
        physics: physics terms added to the atomic energies.
        charges: where atomic charges come from, for terms that need them (Ewald): ``"none"``,
            ``"network"`` (a second output of each element's network) or ``"fixed"`` (one learnable
            charge per element). Either way they are shifted per frame to the frame's total charge
            and passed to the physics terms as ``data["charges"]``.
        committee: number of members K; K >= 2 gives each its own per-element networks on the
            shared descriptors (:mod:`mlip.model.committee`): the outputs are the members' mean,
            plus ``member_energy`` and ``energy_deviation`` and, with ``deviation``, the
            per-member forces and force deviations. A committee has no charges.

    Training-data ranges (buffers, set by the trainer; see :mod:`mlip.physics.core`):
    ``min_pair_distance`` (n_species, n_species) Å, the shortest distance of each element pair
    in the training frames, or a fallback for pairs they lack (``min_pair_seen`` false; 0 =
    unknown); with a ``core`` physics term (``clamp_close_pairs``)
    the descriptors see every shorter pair at that distance. ``feature_min``/``feature_max``
    (n_species, F): each element's range of the normalised descriptors in the training frames
    (−inf/+inf = unknown); ``compute`` and ``forward`` return ``extrapolation`` (n_local,), how
    far each atom's features lie outside it, in units of the range's width (at least 1, the
    normalised features' unit, so that features constant in training do not blow up; 0 inside).
    """

    # forward's extra output: F_e = −∂E/∂r_ij (E, 3) eV/Å per edge e = (i, j), the force on j
    elements: List[str]
    cutoff: float
    has_charges: bool
    network_charges: bool
    long_range: bool
    clamp_close_pairs: bool
    committee: int

    def __init__(
        self,
        descriptors: torch.nn.Module,
        elements: List[str],
        hidden: List[int],
        activation: str = "silu",
        physics: Optional[List[PhysicsTerm]] = None,
        charges: str = "none",
        committee: int = 1,
    ) -> None:
        super().__init__()
        physics = list(physics or [])
        if committee < 1 or (committee > 1 and charges != "none"):
            raise ValueError(f"committee must be >= 1 and without charges, got {committee} "
                             f"(charges {charges!r})")
        self.committee = int(committee)
        if charges not in ("none", "network", "fixed"):
            raise ValueError(f"charges must be 'none', 'network' or 'fixed', got {charges!r}")
        if charges == "none" and any(t.needs_charges for t in physics):
            raise ValueError("a physics term needs charges: use charges='network' or 'fixed'")
        self.elements = list(elements)
        self.descriptors = descriptors
        self.has_charges = charges != "none"
        self.network_charges = charges == "network"
        n_species = len(self.elements)
        n_in = int(descriptors.n_features)
        if committee > 1:
            self.networks = CommitteeNetworks([ElementNetworks(n_species, n_in, list(hidden), activation)
                                               for _ in range(committee)])
        else:
            self.networks = ElementNetworks(n_species, n_in, list(hidden), activation,
                                            n_out=2 if self.network_charges else 1)
        if self.network_charges:  # the charge output starts at initial_charges, nearly flat
            with torch.no_grad():
                for net, q0 in zip(self.networks.nets, initial_charges(self.elements), strict=True):
                    last = net[-1]
                    last.weight[1].mul_(0.1)
                    last.bias[1].fill_(q0)
        self.fixed_charges = torch.nn.ModuleList([FixedCharges(self.elements)] if charges == "fixed" else [])
        self.physics = torch.nn.ModuleList(physics)
        # every term's edge range counts, the long-range ones' too (Ewald's real-space sum runs over
        # the model's edges): an edge list for a smaller cutoff would lose their pairs
        self.cutoff = float(max([float(descriptors.cutoff)] + [t.cutoff for t in physics]))
        self.long_range = (any(t.long_range for t in physics)
                           or bool(getattr(descriptors, "long_range", False)))  # global descriptors
        self.clamp_close_pairs = any(t.name == "core" for t in physics)
        self.register_buffer("min_pair_distance", torch.zeros(n_species, n_species, dtype=torch.float64))
        self.register_buffer("min_pair_seen", torch.zeros(n_species, n_species, dtype=torch.bool))
        shape = (n_species, int(descriptors.n_features))
        self.register_buffer("feature_min", torch.full(shape, -torch.inf, dtype=torch.float64))
        self.register_buffer("feature_max", torch.full(shape, torch.inf, dtype=torch.float64))
        self.register_buffer("energy_shift", torch.zeros(n_species, dtype=torch.float64))
        self.register_load_state_dict_post_hook(_allow_later_buffers)
        self.register_load_state_dict_pre_hook(_fold_lattice_normalization)
        self.register_buffer("energy_scale", torch.ones((), dtype=torch.float64))

    def set_energy_reference(self, shift: Tensor, scale: float) -> None:
        """Set per-element reference energies (n_species,) eV and the network energy scale (eV)."""
        self.energy_shift.copy_(torch.as_tensor(shift, dtype=self.energy_shift.dtype))
        self.energy_scale.fill_(float(scale))

    @torch.jit.unused
    def set_min_pair_distance(self, r_min: Tensor, seen: Tensor) -> None:
        """Record the shortest distance per element pair, (n_species, n_species) Å, symmetric,
        > 0: the training data's where ``seen`` (n_species, n_species) bool, a fallback elsewhere;
        the ``core`` terms switch off there."""
        self.min_pair_distance.copy_(r_min.to(self.min_pair_distance.dtype))
        self.min_pair_seen.copy_(seen)
        for term in self.physics:
            if term.name == "core":
                term.set_min_distance(r_min)

    @torch.jit.unused
    def set_feature_range(self, low: Tensor, high: Tensor) -> None:
        """Record each element's range of the normalised descriptors in the training frames,
        ``low``/``high`` (n_species, F); ±inf for elements without atoms."""
        self.feature_min.copy_(low.to(self.feature_min.dtype))
        self.feature_max.copy_(high.to(self.feature_max.dtype))

    def _descriptor_edges(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor) -> Tensor:
        """``edge_vec`` (E, 3) Å with every edge shorter than its pair's ``min_pair_distance``
        stretched to that length (``clamp_close_pairs``), the edges the descriptors see."""
        if not self.clamp_close_pairs:
            return edge_vec
        r = torch.linalg.vector_norm(edge_vec, dim=1)
        floor = self.min_pair_distance.to(edge_vec.dtype)[species[edge_index[0]], species[edge_index[1]]]
        close = torch.nonzero(r < floor).squeeze(1)
        if close.numel() == 0:
            return edge_vec
        scale = floor.index_select(0, close) / r.index_select(0, close)
        return edge_vec.index_put((close,), edge_vec.index_select(0, close) * scale.unsqueeze(1))

    def _extrapolation(self, features: Tensor, species: Tensor) -> Tensor:
        """(n_local,) how far each atom's normalised features (n_local, F) lie outside its
        element's training range, max over features of the excess / the range's width."""
        if features.shape[1] == 0:
            return torch.zeros(features.shape[0], dtype=features.dtype, device=features.device)
        features = features.detach()
        low = self.feature_min.to(features.dtype).index_select(0, species)
        high = self.feature_max.to(features.dtype).index_select(0, species)
        width = torch.clamp(high - low, min=1.0)  # features (nearly) constant in training: 1 normalised unit
        return (torch.maximum(torch.relu(low - features), torch.relu(features - high)) / width).amax(dim=1)

    def _energies(self, data: Dict[str, Tensor], pos: Tensor, edge_vec: Tensor, cell: Tensor,
                  total_charge: Tensor, n_local: int, lammps: bool = False,
                  short_range: bool = False) -> Dict[str, Tensor]:
        """``energy`` (B,) eV, ``atomic_energies`` (n_local,) eV and, for charge models,
        ``charges`` (n_local,) e, from the positions ``pos`` (N, 3) Å, edge vectors ``edge_vec``
        (E, 3) Å and ``cell`` (B, 3, 3) Å that the derivatives are taken through (strained, or
        leaves of the autograd graph); the other inputs come from ``data``. ``lammps``: leave out
        the terms LAMMPS computes itself (``lammps_overlay``, set by ``mlip export``).
        ``short_range``: leave out the long-range terms too, and return the charges before the
        total-charge shift (the LAMMPS Coulomb path, :meth:`lammps_charges`)."""
        species = data[keys.SPECIES]
        edge_index = data[keys.EDGE_INDEX]
        batch = data[keys.BATCH]
        local_species = species[:n_local]
        terms: Dict[str, Tensor] = {
            keys.POSITIONS: pos,
            keys.SPECIES: species,
            keys.EDGE_INDEX: edge_index,
            keys.EDGE_VEC: edge_vec,
            keys.CELL: cell,
            keys.PBC: data[keys.PBC],
            keys.BATCH: batch,
            keys.TOTAL_CHARGE: total_charge,
        }
        seen_edges = self._descriptor_edges(species, edge_index, edge_vec)
        if hasattr(self.descriptors, "long_range"):  # a descriptor set: global descriptors get the batch
            features = self.descriptors(species, edge_index, seen_edges, n_local, terms)
        else:
            features = self.descriptors(species, edge_index, seen_edges, n_local)
        extrapolation = self._extrapolation(features, local_species)
        terms[keys.FEATURES] = features  # the networks' input, for terms with learned inputs (ewald_mp)
        network_input = features
        if self.committee > 1:  # each member reads its own view, for its own gradient (deviation)
            network_input = member_inputs(features, self.committee)
        out = self.networks(network_input, local_species)
        atomic = self.energy_shift.to(out.dtype).index_select(0, local_species) \
            + self.energy_scale.to(out.dtype) * out[:, 0]

        results: Dict[str, Tensor] = {}
        for fixed in self.fixed_charges:
            q = fixed.charge.to(out.dtype).index_select(0, local_species) if short_range \
                else fixed(terms, n_local)
            terms[keys.CHARGES] = q
            results[keys.CHARGES] = q
        if self.network_charges:
            q = out[:, 1] if short_range else enforce_total_charge(out[:, 1], batch[:n_local], total_charge)
            terms[keys.CHARGES] = q
            results[keys.CHARGES] = q
        for term in self.physics:
            if not (lammps and term.lammps_overlay) and not (short_range and term.long_range):
                atomic = atomic + term(terms, n_local)

        energy = torch.zeros(cell.shape[0], dtype=atomic.dtype, device=atomic.device)
        results[keys.ENERGY] = energy.index_add(0, batch[:n_local], atomic)
        results[keys.ATOMIC_ENERGIES] = atomic
        if self.committee > 1:  # out: the members' mean, then each member's (CommitteeNetworks)
            members = member_energies(results[keys.ENERGY], out, self.energy_scale, batch[:n_local])
            results[keys.MEMBER_ENERGY] = members
            results[keys.ENERGY_DEVIATION] = energy_deviation(members, batch[:n_local])
            keep_member_inputs(results, network_input)  # the callers pop them
        results[keys.EXTRAPOLATION] = extrapolation
        return results

    def compute(
        self,
        data: Dict[str, Tensor],
        compute_forces: bool = True,
        compute_virial: bool = True,
        create_graph: bool = False,
        n_local: int = -1,
        lammps: bool = False,
        deviation: bool = False,
    ) -> Dict[str, Tensor]:
        """Energies and derivatives for a batch of frames.

        ``data`` holds the model inputs named in :mod:`mlip.keys` (other entries, such as
        labels, are ignored); ``total_charge`` may be absent (neutral frames). ``n_local``: the
        first ``n_local`` atoms are the ones whose energies count (LAMMPS: local atoms, then
        ghosts); -1 = all atoms. Edges start at local atoms. ``lammps``: the LAMMPS path, without
        the terms an exported model hands to LAMMPS' own pair styles (``lammps_overlay``).

        Returns ``energy`` (B,) eV, ``atomic_energies`` (n_local,) eV and, as requested,
        ``forces`` (N, 3) eV/Å, ``virial`` (B, 3, 3) eV and ``stress`` (B, 3, 3) eV/Å³
        (−virial/V, NaN for frames not periodic in all three directions); ``charges``
        (n_local,) e for charge models; ``extrapolation`` (n_local,) (see the class).
        Committees also return ``member_energy`` and ``energy_deviation`` and, with
        ``deviation``, the members' derivatives (:func:`~mlip.model.committee.member_gradients`):
        ``member_forces``, ``force_deviation``, ``max_force_deviation``, ``member_virial``
        (:mod:`mlip.keys`).
        """
        positions = data[keys.POSITIONS]
        species = data[keys.SPECIES]
        edge_index = data[keys.EDGE_INDEX]
        cell = data[keys.CELL]
        batch = data[keys.BATCH]
        if n_local < 0:
            n_local = int(species.shape[0])
        n_frames = cell.shape[0]
        if keys.TOTAL_CHARGE in data:
            total_charge = data[keys.TOTAL_CHARGE]
        else:
            total_charge = torch.zeros(n_frames, dtype=positions.dtype, device=positions.device)
        strain = torch.zeros(n_frames, 3, 3, dtype=positions.dtype, device=positions.device)
        if compute_forces:
            positions = positions.detach().requires_grad_(True)
        if compute_virial:
            strain.requires_grad_(True)
        pos = positions + torch.bmm(positions.unsqueeze(1), strain.index_select(0, batch)).squeeze(1)
        src = edge_index[0]
        dst = edge_index[1]
        edge_strain = strain.index_select(0, batch.index_select(0, src))
        edge_shift = data[keys.EDGE_SHIFT]
        shift = edge_shift + torch.bmm(edge_shift.unsqueeze(1), edge_strain).squeeze(1)
        edge_vec = pos.index_select(0, dst) - pos.index_select(0, src) + shift
        strained_cell = cell + torch.bmm(cell, strain)

        results = self._energies(data, pos, edge_vec, strained_cell, total_charge, n_local, lammps)
        inputs_of_members = pop_member_inputs(results)
        if compute_forces or compute_virial:
            inputs: List[Tensor] = []
            if compute_forces:
                inputs.append(positions)
            if compute_virial:
                inputs.append(strain)
            grads = torch.autograd.grad([results[keys.ENERGY].sum()], inputs,
                                        retain_graph=create_graph or deviation, create_graph=create_graph,
                                        allow_unused=True)
            if deviation and inputs_of_members is not None:
                member_grads = member_gradients(results[keys.MEMBER_ENERGY], inputs_of_members, grads, inputs,
                                                create_graph)
                add_member_derivatives(results, member_grads, compute_forces, compute_virial,
                                       batch[:n_local], n_local)
            k = 0
            if compute_forces:
                g = grads[k]
                results[keys.FORCES] = -g if g is not None else torch.zeros_like(positions)
                k += 1
            if compute_virial:
                g = grads[k]
                virial = -g if g is not None else torch.zeros_like(strain)
                results[keys.VIRIAL] = virial
                results[keys.STRESS] = stress_from_virial(virial, cell, data[keys.PBC])
        return results

    def _edge_frame(self, positions: Tensor, species: Tensor, edge_index: Tensor, edge_shift: Tensor,
                    cell: Tensor, pbc: Tensor) -> Dict[str, Tensor]:
        """The batch dict of one frame of the deployed interface (``cell`` (3, 3), ``pbc`` (3,))."""
        return {
            keys.POSITIONS: positions,
            keys.SPECIES: species,
            keys.EDGE_INDEX: edge_index,
            keys.EDGE_SHIFT: edge_shift,
            keys.CELL: cell.unsqueeze(0),
            keys.PBC: pbc.unsqueeze(0),
            keys.BATCH: torch.zeros(positions.shape[0], dtype=torch.long, device=positions.device),
        }

    def _compute_from_edges(self, data: Dict[str, Tensor], n_local: int,
                            potential: Optional[Tensor] = None, deviation: bool = False) -> Dict[str, Tensor]:
        """One frame of a short-range model, differentiated through the edge vectors only:
        its energy depends on positions only through r_ij = x_j − x_i + shift, so one autograd
        pass to ``edge_vec`` gives every derivative. Returns ``energy`` (1,) eV,
        ``atomic_energies`` (n_local,) eV, ``edge_forces`` F_e = −∂E/∂r_ij (E, 3) eV/Å (the
        force on j; −F_e acts on i), ``forces`` (N, 3) eV/Å (their sum on each atom),
        ``virial`` (1, 3, 3) eV = Σ_e r_ij ⊗ F_e (equal to −∂E/∂ε, the strain path of
        :meth:`compute`) and, for charge models, ``charges``.

        With ``potential`` (n_local,) eV/e (the LAMMPS Coulomb path, :meth:`lammps_coulomb_forces`)
        the model is taken without its long-range terms, and the derivatives are those of
        E + Σ_i potential_i q_i with q_i the charges before the total-charge shift (the energy
        and ``atomic_energies`` stay E's). With ``deviation``, a committee also returns
        ``member_forces`` (K, N, 3) eV/Å (:func:`~mlip.model.committee.member_gradients`)."""
        positions = data[keys.POSITIONS].detach()
        edge_index = data[keys.EDGE_INDEX]
        cell = data[keys.CELL]
        src = edge_index[0]
        dst = edge_index[1]
        edge_vec = positions.index_select(0, dst) - positions.index_select(0, src) + data[keys.EDGE_SHIFT]
        edge_vec = edge_vec.detach().requires_grad_(True)
        total_charge = torch.zeros(1, dtype=positions.dtype, device=positions.device)
        results = self._energies(data, positions, edge_vec, cell, total_charge, n_local, True,
                                 potential is not None)
        inputs_of_members = pop_member_inputs(results)
        target = results[keys.ENERGY].sum()
        if potential is not None and keys.CHARGES in results:
            target = target + (potential.to(positions.dtype) * results[keys.CHARGES]).sum()
        grads = torch.autograd.grad([target], [edge_vec], retain_graph=deviation, allow_unused=True)
        g = grads[0]
        edge_forces = -g if g is not None else torch.zeros_like(edge_vec)
        if deviation and inputs_of_members is not None:
            member_edge = -member_gradients(results[keys.MEMBER_ENERGY], inputs_of_members, grads, [edge_vec],
                                            False)[0]
            results[keys.MEMBER_FORCES] = edge_member_forces(member_edge, edge_index, positions.shape[0])
        forces = torch.zeros_like(positions).index_add(0, dst, edge_forces).index_add(0, src, -edge_forces)
        results[keys.EDGE_FORCES] = edge_forces
        results[keys.FORCES] = forces
        results[keys.VIRIAL] = (edge_vec.detach().t() @ edge_forces).unsqueeze(0)
        return results

    @torch.jit.export
    def typical_charges(self) -> Tensor:
        """(n_species,) e: each element's charge in the mean training environment (normalised
        descriptors 0; fixed charges as they are), shifted to a zero mean over the elements.
        LAMMPS' kspace chooses its parameters from the charges at set-up, before the model
        has run: ``pair_coeff`` starts an uncharged system from these (plugin README)."""
        n_species = len(self.elements)
        species = torch.arange(n_species, device=self.energy_scale.device)
        q = torch.zeros(n_species, dtype=torch.float64, device=self.energy_scale.device)
        for fixed in self.fixed_charges:
            q = fixed.charge.to(torch.float64)
        if self.network_charges:  # networks' inputs: the descriptors, in the model's dtype
            n_in = int(self.descriptors.n_features)
            zeros = torch.zeros(n_species, n_in, dtype=self.energy_shift.dtype,
                                device=self.energy_scale.device)
            q = self.networks(zeros, species)[:, 1].to(torch.float64)
        return q - q.mean()

    @torch.jit.export
    def lammps_charges(self, positions: Tensor, species: Tensor, edge_index: Tensor, edge_shift: Tensor,
                       cell: Tensor, pbc: Tensor, n_local: int) -> Dict[str, Tensor]:
        """The LAMMPS Coulomb path, step 1 (docs/architecture.md): inputs as :meth:`forward`.
        Without derivatives, returns ``atomic_energies`` (n_local,) eV of the model without its
        long-range (and LAMMPS overlay) terms, ``charges`` (n_local,) e before the total-charge
        shift, and ``extrapolation`` (n_local,)."""
        data = self._edge_frame(positions, species, edge_index, edge_shift, cell, pbc)
        with torch.no_grad():
            edge_vec = positions.index_select(0, edge_index[1]) - positions.index_select(0, edge_index[0]) \
                + edge_shift
            total_charge = torch.zeros(1, dtype=positions.dtype, device=positions.device)
            res = self._energies(data, positions, edge_vec, data[keys.CELL], total_charge, n_local,
                                 True, True)
        return {keys.ATOMIC_ENERGIES: res[keys.ATOMIC_ENERGIES], keys.CHARGES: res[keys.CHARGES],
                keys.EXTRAPOLATION: res[keys.EXTRAPOLATION]}

    @torch.jit.export
    def lammps_coulomb_forces(self, positions: Tensor, species: Tensor, edge_index: Tensor,
                              edge_shift: Tensor, cell: Tensor, pbc: Tensor, n_local: int, potential: Tensor,
                              edge_forces: bool = False) -> Dict[str, Tensor]:
        """The LAMMPS Coulomb path, step 2 (docs/architecture.md): ``potential`` (n_local,) eV/e
        is ∂E_coul/∂q_i of each centre's charge before the total-charge shift (LAMMPS' φ_i minus
        the mean φ over all atoms). Returns ``forces`` (N, 3) eV/Å, ``virial`` (3, 3) eV and, with
        ``edge_forces``, ``edge_forces`` (E, 3) eV/Å of E_short + Σ_i potential_i q_i: the
        model's forces without the fixed-charge Coulomb forces, which LAMMPS adds."""
        data = self._edge_frame(positions, species, edge_index, edge_shift, cell, pbc)
        res = self._compute_from_edges(data, n_local, potential)
        out = {keys.FORCES: res[keys.FORCES], keys.VIRIAL: res[keys.VIRIAL][0]}
        if edge_forces:
            out[keys.EDGE_FORCES] = res[keys.EDGE_FORCES]
        return out

    def forward(
        self,
        positions: Tensor,
        species: Tensor,
        edge_index: Tensor,
        edge_shift: Tensor,
        cell: Tensor,
        pbc: Tensor,
        n_local: int,
        edge_forces: bool = False,
        deviation: bool = False,
    ) -> Dict[str, Tensor]:
        """The deployed interface (one frame; see docs/architecture.md).

        Returns ``energy`` () eV, ``atomic_energies`` (n_local,) eV, ``forces`` (N, 3) eV/Å,
        ``virial`` (3, 3) eV, ``extrapolation`` (n_local,) (see the class) and, for charge
        models, ``charges`` (n_local,) e. With
        ``edge_forces`` (short-range models only) also ``edge_forces`` (E, 3) eV/Å,
        F_e = −∂E/∂r_ij for each edge e = (i, j): the force the edge puts on j (−F_e on i),
        from which LAMMPS tallies per-atom virials. Short-range models always take their
        derivatives through the edge vectors (:meth:`_compute_from_edges`), long-range ones
        through positions and a strain (:meth:`compute`). A committee also returns
        ``member_energy`` (K,) eV and, with ``deviation``, ``member_forces`` (K, N, 3) eV/Å
        (:func:`~mlip.model.committee.deployed_outputs`).
        """
        data = self._edge_frame(positions, species, edge_index, edge_shift, cell, pbc)
        if self.long_range:
            if edge_forces:
                raise RuntimeError("edge_forces: a long-range model's energy is not a function of its edges")
            res = self.compute(data, True, True, False, n_local, True, deviation)
            del res[keys.STRESS]
        else:
            res = self._compute_from_edges(data, n_local, deviation=deviation)
            if not edge_forces:
                del res[keys.EDGE_FORCES]
        if self.committee > 1:
            res = deployed_outputs(res)
        res[keys.ENERGY] = res[keys.ENERGY][0]
        res[keys.VIRIAL] = res[keys.VIRIAL][0]
        return res
