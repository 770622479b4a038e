"""DescriptorSet: invariances, smoothness at the cutoff, autograd vs finite differences, TorchScript,
normalisation. Runs on the RANN descriptors (plain and screened) of two elements."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from fingerprints import DescriptorSet, default_config
from fingerprints.descriptor_set import DESCRIPTOR_TYPES
from fingerprints.neighbors import neighbor_list

ELEMENTS = ["Ni", "Cu"]
CONFIG = [
    {"type": "rann_radial", "re": 2.5, "rc": 4.8, "dr": 2.0, "alpha": [4.5, 3.0, 5.0, 4.0], "o": -1, "n": 2},
    {"type": "rann_radial_screened", "re": 2.5, "rc": 4.5, "dr": 1.5, "alpha": [3.0, 4.0], "o": 0, "n": 1,
     "Cmin": 0.36, "Cmax": {"default": 2.8, "Cu_Ni_Cu": 2.5}, "neighbors": ["Cu", "all"]},
    {"type": "rann_bond", "re": 2.5, "rc": 4.6, "dr": 2.0, "alphak": [1.0, 3.0], "m": 4},
    {"type": "rann_bond_screened", "re": 2.5, "rc": 4.2, "dr": 1.2, "alphak": [2.0], "m": 3,
     "pairs": [["Ni", "Cu"], ["all", "all"]], "Cmin": 0.5},
]


def system(seed=0, n=8, scale=5.0):
    rng = np.random.default_rng(seed)
    cell = np.diag(rng.uniform(0.9, 1.1, 3) * scale)
    cell[1, 0], cell[2, 0], cell[2, 1] = rng.uniform(-0.3, 0.3, 3) * scale
    positions = rng.uniform(0, 1, (n, 3)) @ cell
    for _ in range(500):  # keep atoms > 1.7 Å apart
        ei, _, _ = neighbor_list(positions, cell, True, 1.7)
        if ei.shape[1] == 0:
            break
        positions[ei[0, 0]] = rng.uniform(0, 1, 3) @ cell
    species = rng.integers(0, 2, n)
    species[:2] = [0, 1]
    return positions, cell, species


def features(ds, positions, cell, species, raw=True):
    ei, _, sh = neighbor_list(positions, cell, True, ds.cutoff)
    vec = torch.tensor(positions[ei[1]] - positions[ei[0]] + sh)
    args = (torch.tensor(species), torch.tensor(ei), vec, len(positions))
    return (ds.raw(*args) if raw else ds(*args)).detach().numpy()


@pytest.fixture(scope="module")
def ds():
    return DescriptorSet.from_config(CONFIG, ELEMENTS)


def assert_same(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * np.abs(b).max())


def test_invariances(ds):
    positions, cell, species = system()
    ref = features(ds, positions, cell, species)
    assert ref.shape == (8, ds.n_features) and np.abs(ref).max() > 0.1

    rot = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))[0]
    assert_same(features(ds, positions @ rot.T, cell @ rot.T, species), ref)
    assert_same(features(ds, positions + np.array([0.3, -7.1, 2.2]), cell, species), ref)

    perm = np.random.default_rng(2).permutation(8)
    assert_same(features(ds, positions[perm], cell, species[perm]), ref[perm])

    shifts = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)]) @ cell
    big = (positions[None] + shifts[:, None]).reshape(-1, 3)
    sup = features(ds, big, 2 * cell, np.tile(species, 8))
    assert_same(sup, np.tile(ref, (8, 1)))


def test_smooth_at_cutoff(ds):
    """Dimer: every feature and its derivative go to 0 as r → rc, and are exactly 0 beyond."""
    for module in ds.descriptors:
        rc = module.rc
        values, slopes = [], []
        for delta in (1e-2, 1e-3, 1e-4, 0.0, -1e-3):
            r = torch.tensor(rc - delta, dtype=torch.float64, requires_grad=True)
            vec = torch.stack([r, torch.zeros_like(r), torch.zeros_like(r)])
            edge_vec = torch.stack([vec, -vec])
            out = module(torch.tensor([0, 1]), torch.tensor([[0, 1], [1, 0]]), edge_vec, 2)
            (grad,) = torch.autograd.grad(out.sum(), r, allow_unused=True)
            values.append(out.detach().abs().max().item())
            slopes.append(0.0 if grad is None else abs(grad.item()))
        assert values[3] == values[4] == 0.0 and slopes[3] == slopes[4] == 0.0
        assert values[0] > 0.0
        assert values[2] < 2e-4 * values[0]  # value ~ delta^2 (fc ~ (4 delta / dr)^2)
        assert slopes[2] < 2e-2 * slopes[0]  # slope ~ delta


def energy_and_grads(ds, positions, cell, species, weights):
    ei, cs, _ = neighbor_list(positions, cell, True, ds.cutoff + 1.0)  # fixed topology with a skin
    pos = torch.tensor(positions, requires_grad=True)
    strain = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
    lattice = torch.tensor(cell)
    deform = torch.eye(3, dtype=torch.float64) + strain
    p, c = pos @ deform, lattice @ deform
    ei_t = torch.tensor(ei)
    vec = p[ei_t[1]] - p[ei_t[0]] + torch.tensor(cs, dtype=torch.float64) @ c
    energy = (ds.raw(torch.tensor(species), ei_t, vec, len(positions)) * weights).sum()
    g_pos, g_strain = torch.autograd.grad(energy, [pos, strain])
    return energy.item(), g_pos.numpy(), g_strain.numpy()


def energy(ds, positions, cell, species, weights):
    ei, cs, _ = neighbor_list(positions, cell, True, ds.cutoff)
    vec = torch.tensor(positions[ei[1]] - positions[ei[0]] + cs @ cell)
    with torch.no_grad():
        return (ds.raw(torch.tensor(species), torch.tensor(ei), vec, len(positions)) * weights).sum().item()


def test_autograd_matches_finite_differences(ds):
    positions, cell, species = system(3)
    weights = torch.tensor(np.random.default_rng(4).normal(size=(8, ds.n_features)))
    _, g_pos, g_strain = energy_and_grads(ds, positions, cell, species, weights)
    h = 1e-5
    fd_pos = np.zeros_like(positions)
    for a in range(len(positions)):
        for b in range(3):
            step = np.zeros_like(positions)
            step[a, b] = h
            fd_pos[a, b] = (energy(ds, positions + step, cell, species, weights)
                            - energy(ds, positions - step, cell, species, weights)) / (2 * h)
    fd_strain = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            eps = np.eye(3)
            eps[a, b] += h
            plus = energy(ds, positions @ eps, cell @ eps, species, weights)
            eps[a, b] -= 2 * h
            minus = energy(ds, positions @ eps, cell @ eps, species, weights)
            fd_strain[a, b] = (plus - minus) / (2 * h)
    np.testing.assert_allclose(g_pos, fd_pos, rtol=1e-6, atol=1e-6 * np.abs(fd_pos).max())
    np.testing.assert_allclose(g_strain, fd_strain, rtol=1e-6, atol=1e-6 * np.abs(fd_strain).max())


def available_types():
    ok = []
    for name, (module, _, _) in DESCRIPTOR_TYPES.items():
        try:
            importlib.import_module(module)
            ok.append(name)
        except ImportError:
            pass
    return ok


def test_torchscript_equals_eager(ds, tmp_path):
    config = list(CONFIG)
    if "acsf" in available_types():  # the other descriptor families, when present
        config.append({"type": "acsf", "cutoff": 4.5})
    full = DescriptorSet.from_config(config, ELEMENTS)
    positions, cell, species = system(5)
    ei, _, sh = neighbor_list(positions, cell, True, full.cutoff)
    vec = torch.tensor(positions[ei[1]] - positions[ei[0]] + sh)
    args = (torch.tensor(species), torch.tensor(ei), vec, 8)
    scripted = torch.jit.script(full)
    scripted.save(str(tmp_path / "ds.pt"))
    loaded = torch.jit.load(str(tmp_path / "ds.pt"))
    eager = full(*args)
    assert torch.equal(scripted(*args), eager)
    assert torch.equal(loaded(*args), eager)
    assert loaded.n_features == full.n_features and loaded.cutoff == full.cutoff
    assert DescriptorSet.from_config(full.config, ELEMENTS).n_features == full.n_features


def test_float32(ds):
    positions, cell, species = system(6)
    f64 = features(ds, positions, cell, species)
    ds32 = DescriptorSet.from_config(CONFIG, ELEMENTS).float()
    ei, _, sh = neighbor_list(positions, cell, True, ds32.cutoff)
    vec = torch.tensor(positions[ei[1]] - positions[ei[0]] + sh, dtype=torch.float32)
    f32 = ds32.raw(torch.tensor(species), torch.tensor(ei), vec, 8)
    assert f32.dtype == torch.float32
    np.testing.assert_allclose(f32.detach().numpy(), f64, rtol=1e-4, atol=1e-5 * np.abs(f64).max())


def test_normalisation_per_element():
    ds = DescriptorSet.from_config(CONFIG, ELEMENTS + ["Au"])  # Au never appears
    batches, raws, species_all = [], [], []
    for seed in (7, 8, 9):
        positions, cell, species = system(seed)
        ei, _, sh = neighbor_list(positions, cell, True, ds.cutoff)
        batches.append((torch.tensor(species), torch.tensor(ei),
                        torch.tensor(positions[ei[1]] - positions[ei[0]] + sh)))
        raws.append(ds.raw(*batches[-1], 8).detach().numpy())
        species_all.append(species)
    raw, sp = np.concatenate(raws), np.concatenate(species_all)
    ds.fit_normalization(batches, scaling="feature")
    for s in (0, 1):
        np.testing.assert_allclose(ds.mean[s].numpy(), raw[sp == s].mean(0), atol=1e-12)
        std = raw[sp == s].std(0)
        np.testing.assert_allclose(ds.std[s].numpy(), np.where(std > 1e-12, std, 1.0), rtol=1e-10)
    assert torch.equal(ds.mean[2], torch.zeros(ds.n_features))
    assert torch.equal(ds.std[2], torch.ones(ds.n_features))
    normed = np.concatenate([ds(*b, 8).detach().numpy() for b in batches])
    np.testing.assert_allclose(normed[sp == 1].mean(0), 0.0, atol=1e-10)

    ds.fit_normalization(batches)  # default: one std per descriptor (block of features)
    assert len(ds.feature_slices) == len(CONFIG) > 1
    for s in (0, 1):
        np.testing.assert_allclose(ds.mean[s].numpy(), raw[sp == s].mean(0), atol=1e-12)
        for a, b in ds.feature_slices:
            block_std = np.sqrt(raw[sp == s][:, a:b].var(0).mean())
            np.testing.assert_allclose(ds.std[s, a:b].numpy(), block_std, rtol=1e-10)
    assert torch.equal(ds.std[2], torch.ones(ds.n_features))
    with pytest.raises(ValueError, match="scaling"):
        ds.fit_normalization(batches, scaling="minmax")


def test_default_config_and_errors():
    config = default_config(["Cu"])
    ds = DescriptorSet.from_config(config, ["Cu"])
    assert 5.0 <= ds.cutoff <= 6.0 and ds.n_features == 21 * 5 + 8
    assert ds.feature_slices == [(0, 105), (105, 113)]  # power spectrum, radial density
    assert DescriptorSet.from_config(default_config(["Ni", "Cu"]), ["Ni", "Cu"]).n_features == 78 * 5 + 16
    with pytest.raises(ValueError, match="unknown descriptor type"):
        DescriptorSet.from_config([{"type": "soap"}], ["Cu"])
    with pytest.raises(ValueError, match="missing"):
        DescriptorSet.from_config([{"type": "rann_radial", "re": 2.5}], ["Cu"])
    with pytest.raises(ValueError, match="'Zn' is not one of"):
        DescriptorSet.from_config([dict(CONFIG[0], neighbors=["Zn"])], ELEMENTS)


def test_plot_config(tmp_path):
    from fingerprints.plot import plot_config

    config = [{"type": "rann_radial", "re": 2.5, "rc": 5.0, "dr": 2.0, "alpha": [4.0, 5.0], "o": 0, "n": 1},
              {"type": "rann_bond", "re": 2.5, "rc": 4.0, "dr": 1.0, "alphak": [1.0], "m": 2}]
    fig = plot_config(config, ["Cu"], r_min=1.0, r_max=6.0, n_points=51)
    top, bottom = fig.axes
    assert len(top.lines) == 2 + 2 and len(bottom.lines) == 2
    r, y = top.lines[1].get_data()  # radial i = 1: (r/re) exp(-5 r/re) fc(r)
    x = np.clip((5.0 - r) / 2.0, 0, 1)
    np.testing.assert_allclose(y, r / 2.5 * np.exp(-5.0 * r / 2.5) * (1 - (1 - x) ** 4) ** 2, rtol=1e-12)
    fig.savefig(tmp_path / "radial.png")
    assert (tmp_path / "radial.png").stat().st_size > 1000


def test_second_derivatives_for_force_training(ds):
    """Force training differentiates forces again: gradgradcheck through every module."""
    positions = np.array([[0.0, 0.0, 0.0], [2.4, 0.1, 0.0], [1.1, 2.2, 0.2], [4.7, 0.3, -0.2],
                          [1.0, 0.6, 2.3]])
    species = torch.tensor([0, 1, 1, 0, 1])
    ei, _, _ = neighbor_list(positions, np.zeros((3, 3)), False, ds.cutoff)
    edge_index = torch.tensor(ei)
    vec = torch.tensor(positions[ei[1]] - positions[ei[0]], requires_grad=True)
    plain = DescriptorSet.from_config([dict(CONFIG[1], type="rann_radial")], ELEMENTS)
    screened = ds.descriptors[1]
    # screening changes the features of this cluster
    assert (plain.raw(species, edge_index, vec, 5) - screened(species, edge_index, vec, 5)).abs().max() > 1e-3
    weights = torch.tensor(np.random.default_rng(0).normal(size=ds.n_features))
    for module, (lo, hi) in zip(ds.descriptors, ds.feature_slices, strict=True):
        def energies(v, m=module, w=weights[lo:hi]):
            return m(species, edge_index, v, 5) @ w

        assert torch.autograd.gradgradcheck(energies, (vec,), fast_mode=True)
