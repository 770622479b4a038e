"""Behler–Parrinello ACSF (fingerprints.acsf) against a plain numpy loop implementation."""

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

from fingerprints.acsf import ACSF

# Reference cutoff shapes f(x), x = (r - alpha rc) / (rc - alpha rc) in [0, 1], written from n2p2's docs.
CORE = {
    "cos": lambda x: 0.5 * (math.cos(math.pi * x) + 1.0),
    "poly1": lambda x: 1.0 - 3.0 * x**2 + 2.0 * x**3,
    "poly2": lambda x: 1.0 - 10.0 * x**3 + 15.0 * x**4 - 6.0 * x**5,
    "poly3": lambda x: 1.0 - 35.0 * x**4 + 84.0 * x**5 - 70.0 * x**6 + 20.0 * x**7,
    "poly4": lambda x: 1.0 - 126.0 * x**5 + 420.0 * x**6 - 540.0 * x**7 + 315.0 * x**8 - 70.0 * x**9,
    "exp": lambda x: math.exp(1.0 - 1.0 / (1.0 - x * x)) if x < 1.0 else 0.0,
}


def ref_fc(r, rc, kind, alpha):
    if r >= rc:
        return 0.0
    if kind == "tanhu":
        return math.tanh(1.0 - r / rc) ** 3
    if kind == "tanh":
        return (math.tanh(1.0 - r / rc) / math.tanh(1.0)) ** 3
    if r < alpha * rc:
        return 1.0
    return CORE[kind]((r - alpha * rc) / (rc - alpha * rc))


def ref_acsf(atoms, functions, kind, alpha, default_rc):
    """Plain loops over centres, neighbours and neighbour pairs j < k (n2p2's sums)."""
    species = atoms.arrays["species"]
    rc_max = max(f.get("rc", default_rc) for f in functions)
    neighbors = brute_force_neighbors(atoms, rc_max)
    rows = []
    for i in range(len(atoms)):
        own = [f for f in functions if f.get("center", species[i]) == species[i]]
        values = []
        for f in own:
            rc, eta, rs = f.get("rc", default_rc), f["eta"], f.get("rs", 0.0)
            total = 0.0
            if f["type"] in (2, "G2"):
                for e, v in neighbors[i]:
                    r = np.linalg.norm(v)
                    if e == f["neighbors"][0]:
                        total += math.exp(-eta * (r - rs) ** 2) * ref_fc(r, rc, kind, alpha)
            else:
                narrow = f["type"] in (3, "G4")
                zeta, lam = f["zeta"], f["lambda"]
                nb = neighbors[i]
                for j in range(len(nb)):
                    for k in range(j + 1, len(nb)):
                        (ej, vj), (ek, vk) = nb[j], nb[k]
                        if sorted([ej, ek]) != sorted(f["neighbors"]):
                            continue
                        rij, rik, rjk = np.linalg.norm(vj), np.linalg.norm(vk), np.linalg.norm(vk - vj)
                        cos = vj @ vk / (rij * rik)
                        term = max(1.0 + lam * cos, 0.0) ** zeta * ref_fc(rij, rc, kind, alpha) * ref_fc(
                            rik, rc, kind, alpha)
                        exponent = (rij - rs) ** 2 + (rik - rs) ** 2
                        if narrow:
                            exponent += (rjk - rs) ** 2
                            term *= ref_fc(rjk, rc, kind, alpha)
                        total += 2.0 ** (1.0 - zeta) * term * math.exp(-eta * exponent)
            values.append(total)
        rows.append(values)
    width = max(len(r) for r in rows)
    return np.array([r + [0.0] * (width - len(r)) for r in rows])


# Per-centre-element lists, mixed types, radii and shifts (species 0 and 1).
FUNCTIONS = [
    {"type": 2, "neighbors": [0], "eta": 0.5, "rs": 1.0},
    {"type": "G2", "neighbors": [1], "eta": 1.2, "rs": 2.5, "rc": 3.5},
    {"type": 3, "neighbors": [0, 0], "eta": 0.02, "zeta": 1.0, "lambda": -1.0},
    {"type": "G4", "neighbors": [1, 0], "eta": 0.05, "zeta": 4.0, "lambda": 1.0, "rs": 0.5},
    {"type": 9, "neighbors": [1, 1], "eta": 0.01, "zeta": 2.0, "lambda": -1.0, "rc": 4.0},
    {"type": "G5", "neighbors": [0, 1], "eta": 0.03, "zeta": 3.5, "lambda": 1.0, "rs": 0.8},
    {"type": 2, "center": 0, "neighbors": [1], "eta": 2.0, "rs": 3.0},
    {"type": 9, "center": 0, "neighbors": [0, 0], "eta": 0.001, "zeta": 16.0, "lambda": 1.0},
    {"type": 3, "center": 1, "neighbors": [0, 1], "eta": 0.1, "zeta": 1.0, "lambda": 1.0, "rc": 3.8},
]


