"""Radial density, power spectrum and bispectrum (fingerprints.spectral) against independent
numpy/scipy/sympy references."""

import math

import numpy as np
import pytest
import torch
from descriptor_checks import (
    brute_force_neighbors,
    descriptor,
    edges,
    random_cell,
    random_rotation,
    strain_and_position_gradients,
    transformed,
)
from numpy.polynomial import legendre
from scipy.special import sph_harm_y
from sympy.physics.wigner import wigner_3j

from fingerprints.spectral import Bispectrum, PowerSpectrum, RadialDensity


def ref_radial(r, rc, n_max, basis):
    """R_n(r) (n = 1..n_max) times the quintic cutoff, written from the module docstring."""
    x = min(r / rc, 1.0)
    fc = 1.0 - 10.0 * x**3 + 15.0 * x**4 - 6.0 * x**5
    n = np.arange(1, n_max + 1)
    if basis == "bessel":
        return math.sqrt(2.0 / rc) * np.sin(n * math.pi * r / rc) / r * fc
    mu = np.linspace(0.0, rc, n_max)
    sigma = rc / n_max
    return np.exp(-((r - mu) ** 2) / (2 * sigma**2)) * fc


def ref_power_spectrum(atoms, rc, n_max, l_max, basis, n_species=2):
    """p_{(z n)(z' n') l} = sum_{j in z, k in z'} R_n(r_j) R_n'(r_k) P_l(cos theta_jk): a double loop."""
    channels = n_species * n_max
    rows = []
    for neigh in brute_force_neighbors(atoms, rc):
        p = np.zeros((l_max + 1, channels, channels))
        for zj, vj in neigh:
            for zk, vk in neigh:
                rj, rk = np.linalg.norm(vj), np.linalg.norm(vk)
                cos = np.clip(vj @ vk / (rj * rk), -1.0, 1.0)
                rad = np.outer(ref_radial(rj, rc, n_max, basis), ref_radial(rk, rc, n_max, basis))
                for l in range(l_max + 1):
                    p_l = legendre.legval(cos, [0.0] * l + [1.0])
                    p[l, zj * n_max:(zj + 1) * n_max, zk * n_max:(zk + 1) * n_max] += rad * p_l
        upper = np.triu_indices(channels)
        rows.append(np.concatenate([p[l][upper] for l in range(l_max + 1)]))
    return np.array(rows)


@pytest.mark.parametrize("basis", ["bessel", "gaussian"])
def test_radial_density_equals_sum_over_neighbours(basis):
    atoms = random_cell(seed=4, n_atoms=6)
    module = RadialDensity(n_species=2, cutoff=4.0, n_max=3, radial_basis=basis)
    got = descriptor(module, atoms).detach().numpy()
    expected = np.zeros((len(atoms), 2, 3))
    for i, neigh in enumerate(brute_force_neighbors(atoms, 4.0)):
        for z, v in neigh:
            expected[i, z] += ref_radial(np.linalg.norm(v), 4.0, 3, basis)
    expected = expected.reshape(len(atoms), 6)
    assert got.shape == expected.shape and module.n_features == 6
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12 * np.abs(expected).max())


def test_power_spectrum_radial_density_block(cell):
    """radial_density=K appends a Gaussian RadialDensity with n_max K as a second block."""
    from fingerprints import DescriptorSet

    both = PowerSpectrum(n_species=2, cutoff=4.5, n_max=4, l_max=3, radial_density=5)
    alone = PowerSpectrum(n_species=2, cutoff=4.5, n_max=4, l_max=3)
    radial = RadialDensity(n_species=2, cutoff=4.5, n_max=5, radial_basis="gaussian")
    assert both.block_sizes == [alone.n_features, radial.n_features] and radial.n_features == 10
    assert both.n_features == alone.n_features + radial.n_features
    expected = torch.cat([descriptor(alone, cell), descriptor(radial, cell)], dim=1)
    assert torch.allclose(descriptor(both, cell), expected, rtol=0, atol=1e-12)
    assert torch.allclose(descriptor(torch.jit.script(both), cell), expected, rtol=0, atol=1e-12)
    config = {"type": "power_spectrum", "cutoff": 4.5, "n_max": 4, "l_max": 3, "radial_density": 5}
    ds = DescriptorSet.from_config([config], ["H", "O"])
    assert ds.feature_slices == [(0, alone.n_features), (alone.n_features, both.n_features)]
    one = PowerSpectrum(n_species=1, cutoff=4.5, n_max=4, l_max=3, radial_density=5)
    assert one.n_features == PowerSpectrum(n_species=1, cutoff=4.5, n_max=4, l_max=3).n_features + 5


