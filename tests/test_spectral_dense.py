"""The dense-layout density expansion (fingerprints.spectral, fingerprints.harmonics) against the
plain per-edge formulation: e3nn's spherical harmonics times the radial functions, one
(edges, n_max, (l_max+1)^2) outer product summed into the centres with index_put.

Values, first derivatives and second derivatives (create_graph=True, as in training with a
force loss) must agree to ~1e-12 relative for 1-3 elements and any edge order.
"""

import math

import numpy as np
import pytest
import torch
from descriptor_checks import edges, random_cell
from e3nn import o3

from fingerprints.harmonics import harmonic_coefficients, monomial_exponents, plane_monomials
from fingerprints.spectral import Bispectrum, PowerSpectrum


@pytest.mark.parametrize("l_max", [0, 1, 2, 4, 6])
def test_harmonic_polynomials_equal_e3nn(l_max):
    vec = torch.tensor(np.random.default_rng(l_max).normal(size=(500, 3)) * 3.0)
    vec[:6] = torch.cat([torch.eye(3), -torch.eye(3)]).double() * 2.0  # along the axes
    expected = o3.spherical_harmonics(list(range(l_max + 1)), vec, normalize=True, normalization="norm")
    unit = vec / vec.norm(dim=1, keepdim=True)
    x, y, z = unit.t().reshape(3, 1, 1, -1)
    plane = plane_monomials(x, y, l_max)[0]
    basis = torch.cat([plane, plane[:l_max * (l_max + 1) // 2] * z[0]])
    got = basis.t() @ harmonic_coefficients(l_max)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < 1e-12
    exponents = monomial_exponents(l_max)
    assert len(set(exponents)) == len(exponents) == (l_max + 1) ** 2
    powers = torch.stack([unit[:, 0] ** a * unit[:, 1] ** b * unit[:, 2] ** c for a, b, c in exponents])
    assert torch.allclose(basis, powers, rtol=1e-14, atol=1e-15)


def reference_radial(r, rc, n_max, basis):
    """R_n(r) times the quintic cutoff, (E,) -> (E, n_max), written from the module docstring."""
    x = (r / rc).clamp(max=1.0).unsqueeze(1)
    fc = 1.0 - 10.0 * x**3 + 15.0 * x**4 - 6.0 * x**5
    n = torch.arange(1, n_max + 1, dtype=r.dtype)
    if basis == "bessel":
        return math.sqrt(2.0 / rc) * torch.sin(n * math.pi * r.unsqueeze(1) / rc) / r.unsqueeze(1) * fc
    mu = torch.linspace(0.0, rc, n_max, dtype=r.dtype)
    return torch.exp(-((r.unsqueeze(1) - mu) ** 2) / (2 * (rc / n_max) ** 2)) * fc


def reference_density(species, edge_index, vec, n_centers, n_species, rc, n_max, l_max, basis):
    """c^z_{nlm}(i) = sum_j R_n(r_ij) Y_lm(r_ij): per-edge outer product, then index_put(accumulate)."""
    r = vec.norm(dim=1)
    inside = r < rc
    vec, r, edge_index = vec[inside], r[inside], edge_index[:, inside]
    harmonics = o3.spherical_harmonics(list(range(l_max + 1)), vec, normalize=True, normalization="norm")
    values = reference_radial(r, rc, n_max, basis).unsqueeze(2) * harmonics.unsqueeze(1)
    out = torch.zeros(n_centers, n_species, n_max, (l_max + 1) ** 2, dtype=vec.dtype)
    return out.index_put((edge_index[0], species[edge_index[1]]), values, accumulate=True)


def reference_power_spectrum(c, l_max):
    """p_{a b l} = sum_m c_{a l m} c_{b l m} over channels a = (z, n), upper triangle a <= b, l-major."""
    c = c.reshape(c.shape[0], -1, c.shape[3])
    upper = torch.triu_indices(c.shape[1], c.shape[1])
    return torch.cat([torch.einsum("iam,ibm->iab", c[:, :, l * l:(l + 1) ** 2], c[:, :, l * l:(l + 1) ** 2])
                      [:, upper[0], upper[1]] for l in range(l_max + 1)], dim=1)


def scrambled_edges(n_species, seed, rc):
    """Edges of a random cell with n_species elements, searched with a larger cutoff than rc (so
    some are beyond it), in random order, and with every edge of centre 1 removed."""
    atoms = random_cell(seed=seed, n_atoms=7, n_species=n_species)
    species, edge_index, vec = edges(atoms, rc + 0.7)
    rng = np.random.default_rng(seed)
    order = torch.tensor(rng.permutation(vec.shape[0]))
    edge_index, vec = edge_index[:, order], vec[order]
    kept = edge_index[0] != 1
    return species, edge_index[:, kept], vec[kept], len(atoms)


@pytest.mark.parametrize("n_species", [1, 2, 3])
@pytest.mark.parametrize("basis", ["bessel", "gaussian"])
@pytest.mark.parametrize("l_max", [0, 4])
def test_density_equals_per_edge_reference_any_edge_order(n_species, basis, l_max):
    rc, n_max = 4.0, 3
    module = PowerSpectrum(n_species, cutoff=rc, n_max=n_max, l_max=l_max, radial_basis=basis).density
    species, edge_index, vec, n = scrambled_edges(n_species, 20 + n_species, rc)
    assert (vec.norm(dim=1) >= rc).any() and (edge_index[0, 1:] < edge_index[0, :-1]).any()
    got = module(species, edge_index, vec, n)
    expected = reference_density(species, edge_index, vec, n, n_species, rc, n_max, l_max, basis)
    scale = expected.abs().max().item()
    assert scale > 0.1 and got[1].abs().max().item() == 0.0  # centre 1 has no neighbours
    assert (got - expected).abs().max().item() <= 1e-12 * scale
    module.block_neighbors = 40  # several blocks of centres (2 or 3 at a time here)
    assert (module(species, edge_index, vec, n) - expected).abs().max().item() <= 1e-12 * scale


def test_no_edges_gives_zeros():
    module = PowerSpectrum(2, cutoff=4.0, n_max=3, l_max=2)
    out = module(torch.zeros(3, dtype=torch.int64), torch.zeros(2, 0, dtype=torch.int64),
                 torch.zeros(0, 3, dtype=torch.float64), 3)
    assert out.shape == (3, module.n_features) and not out.any()


def energy_forces_and_second_derivatives(features, vec, weights):
    """E = sum tanh(features @ weights); forces -dE/dvec (create_graph); d(sum forces^2)/d(weights, vec)."""
    energy = torch.tanh(features @ weights).sum()
    (grad,) = torch.autograd.grad(energy, vec, create_graph=True)
    loss = (grad * grad).sum()
    return (energy.detach(), grad.detach(), *[g.detach() for g in torch.autograd.grad(loss, [weights, vec])])


@pytest.mark.parametrize("n_species", [1, 2, 3])
def test_power_spectrum_first_and_second_derivatives_equal_reference(n_species):
    rc, n_max, l_max = 4.0, 3, 3
    module = PowerSpectrum(n_species, cutoff=rc, n_max=n_max, l_max=l_max)
    module.density.block_neighbors = 40 * n_species  # blocks of centres of different sizes
    species, edge_index, vec0, n = scrambled_edges(n_species, 30 + n_species, rc)
    weights = torch.tensor(np.random.default_rng(n_species).normal(size=(module.n_features, 4)) * 0.1,
                           requires_grad=True)
    results = []
    for features in (
        lambda v: module(species, edge_index, v, n),
        lambda v: reference_power_spectrum(
            reference_density(species, edge_index, v, n, n_species, rc, n_max, l_max, "bessel"), l_max),
    ):
        vec = vec0.clone().requires_grad_(True)
        results.append(energy_forces_and_second_derivatives(features(vec), vec, weights))
    for got, expected in zip(*results, strict=True):
        assert expected.abs().max().item() > 1e-3
        assert (got - expected).abs().max().item() <= 1e-12 * expected.abs().max().item()


def test_bispectrum_second_derivatives_equal_reference():
    """The bispectrum contraction on top of the dense density against the same contraction on the
    reference density (e3nn's wigner_3j, as in the module docstring)."""
    rc, n_max, l_max, n_species = 4.0, 2, 2, 2
    module = Bispectrum(n_species, cutoff=rc, n_max=n_max, l_max=l_max, include_odd=True)
    species, edge_index, vec0, n = scrambled_edges(n_species, 41, rc)
    weights = torch.tensor(np.random.default_rng(5).normal(size=(module.n_features, 3)) * 0.1,
                           requires_grad=True)

    def reference(v):
        c = reference_density(species, edge_index, v, n, n_species, rc, n_max, l_max, "bessel")
        cols = []
        for (l1, l2, l3), kept in zip(module.triples, module.element_triples, strict=True):
            w = o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
            for z1, z2, z3 in kept:
                blocks = [c[:, z, :, l * l:(l + 1) ** 2] for z, l in ((z1, l1), (z2, l2), (z3, l3))]
                cols.append(torch.einsum("abc,ina,inb,inc->in", w, *blocks))
        return torch.cat(cols, dim=1)

    results = []
    for features in (lambda v: module(species, edge_index, v, n), reference):
        vec = vec0.clone().requires_grad_(True)
        results.append(energy_forces_and_second_derivatives(features(vec), vec, weights))
    for got, expected in zip(*results, strict=True):
        assert expected.abs().max().item() > 1e-4
        assert (got - expected).abs().max().item() <= 1e-12 * expected.abs().max().item()