@pytest.mark.parametrize("kind, alpha", [("cos", 0.0), ("cos", 0.3), ("poly2", 0.0), ("poly1", 0.2),
                                         ("poly3", 0.1), ("poly4", 0.0), ("exp", 0.25), ("tanhu", 0.0),
                                         ("tanh", 0.0)])
def test_values_equal_numpy_loops(kind, alpha):
    atoms = random_cell(seed=3, n_atoms=8)
    module = ACSF(n_species=2, cutoff=4.5, functions=FUNCTIONS, cutoff_type=kind, cutoff_alpha=alpha)
    assert module.feature_counts == [8, 7] and module.n_features == 8 and module.cutoff == 4.5
    got = descriptor(module, atoms).detach().numpy()
    expected = ref_acsf(atoms, FUNCTIONS, kind, alpha, 4.5)
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-13)
    species = atoms.arrays["species"]
    assert np.all(got[species == 1, 7] == 0.0)  # padding of the shorter element list


def test_grid_mode_layout_and_values():
    atoms = random_cell(seed=5, n_atoms=10)
    module = ACSF(n_species=2, cutoff=4.0, radial_eta=[0.3, 1.0], radial_rs=[0.0, 2.0], angular_eta=[0.02],
                  angular_zeta=[1.0, 2.0], angular_lambda=[-1.0, 1.0], angular_rs=0.3, angular_type="wide",
                  cutoff_type=6)
    # Documented order: radial per neighbour element, then angular per pair (0,0), (0,1), (1,1).
    functions = [{"type": 2, "neighbors": [b], "eta": e, "rs": rs} for b in range(2)
                 for e, rs in [(0.3, 0.0), (1.0, 2.0)]]
    functions += [{"type": 9, "neighbors": pair, "eta": 0.02, "zeta": z, "lambda": lam, "rs": 0.3}
                  for pair in ([0, 0], [0, 1], [1, 1]) for z in (1.0, 2.0) for lam in (-1.0, 1.0)]
    assert module.n_features == len(functions) == 16
    np.testing.assert_allclose(descriptor(module, atoms).detach().numpy(),
                               ref_acsf(atoms, functions, "poly2", 0.0, 4.0), rtol=1e-12, atol=1e-13)


def test_angular_pair_counted_once_and_rs_shift():
    """Three atoms: n2p2 counts the pair (j, k) once (j < k), with rs in every Gaussian."""
    positions = torch.tensor([[0.0, 0.0, 0.0], [1.4, 0.2, 0.0], [-0.3, 1.7, 0.4]], dtype=torch.float64)
    edge_index = torch.tensor([[0, 0], [1, 2]])
    vec = positions[edge_index[1]] - positions[edge_index[0]]
    f = {"type": 3, "neighbors": [0, 0], "eta": 0.3, "zeta": 2.0, "lambda": 1.0, "rs": 0.4, "rc": 3.0}
    got = ACSF(1, cutoff=3.0, functions=[f])(torch.zeros(3, dtype=torch.int64), edge_index, vec, 1)
    rij, rik = vec.norm(dim=1).tolist()
    rjk = (vec[1] - vec[0]).norm().item()
    cos = (vec[0] @ vec[1]).item() / (rij * rik)
    fc = [0.5 * (math.cos(math.pi * r / 3.0) + 1.0) for r in (rij, rik, rjk)]
    expected = 2.0 ** (1 - 2.0) * (1 + cos) ** 2 * math.exp(
        -0.3 * ((rij - 0.4) ** 2 + (rik - 0.4) ** 2 + (rjk - 0.4) ** 2)) * fc[0] * fc[1] * fc[2]
    assert got.item() == pytest.approx(expected, rel=1e-13)


@pytest.fixture(scope="module")
def module_and_cell():
    return ACSF(n_species=2, cutoff=4.5, functions=FUNCTIONS, cutoff_type="poly2", cutoff_alpha=0.1), \
        random_cell(seed=11, n_atoms=8)


def test_invariance_rotation_reflection_translation(module_and_cell):
    module, atoms = module_and_cell
    ref = descriptor(module, atoms)
    for seed, proper in [(1, True), (2, True), (3, False)]:
        moved = transformed(atoms, random_rotation(seed, proper), translation=(0.7, -1.3, 2.1))
        assert torch.allclose(descriptor(module, moved), ref, rtol=0, atol=1e-10)


def test_invariance_permutation_and_supercell(module_and_cell):
    module, atoms = module_and_cell
    ref = descriptor(module, atoms)
    species = atoms.arrays["species"]
    perm = np.arange(len(atoms))
    same = np.flatnonzero(species == 0)
    perm[same] = np.random.default_rng(0).permutation(same)
    permuted = atoms[perm]
    assert torch.allclose(descriptor(module, permuted), ref[perm], rtol=0, atol=1e-10)
    big = atoms * (2, 2, 2)
    assert torch.allclose(descriptor(module, big)[: len(atoms)], ref, rtol=0, atol=1e-10)


