"""Committee members as models: take one out, put several together, move one between
normalisations (``mlip committee``, ``mlip train --init``, tests).

A member is an :class:`~mlip.model.networks.ElementNetworks` that reads the model's normalised
descriptors and whose output o gives the atomic energy shift[s] + scale · o. Two models of the
same descriptors may differ in their normalisation (per-element mean and std of each raw feature)
and in their reference energies and scale: those are affine in
a network's input and output, so :func:`refit_member` rewrites a member's first and last layers
to give, in another model's normalisation and reference energies, exactly the energies it gave in
its own (up to rounding). Not TorchScript: these edit models in memory.
"""

from __future__ import annotations

import copy

import torch

from mlip.model.committee import CommitteeNetworks
from mlip.model.networks import ElementNetworks
from mlip.model.potential import Potential


def member_networks(model: Potential) -> list[ElementNetworks]:
    """The members' networks of ``model`` (one for a single model)."""
    if model.committee > 1:
        return list(model.networks.members)
    return [model.networks]


def parameter_groups(model: Potential) -> list[list[torch.nn.Parameter]]:
    """Parameters clipped together in training: each member's own for a committee (plus one
    group for shared parameters, if any), so that members train as they would alone; all of
    them for a single model."""
    if model.committee == 1:
        return [list(model.parameters())]
    groups = [list(net.parameters()) for net in member_networks(model)]
    owned = {id(p) for group in groups for p in group}
    shared = [p for p in model.parameters() if id(p) not in owned]
    return groups + ([shared] if shared else [])


def set_members(model: Potential, networks: list[ElementNetworks]) -> Potential:
    """``model`` (changed in place) with ``networks`` as its members: a committee of them, or
    a single model for one."""
    model.networks = CommitteeNetworks(networks) if len(networks) > 1 else networks[0]
    model.committee = len(networks)
    return model


def member_model(model: Potential, k: int) -> Potential:
    """Member ``k`` of ``model`` as a single model (a copy): the shared descriptors, physics and
    reference energies with that member's networks."""
    single = copy.deepcopy(model)
    return set_members(single, [copy.deepcopy(member_networks(model)[k])])


def _normalisation(model: Potential) -> tuple[torch.Tensor, torch.Tensor]:
    """Per element (n_species, n_in) mean and std of the raw network inputs of ``model``: the
    descriptors' per-element statistics (PotNet's lattice sums included)."""
    return model.descriptors.mean.double(), model.descriptors.std.double()


@torch.no_grad()
def refit_member(net: ElementNetworks, source: Potential, target: Potential,
                 species_map: list[int] | None = None,
                 columns: torch.Tensor | None = None) -> ElementNetworks:
    """A copy of member ``net`` of ``source`` that gives in ``target`` (same raw features, maybe
    another normalisation, reference energies and scale) the atomic energies it gave in
    ``source``. Input x_t = (raw − m_t)/s_t, so x_s = x_t·(s_t/s_s) + (m_t − m_s)/s_s: the first
    layer absorbs that; output o_t = (shift_s − shift_t)/scale_t + (scale_s/scale_t)·o_s: the last.

    ``species_map[a]``: the index in ``target`` of ``source``'s element a (default: the same).
    ``columns`` (n_in of ``source``,) int64: the index of each of ``source``'s raw features among
    ``target``'s, when ``target`` has more (elements added: their channels get zero weights);
    default: the same features. The returned networks are ``source``'s elements', in its order."""
    out = copy.deepcopy(net)
    species_map = species_map if species_map is not None else list(range(len(source.elements)))
    mean_s, std_s = _normalisation(source)
    mean_t, std_t = _normalisation(target)
    columns = columns if columns is not None else torch.arange(mean_s.shape[1])
    scale = float(source.energy_scale) / float(target.energy_scale)
    for a, mlp in enumerate(out.nets):
        t = species_map[a]
        first = mlp[0]
        factor = std_t[t, columns] / std_s[a]
        offset = (mean_t[t, columns] - mean_s[a]) / std_s[a]
        weight = first.weight.double()
        wide = torch.nn.Linear(mean_t.shape[1], weight.shape[0], dtype=first.weight.dtype)
        wide.weight.zero_()
        wide.weight[:, columns] = (weight * factor).to(wide.weight.dtype)
        wide.bias.copy_(first.bias.double() + weight @ offset)
        mlp[0] = wide
        last = mlp[-1]
        shift = (float(source.energy_shift[a]) - float(target.energy_shift[t])) / float(target.energy_scale)
        last.weight.mul_(scale)
        last.bias.mul_(scale)
        last.bias[0] += shift
    return out
