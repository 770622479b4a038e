"""RANN radial, bond and screened fingerprints vs a plain double-loop numpy implementation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from fingerprints.neighbors import neighbor_list
from fingerprints.rann import RannBond, RannRadial, screening_radius_factor

# --- plain reference, written from the formulas -------------------------------------------------------


def fc(r, rc, dr):
    x = (rc - r) / dr
    if x >= 1.0:
        return 1.0
    if x <= 0.0:
        return 0.0
    return (1.0 - (1.0 - x) ** 4) ** 2


def meam_step(x):
    if x >= 1.0:
        return 1.0
    if x <= 0.0:
        return 0.0
    return (1.0 - (1.0 - x) ** 4) ** 2


def all_images(positions, cell, radius):
    """For every atom i: list of (j, vector r_ij) over all periodic images with 0 < r < radius."""
    n = len(positions)
    reach = [int(math.ceil(radius * np.linalg.norm(np.linalg.inv(cell)[:, a]))) + 1 for a in range(3)]
    out = [[] for _ in range(n)]
    for shift in itertools.product(*(range(-m, m + 1) for m in reach)):
        offset = np.array(shift) @ cell
        for i in range(n):
            for j in range(n):
                v = positions[j] - positions[i] + offset
                d = np.linalg.norm(v)
                if 0.0 < d < radius:
                    out[i].append((j, v))
    return out


def screening(vj, others, cmin, cmax, si, sj, species):
    """S_ij = prod over every other neighbour k (any distance in ``others``) of the MEAM step."""
    s = 1.0
    rij2 = vj @ vj
    for k, vk in others:
        if vk is vj:
            continue
        x_ik = (vk @ vk) / rij2
        x_kj = ((vk - vj) @ (vk - vj)) / rij2
        denom = 1.0 - (x_ik - x_kj) ** 2
        if denom <= 0.0:
            continue
        c = (2.0 * (x_ik + x_kj) - (x_ik - x_kj) ** 2 - 1.0) / denom
        lo, hi = cmin[si, sj, species[k]], cmax[si, sj, species[k]]
        s *= meam_step((c - lo) / (hi - lo))
    return s


def reference(positions, cell, species, n_species, kind, p, screened=False, cmin=None, cmax=None):
    """Radial: (n, S, n-o+1); bond: (n, S, S, K, M) with ordered element pairs."""
    neigh = all_images(positions, cell, p["rc"] + 3.0)  # screeners well beyond the cutoff
    n = len(positions)
    rows = []
    for i in range(n):
        within = [(j, v) for j, v in neigh[i] if np.linalg.norm(v) < p["rc"]]
        weight = []
        for j, v in within:
            w = fc(np.linalg.norm(v), p["rc"], p["dr"])
            if screened:
                w *= screening(v, neigh[i], cmin, cmax, species[i], species[j], species)
            weight.append(w)
        if kind == "radial":
            f = np.zeros((n_species, p["n"] - p["o"] + 1))
            for (j, v), w in zip(within, weight, strict=True):
                x = np.linalg.norm(v) / p["re"]
                for t, power in enumerate(range(p["o"], p["n"] + 1)):
                    f[species[j], t] += x**power * math.exp(-p["alpha"][t] * x) * w
        else:
            f = np.zeros((n_species, n_species, len(p["alphak"]), p["m"]))
            for (j, vj), wj in zip(within, weight, strict=True):
                for (l, vl), wl in zip(within, weight, strict=True):
                    rj, rl = np.linalg.norm(vj), np.linalg.norm(vl)
                    cos = vj @ vl / (rj * rl)
                    for kk, a in enumerate(p["alphak"]):
                        e = math.exp(-a * (rj + rl) / p["re"]) * wj * wl
                        for m in range(p["m"]):
                            f[species[j], species[l], kk, m] += cos**m * e
        rows.append(f)
    return np.array(rows)


# --- helpers ---------------------------------------------------------------------------------------------


def random_system(seed, n=6, scale=4.6):
    rng = np.random.default_rng(seed)
    cell = np.diag(rng.uniform(0.9, 1.1, 3) * scale)
    cell[1, 0], cell[2, 0], cell[2, 1] = rng.uniform(-0.25, 0.25, 3) * scale
    frac = rng.uniform(0, 1, (n, 3))
    positions = frac @ cell
    # keep atoms apart (>1.6 Å) so the functions stay in a physical range
    for _ in range(200):
        ei, _, sh = neighbor_list(positions, cell, True, 1.6)
        if ei.shape[1] == 0:
            break
        positions[ei[0, 0]] = rng.uniform(0, 1, 3) @ cell
    species = rng.integers(0, 2, n)
    species[:2] = [0, 1]
    return positions, cell, species


def evaluate(module, positions, cell, species, dtype=torch.float64):
    ei, _, sh = neighbor_list(positions, cell, True, module.cutoff)
    vec = torch.tensor(positions[ei[1]] - positions[ei[0]] + sh, dtype=dtype)
    return module(torch.tensor(species), torch.tensor(ei), vec, len(positions))


RADIAL = {"re": 2.5, "rc": 5.0, "dr": 1.8, "alpha": [4.5, 3.0, 4.0, 5.0, 2.0], "o": -1, "n": 3}
BOND = {"re": 2.5, "rc": 4.6, "dr": 2.0, "alphak": [1.0, 2.0, 6.0], "m": 5}


def cmin_cmax(n_species):
    cmin = np.full((n_species,) * 3, 0.36)
    cmax = np.full((n_species,) * 3, 2.8)
    cmin[0, 1, 1] = 0.5
    cmax[1, 0, 1] = cmax[1, 1, 0] = 2.2  # symmetric in (j, k)
    return cmin, cmax


# --- tests ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("screened", [False, True])
def test_radial_matches_double_loop(seed, screened):
    positions, cell, species = random_system(seed)
    cmin, cmax = cmin_cmax(2)
    module = RannRadial(2, screened=screened, cmin=cmin, cmax=cmax, **RADIAL)
    ref = reference(positions, cell, species, 2, "radial", RADIAL, screened, cmin, cmax)
    got = evaluate(module, positions, cell, species).numpy()
    np.testing.assert_allclose(got, ref.reshape(len(positions), -1), rtol=1e-11, atol=1e-13)
    if screened:  # screening does something on these cells
        plain = evaluate(RannRadial(2, **RADIAL), positions, cell, species).numpy()
        assert np.abs(plain - got).max() > 1e-3


@pytest.mark.parametrize("seed", [0, 2])
@pytest.mark.parametrize("screened", [False, True])
def test_bond_matches_double_loop(seed, screened):
    positions, cell, species = random_system(seed)
    cmin, cmax = cmin_cmax(2)
    module = RannBond(2, screened=screened, cmin=cmin, cmax=cmax, **BOND)
    ref = reference(positions, cell, species, 2, "bond", BOND, screened, cmin, cmax)
    got = evaluate(module, positions, cell, species).numpy().reshape(len(positions), 3, 3, 5)
    for q, (b, c) in enumerate([(0, 0), (0, 1), (1, 1)]):  # default pairs: unordered, b <= c
        np.testing.assert_allclose(got[:, q], ref[:, b, c], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got[:, q], ref[:, c, b], rtol=1e-10, atol=1e-12)


def test_all_and_selected_neighbour_blocks():
    positions, cell, species = random_system(3)
    radial = evaluate(RannRadial(2, neighbors=[1, -1], **RADIAL), positions, cell, species).numpy()
    per_el = evaluate(RannRadial(2, **RADIAL), positions, cell, species).numpy().reshape(-1, 2, 5)
    np.testing.assert_allclose(radial[:, :5], per_el[:, 1])
    np.testing.assert_allclose(radial[:, 5:], per_el.sum(1))
    bond_all = evaluate(RannBond(2, pairs=[(-1, -1)], **BOND), positions, cell, species).numpy()
    ref = reference(positions, cell, species, 2, "bond", BOND)
    np.testing.assert_allclose(bond_all, ref.sum((1, 2)).reshape(len(positions), -1), rtol=1e-10)


def test_float32_close_to_float64():
    positions, cell, species = random_system(4)
    module = RannBond(2, screened=True, **BOND)
    f64 = evaluate(module, positions, cell, species)
    f32 = evaluate(module.float(), positions, cell, species, torch.float32)
    assert f32.dtype == torch.float32
    np.testing.assert_allclose(f32.double().numpy(), f64.numpy(), rtol=2e-4, atol=1e-5)


def test_screening_radius_covers_the_ellipse():
    # A screener just outside rc * factor cannot screen a neighbour just inside rc.
    factor = screening_radius_factor(2.8)
    assert factor == pytest.approx(2.8 / (2 * math.sqrt(1.8)))
    rng = np.random.default_rng(0)
    vj = np.array([1.0, 0, 0])
    vk = rng.uniform(-1.5, 2.5, (200000, 3))
    x_ik = (vk**2).sum(1)
    x_kj = ((vk - vj) ** 2).sum(1)
    denom = 1 - (x_ik - x_kj) ** 2
    inside = (denom > 0) & (2 * (x_ik + x_kj) - (x_ik - x_kj) ** 2 - 1 < 2.8 * denom)
    assert np.sqrt(x_ik[inside].max()) <= factor
    assert np.sqrt(x_ik[inside].max()) > factor - 0.01


def test_bad_parameters_are_reported():
    with pytest.raises(ValueError, match="alpha"):
        RannRadial(1, re=2.5, rc=5.0, dr=1.0, alpha=[1.0, 2.0], o=0, n=3)
    with pytest.raises(ValueError, match="k = len"):
        RannBond(1, re=2.5, rc=5.0, dr=1.0, alphak=[1.0, 2.0], k=3, m=2)
    with pytest.raises(ValueError, match="Cmin < Cmax"):
        RannRadial(1, re=2.5, rc=5.0, dr=1.0, alpha=[1.0], o=0, n=0, screened=True, cmin=2.0, cmax=1.0)
    with pytest.raises(ValueError, match="neighbors"):
        RannRadial(1, re=2.5, rc=5.0, dr=1.0, alpha=[1.0], o=0, n=0, neighbors=[3])
    with pytest.raises(ValueError, match="rc must be > 0"):
        RannBond(1, re=2.5, rc=0.0, dr=1.0, alphak=[1.0], m=2)