def test_autograd_matches_finite_differences(module_and_cell):
    module, atoms = module_and_cell
    weights = torch.tensor(np.random.default_rng(1).normal(size=(len(atoms), module.n_features)))
    grad_pos, fd_pos, grad_eps, fd_eps = strain_and_position_gradients(module, atoms, weights)
    assert np.abs(grad_pos).max() > 1e-2
    assert np.abs(grad_pos - fd_pos).max() <= 1e-6 * np.abs(grad_pos).max()
    assert np.abs(grad_eps - fd_eps).max() <= 1e-6 * np.abs(grad_eps).max()


def test_script_equals_eager_and_float32(module_and_cell):
    module, atoms = module_and_cell
    species, edge_index, vec = edges(atoms, module.cutoff)
    eager = module(species, edge_index, vec, len(atoms))
    scripted = torch.jit.script(module)
    assert torch.equal(scripted(species, edge_index, vec, len(atoms)), eager)
    single = scripted(species, edge_index, vec.float(), len(atoms))
    assert single.dtype == torch.float32
    assert torch.allclose(single.double(), eager, rtol=1e-5, atol=1e-5)
    vec = vec.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(scripted(species, edge_index, vec, len(atoms)).sum(), vec)
    assert torch.isfinite(grad).all()
    assert "n_features=8" in repr(module)


@pytest.mark.parametrize("kind", ["cos", "poly1", "poly2", "exp", "tanhu"])
def test_smooth_at_cutoff(kind):
    """The contribution of a neighbour j and its derivative go to 0 as r_ij -> rc (G2, G4, G5)."""
    rc = 3.0
    functions = [{"type": 2, "neighbors": [0], "eta": 0.1},
                 {"type": 3, "neighbors": [0, 0], "eta": 0.01, "zeta": 1.0, "lambda": 1.0},
                 {"type": 9, "neighbors": [0, 0], "eta": 0.01, "zeta": 1.0, "lambda": 1.0}]
    module = ACSF(1, cutoff=rc, functions=functions, cutoff_type=kind)
    species = torch.zeros(3, dtype=torch.int64)
    edge_index = torch.tensor([[0, 0], [1, 2]])
    k = torch.tensor([[0.3, 1.2, 0.0]], dtype=torch.float64)  # fixed second neighbour

    def features(r):
        direction = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
        return module(species, edge_index, torch.cat([(r * direction).unsqueeze(0), k]), 1)[0]

    without_j = features(torch.tensor(rc + 0.5, dtype=torch.float64))
    for delta, limit in [(1e-3, 1e-5), (1e-4, 1e-7), (0.0, 0.0), (-1e-3, 0.0)]:
        r = torch.tensor(rc - delta, dtype=torch.float64, requires_grad=True)
        contribution = features(r) - without_j
        for value in contribution:
            (grad,) = torch.autograd.grad(value, r, retain_graph=True)
            assert abs(value.item()) <= limit
            assert abs(grad.item()) <= 1e3 * limit


def test_from_config_accepts_element_symbols():
    atoms = random_cell(seed=3, n_atoms=8)
    by_symbol = [dict(f) for f in FUNCTIONS]
    for f in by_symbol:
        f["neighbors"] = [["S", "Cu"][e] for e in f["neighbors"]]
        if "center" in f:
            f["center"] = ["S", "Cu"][f["center"]]
    module = ACSF.from_config({"cutoff": 4.5, "functions": by_symbol, "cutoff_type": "poly2"}, ["S", "Cu"])
    reference = ACSF(2, cutoff=4.5, functions=FUNCTIONS, cutoff_type="poly2")
    assert torch.equal(descriptor(module, atoms), descriptor(reference, atoms))
    with pytest.raises(ValueError, match=r"functions\[0\].*'Zn'"):
        ACSF.from_config({"functions": [{"type": 2, "neighbors": ["Zn"], "eta": 1.0}]}, ["S", "Cu"])


def test_bad_parameters_raise_clear_errors():
    with pytest.raises(ValueError, match="cutoff_type"):
        ACSF(2, cutoff_type="gauss")
    with pytest.raises(ValueError, match=r"functions\[0\].*species index 2"):
        ACSF(2, functions=[{"type": 2, "neighbors": [2], "eta": 1.0}])
    with pytest.raises(ValueError, match=r"functions\[0\].*'type'"):
        ACSF(2, functions=[{"type": 5, "neighbors": [0], "eta": 1.0}])
    with pytest.raises(ValueError, match="eta"):
        ACSF(2, functions=[{"type": 3, "neighbors": [0, 1], "zeta": 1.0, "lambda": 1.0}])
    with pytest.raises(ValueError, match="either 'functions' or the grid"):
        ACSF(2, radial_eta=[1.0], radial_rs=[0.0], functions=[{"type": 2, "neighbors": [0], "eta": 1.0}])
    with pytest.raises(ValueError, match="paired"):
        ACSF(2, radial_eta=[1.0, 2.0], radial_rs=[0.0])
