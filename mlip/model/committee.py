"""Committee models: K members on shared descriptors, their mean and their deviation.

A committee :class:`~mlip.model.Potential` (``committee=K``, K >= 2) computes the descriptors
once and runs K members on them, each with its own per-element networks
(:class:`CommitteeNetworks`). Member k's atomic energy is
E_i^k = shift[s_i] + scale · NN^k_{s_i}(D_i) + Σ_terms E_i^term: descriptors and their
normalisation, reference energies, energy scale and physics terms are shared. The model's
``energy``, ``atomic_energies``, ``forces`` and ``virial`` are the members' mean; the
deviation outputs (docs/architecture.md) are

- ``energy_deviation`` (B,) eV/atom: the standard deviation over members of the frame
  energy (population, 1/K), divided by the frame's number of atoms;
- ``force_deviation`` (n_local,) eV/Å: d_i = sqrt(mean_k |F_i^k − F̄_i|²), F̄_i the mean force;
- ``max_force_deviation`` (B,) eV/Å: max_i d_i of each frame (DeePMD's ``max_devi_f``).

Per-member derivatives (``deviation``) are computed only on request; the mean forces alone take
one backward pass. Since E^k − E = scale · Σ_i (NN^k_i − NN̄_i) depends on the positions only
through the shared descriptors D, ∂E^k/∂x = ∂E/∂x + Jᵀ δ_k with J = ∂D/∂x and the members'
cotangents δ_k = scale · (g_k − mean_k g_k), g_k = ∂(Σ_i NN^k_i)/∂D (:func:`member_gradients`):
one backward pass through the networks alone gives every g_k (each member reads its own view of
D, :func:`member_inputs`), and the K − 1 descriptor passes Jᵀ δ_k (k < K − 1; Σ_k δ_k = 0 gives
the last) skip the networks and the physics terms. Everything here is TorchScript: the exported
``model.pt`` runs it in ASE and LAMMPS.
"""

from typing import Dict, List, Optional

import torch
from torch import Tensor

from mlip import keys
from mlip.model.networks import ElementNetworks


class CommitteeNetworks(torch.nn.Module):
    """The per-element networks of K members (each an :class:`ElementNetworks` with one output).

    forward(features, species (n,) int64) -> (n, 1 + K): column 0 is the members' mean output,
    column 1 + k member k's, so that column 0 takes the place of a single model's energy output.
    ``features``: (n, F), read by every member, or (K, n, F), member k reading row k (the same
    values, :func:`member_inputs`, so that each member's gradient can be taken alone).
    """

    n_members: int

    def __init__(self, members: List[ElementNetworks]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"a committee needs at least 2 members, got {len(members)}")
        if any(int(m.n_out) != 1 for m in members):
            raise ValueError("committee members have one output (energy); charges are not supported")
        self.n_members = len(members)
        self.members = torch.nn.ModuleList(members)

    def forward(self, features: Tensor, species: Tensor) -> Tensor:
        per_member = features.dim() == 3
        columns: List[Tensor] = []
        for k, member in enumerate(self.members):
            columns.append(member(features[k] if per_member else features, species)[:, 0])
        stacked = torch.stack(columns, dim=1)
        return torch.cat([stacked.mean(dim=1, keepdim=True), stacked], dim=1)


def member_energies(energy: Tensor, out: Tensor, scale: Tensor, local_batch: Tensor) -> Tensor:
    """Each member's frame energy (B, K) eV from the committee's mean ``energy`` (B,) eV, the
    networks' output ``out`` (n_local, 1 + K) (:class:`CommitteeNetworks`), the energy ``scale``
    (eV) and the frame of each local atom ``local_batch`` (n_local,):
    E^k = E + scale · Σ_i (NN^k_i − mean_k NN^k_i)."""
    delta = scale.to(out.dtype) * (out[:, 1:] - out[:, :1])
    zeros = torch.zeros(energy.shape[0], delta.shape[1], dtype=delta.dtype, device=delta.device)
    return energy.unsqueeze(1) + zeros.index_add(0, local_batch, delta)


def member_inputs(features: Tensor, n_members: int) -> Tensor:
    """The committee networks' input (K, n, F): ``features`` (n, F) once per member, a view (no
    copy) whose rows have their own gradients."""
    return features.expand(n_members, features.shape[0], features.shape[1])


def keep_member_inputs(results: Dict[str, Tensor], inputs_of_members: Tensor) -> None:
    """Keep the members' inputs (K, n_local, F) in ``results`` for :func:`pop_member_inputs`."""
    results["_member_inputs"] = inputs_of_members


def pop_member_inputs(results: Dict[str, Tensor]) -> Optional[Tensor]:
    """Remove the members' inputs that :func:`keep_member_inputs` put in ``results`` and return
    them (None for a single model): not an output."""
    if "_member_inputs" in results:
        return results.pop("_member_inputs")
    return None