def complex_density(atoms, rc, n_max, l_max, n_species=2):
    """a^z_{n l m} = sum_j R_n Y_lm with scipy's complex orthonormal harmonics; [atom][z][n][l] -> (2l+1,)."""
    result = []
    for neigh in brute_force_neighbors(atoms, rc):
        a = np.zeros((n_species, n_max, l_max + 1, 2 * l_max + 1), dtype=complex)
        for z, v in neigh:
            r = np.linalg.norm(v)
            theta, phi = math.acos(v[2] / r), math.atan2(v[1], v[0])
            rad = ref_radial(r, rc, n_max, "bessel")
            for l in range(l_max + 1):
                ylm = np.array([sph_harm_y(l, m, theta, phi) for m in range(-l, l + 1)])
                a[z, :, l, : 2 * l + 1] += np.outer(rad, ylm)
        result.append(a)
    return result


@pytest.mark.parametrize("basis", ["bessel", "gaussian"])
def test_power_spectrum_equals_legendre_double_loop(basis):
    atoms = random_cell(seed=4, n_atoms=6)
    module = PowerSpectrum(n_species=2, cutoff=4.0, n_max=3, l_max=3, radial_basis=basis)
    got = descriptor(module, atoms).detach().numpy()
    expected = ref_power_spectrum(atoms, 4.0, 3, 3, basis)
    assert got.shape == expected.shape == (6, module.n_features) and module.n_features == 4 * 21
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-11 * np.abs(expected).max())


def test_bispectrum_equals_complex_wigner_3j_contraction():
    """Against sum (l1 l2 l3; m1 m2 m3) a_{l1 m1} a_{l2 m2} a_{l3 m3} with scipy harmonics and sympy 3j.

    Real and complex bases differ by a unitary change of basis, so per (l1, l2, l3)
    block the two agree up to one constant factor of modulus 1 (times the
    'norm' vs orthonormal scale sqrt(4 pi / (2l + 1)) of each harmonic).
    """
    rc, n_max, l_max = 4.0, 2, 3
    module = Bispectrum(n_species=2, cutoff=rc, n_max=n_max, l_max=l_max, include_odd=True)
    cells = [random_cell(seed=s, n_atoms=5) for s in (7, 8)]
    got = np.concatenate([descriptor(module, a).detach().numpy() for a in cells])
    densities = [d for a in cells for d in complex_density(a, rc, n_max, l_max)]
    column = 0
    for (l1, l2, l3), kept in zip(module.triples, module.element_triples, strict=True):
        w3j = np.zeros((2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1))
        for m1 in range(-l1, l1 + 1):
            for m2 in range(-l2, l2 + 1):
                if abs(m1 + m2) <= l3:
                    w3j[m1 + l1, m2 + l2, -m1 - m2 + l3] = float(wigner_3j(l1, l2, l3, m1, m2, -m1 - m2))
        scale = math.prod(math.sqrt(4 * math.pi / (2 * l + 1)) for l in (l1, l2, l3))
        ref = np.array([[scale * np.einsum("abc,a,b,c->", w3j, a[z1, n, l1, : 2 * l1 + 1],
                                           a[z2, n, l2, : 2 * l2 + 1], a[z3, n, l3, : 2 * l3 + 1])
                         for z1, z2, z3 in kept for n in range(n_max)] for a in densities])
        block = got[:, column:column + ref.shape[1]]
        column += ref.shape[1]
        big = np.abs(ref) > 1e-3 * np.abs(ref).max()
        phase = (block[big] / ref[big])[0]
        assert abs(abs(phase) - 1.0) < 1e-10, (l1, l2, l3)
        np.testing.assert_allclose(block, (phase * ref).real, rtol=0, atol=1e-10 * np.abs(ref).max())
        assert np.abs((phase * ref).imag).max() < 1e-10 * np.abs(ref).max()
    assert column == module.n_features


@pytest.fixture(scope="module")
def cell():
    return random_cell(seed=12, n_atoms=8)


MODULES = {
    "radial": lambda: RadialDensity(n_species=2, cutoff=4.5, n_max=4),
    "power": lambda: PowerSpectrum(n_species=2, cutoff=4.5, n_max=4, l_max=4),
    "power_radial": lambda: PowerSpectrum(n_species=2, cutoff=4.5, n_max=3, l_max=2, radial_density=4),
    "bispectrum": lambda: Bispectrum(n_species=2, cutoff=4.5, n_max=3, l_max=4, include_odd=True),
}