def member_gradients(member_energy: Tensor, inputs_of_members: Tensor, mean_grads: List[Optional[Tensor]],
                     inputs: List[Tensor], create_graph: bool) -> List[Tensor]:
    """Each member's ∂E^k/∂x (K, *x.shape) for each input x (positions, strain or edge vectors),
    as ∂E/∂x + Jᵀ δ_k (module docstring), from the members' energies ``member_energy`` (B, K) eV,
    the networks' input ``inputs_of_members`` (K, n_local, F) (:func:`member_inputs`) and the
    committee's ``mean_grads`` ∂E/∂x (None where E does not depend on x), whose backward pass
    must have retained the graph. One backward pass through the networks, then K − 1 through the
    descriptors; ``create_graph``: differentiable results (training)."""
    n_members = inputs_of_members.shape[0]
    mean: List[Tensor] = []
    for i in range(len(inputs)):
        g = mean_grads[i]
        mean.append((g if g is not None else torch.zeros_like(inputs[i])).unsqueeze(0))
    if not inputs_of_members.requires_grad:  # descriptors that do not depend on the inputs
        return [m.repeat_interleave(n_members, dim=0) for m in mean]
    # row k: ∂(Σ_k' E^k')/∂(member k's input) = scale · g_k (E^k' depends on member k's network
    # through E with weight 1/K and through the difference with weight δ_kk' − 1/K)
    per_member = torch.autograd.grad([member_energy.sum()], [inputs_of_members], retain_graph=True,
                                     create_graph=create_graph)[0]
    assert per_member is not None
    delta = per_member - per_member.mean(dim=0, keepdim=True)  # (K, n_local, F), zero sum over k
    features = inputs_of_members[0]  # D itself: a cotangent here goes back through the descriptors
    deviations: List[List[Tensor]] = [[] for _ in inputs]
    for k in range(n_members - 1):
        cotangent: List[Optional[Tensor]] = [delta[k]]
        grads = torch.autograd.grad([features], inputs, cotangent,
                                    retain_graph=create_graph or k < n_members - 2,
                                    create_graph=create_graph, allow_unused=True)
        for i in range(len(inputs)):
            g = grads[i]
            deviations[i].append(g if g is not None else torch.zeros_like(inputs[i]))
    out: List[Tensor] = []
    for i in range(len(inputs)):
        first = torch.stack(deviations[i])  # Jᵀ δ_k, k < K − 1; the last is minus their sum
        out.append(mean[i] + torch.cat([first, -first.sum(dim=0, keepdim=True)]))
    return out


def add_member_derivatives(results: Dict[str, Tensor], member_grads: List[Tensor], forces: bool,
                           virial: bool, local_batch: Tensor, n_local: int) -> None:
    """Write ``member_forces`` (K, N, 3) eV/Å, ``force_deviation`` (n_local,) eV/Å and
    ``max_force_deviation`` (B,) eV/Å (with ``forces``) and ``member_virial`` (K, B, 3, 3) eV
    (with ``virial``) into ``results``, from the members' energy gradients with respect to the
    positions and then the strain (:func:`member_gradients`, in that order, as requested)."""
    k = 0
    if forces:
        member_forces = -member_grads[k]
        deviation = force_deviation(member_forces, n_local)
        results[keys.MEMBER_FORCES] = member_forces
        results[keys.FORCE_DEVIATION] = deviation
        results[keys.MAX_FORCE_DEVIATION] = frame_max(deviation, local_batch,
                                                      results[keys.MEMBER_ENERGY].shape[0])
        k += 1
    if virial:
        results[keys.MEMBER_VIRIAL] = -member_grads[k]


def deployed_outputs(results: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """A committee's outputs of the deployed ``forward`` (one frame, ghosts after the local
    atoms): ``member_energy`` (K,) eV, each member's energy of the local atoms, and (when asked)
    ``member_forces`` (K, N, 3) eV/Å on local and ghost atoms. The deviations are left to the
    caller, which must first add up the forces on each atom's images (LAMMPS: reverse
    communication) and the energies over ranks."""
    results[keys.MEMBER_ENERGY] = results[keys.MEMBER_ENERGY][0]
    for key in (keys.ENERGY_DEVIATION, keys.FORCE_DEVIATION, keys.MAX_FORCE_DEVIATION, keys.MEMBER_VIRIAL):
        if key in results:
            del results[key]
    return results


def edge_member_forces(member_edge_forces: Tensor, edge_index: Tensor, n_atoms: int) -> Tensor:
    """Each member's atomic forces (K, N, 3) eV/Å from its edge forces (K, E, 3) eV/Å
    (F_e = −∂E/∂r_ij on j, −F_e on i) on edges ``edge_index`` (2, E)."""
    shape = (member_edge_forces.shape[0], n_atoms, 3)
    forces = torch.zeros(shape, dtype=member_edge_forces.dtype, device=member_edge_forces.device)
    forces = forces.index_add(1, edge_index[1], member_edge_forces)
    return forces.index_add(1, edge_index[0], -member_edge_forces)


def energy_deviation(member_energy: Tensor, local_batch: Tensor) -> Tensor:
    """(B,) eV/atom: the population standard deviation over members of each frame's energy
    (``member_energy`` (B, K) eV), divided by the frame's number of local atoms
    (``local_batch`` (n_local,), the frame of each)."""
    n_atoms = torch.bincount(local_batch, minlength=member_energy.shape[0]).to(member_energy.dtype)
    return member_energy.detach().std(dim=1, unbiased=False) / n_atoms.clamp(min=1.0)


def force_deviation(member_forces: Tensor, n_local: int) -> Tensor:
    """d_i = sqrt(mean_k |F_i^k − F̄_i|²) (n_local,) eV/Å from the members' forces (K, N, 3) eV/Å
    (the first ``n_local`` atoms; the forces must already hold every contribution to them)."""
    forces = member_forces.detach()[:, :n_local]
    return torch.sqrt(((forces - forces.mean(dim=0, keepdim=True)) ** 2).sum(dim=2).mean(dim=0))


def frame_max(values: Tensor, local_batch: Tensor, n_frames: int) -> Tensor:
    """Largest of ``values`` (n_local,) in each frame (``local_batch`` (n_local,)): (B,); 0 for a
    frame without atoms."""
    out = torch.zeros(n_frames, dtype=values.dtype, device=values.device)
    return out.scatter_reduce(0, local_batch, values, "amax", include_self=True)