@pytest.mark.parametrize("name", MODULES)
def test_invariance_rotation_translation_permutation_supercell(name, cell):
    module = MODULES[name]()
    ref = descriptor(module, cell)
    for seed in range(3):
        moved = transformed(cell, random_rotation(seed), translation=(1.1, -0.4, 2.7))
        assert torch.allclose(descriptor(module, moved), ref, rtol=0, atol=1e-10)
    species = cell.arrays["species"]
    perm = np.arange(len(cell))
    same = np.flatnonzero(species == 1)
    perm[same] = np.random.default_rng(3).permutation(same)
    assert torch.allclose(descriptor(module, cell[perm]), ref[perm], rtol=0, atol=1e-10)
    assert torch.allclose(descriptor(module, cell * (2, 2, 2))[: len(cell)], ref, rtol=0, atol=1e-10)


def test_reflection_power_spectrum_and_bispectrum_parity(cell):
    """Improper rotations: p and even-l-sum b unchanged, odd-l-sum b (pseudoscalars) change sign."""
    mirror = random_rotation(5, proper=False)
    power = MODULES["power"]()
    assert torch.allclose(descriptor(power, transformed(cell, mirror)), descriptor(power, cell), atol=1e-10)
    bispectrum = MODULES["bispectrum"]()
    ref = descriptor(bispectrum, cell)
    reflected = descriptor(bispectrum, transformed(cell, mirror))
    sign = torch.cat([torch.full((len(kept) * bispectrum.n_max,), (-1.0) ** sum(ls), dtype=torch.float64)
                      for ls, kept in zip(bispectrum.triples, bispectrum.element_triples, strict=True)])
    odd = sign < 0
    assert odd.any() and ref[:, odd].abs().max() > 1e-3
    assert torch.allclose(reflected, ref * sign, rtol=0, atol=1e-10)
    even_only = Bispectrum(n_species=2, cutoff=4.5, n_max=3, l_max=4)
    assert even_only.n_features == int((~odd).sum())
    assert torch.allclose(descriptor(even_only, cell), ref[:, ~odd], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", MODULES)
def test_autograd_matches_finite_differences(name, cell):
    module = MODULES[name]()
    weights = torch.tensor(np.random.default_rng(2).normal(size=(len(cell), module.n_features)))
    grad_pos, fd_pos, grad_eps, fd_eps = strain_and_position_gradients(module, cell, weights)
    assert np.abs(grad_pos).max() > 1e-2
    assert np.abs(grad_pos - fd_pos).max() <= 1e-6 * np.abs(grad_pos).max()
    assert np.abs(grad_eps - fd_eps).max() <= 1e-6 * np.abs(grad_eps).max()


@pytest.mark.parametrize("name", MODULES)
def test_script_equals_eager_and_float32(name, cell):
    module = MODULES[name]()
    species, edge_index, vec = edges(cell, module.cutoff)
    eager = module(species, edge_index, vec, len(cell))
    scripted = torch.jit.script(module)
    assert torch.equal(scripted(species, edge_index, vec, len(cell)), eager)
    single = scripted(species, edge_index, vec.float(), len(cell))
    assert single.dtype == torch.float32
    assert torch.allclose(single.double(), eager, rtol=1e-4, atol=1e-4 * eager.abs().max().item())
    assert f"n_features={module.n_features}" in repr(module)


@pytest.mark.parametrize("name", MODULES)
def test_smooth_at_cutoff(name):
    """The contribution of neighbour j and its derivative vanish as r_ij -> rc."""
    module = MODULES[name]()
    rc = module.cutoff
    species = torch.tensor([0, 1, 0])
    edge_index = torch.tensor([[0, 0], [1, 2]])
    k = torch.tensor([[0.4, 1.3, -0.5]], dtype=torch.float64)

    def features(r):
        direction = torch.tensor([0.6, 0.0, 0.8], dtype=torch.float64)
        return module(species, edge_index, torch.cat([(r * direction).unsqueeze(0), k]), 1)[0]

    without_j = features(torch.tensor(rc + 0.5, dtype=torch.float64))
    for delta, limit in [(1e-2, 1e-4), (1e-3, 1e-7), (0.0, 0.0), (-1e-3, 0.0)]:
        r = torch.tensor(rc - delta, dtype=torch.float64, requires_grad=True)
        contribution = features(r) - without_j
        (grad,) = torch.autograd.grad((contribution * torch.linspace(-1, 1, contribution.shape[0],
                                                                     dtype=torch.float64)).sum(), r)
        assert contribution.abs().max().item() <= limit
        assert abs(grad.item()) <= 1e2 * limit * contribution.shape[0]


def test_bad_parameters_raise_clear_errors():
    with pytest.raises(ValueError, match="radial_basis"):
        PowerSpectrum(2, radial_basis="chebyshev")
    with pytest.raises(ValueError, match="l_max"):
        Bispectrum(2, l_max=-1)
    with pytest.raises(ValueError, match="cutoff"):
        PowerSpectrum(2, cutoff=0.0)
