"""PotNet lattice sums against brute-force sums, LAMMPS Ewald and published lattice constants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from physics_reference import with_edges, wrapped

from mlip.errors import UserError
from mlip.physics.potnet import PotNetFeatures

COULOMB = 14.399645  # eV·Å/e², LAMMPS metal qqr2e
MADELUNG_NACL = 1.747564594633182  # rock salt, per ion, nearest-neighbour distance
SC_LATTICE_SUM_R6 = 8.40192397482754  # Σ' |n|⁻⁶ over the simple cubic lattice


def evaluate(module, positions, species, cell, n_centers=None):
    """The features of one periodic frame, positions (N, 3) and cell (3, 3) tensors (differentiable),
    with the model's edges for the module's cutoff, through the descriptor protocol."""
    data = with_edges({"positions": positions, "cell": cell[None], "pbc": torch.ones(1, 3, dtype=torch.bool),
                       "batch": torch.zeros(len(species), dtype=torch.long)}, module.cutoff)
    centers = len(species) if n_centers is None else n_centers
    return module(species, data["edge_index"], data["edge_vec"], centers, data)


def features(module, positions, species, cell):
    out = evaluate(module, torch.tensor(positions), torch.tensor(species), torch.tensor(cell))
    return out.detach().numpy()


def random_frame(seed, n=6):
    """Triclinic cell (LAMMPS lower-triangular form), two elements, random positions ≥ 1.4 Å apart."""
    rng = np.random.default_rng(seed)
    cell = np.array([[4.1, 0.0, 0.0], [0.7, 3.8, 0.0], [-0.5, 0.9, 4.4]])
    images = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), -1).reshape(-1, 3) @ cell
    positions = np.zeros((0, 3))
    while len(positions) < n:
        x = rng.uniform(size=3) @ cell
        d = np.linalg.norm(positions[:, None, :] + images[None] - x, axis=-1)
        if d.size == 0 or d.min() > 1.4:
            positions = np.vstack([positions, x])
    species = np.array([0, 1] * (n // 2))
    return positions, species, cell


def smooth_step(u):
    """C∞ step: 0 for u ≤ 0, 1 for u ≥ 1."""
    u = np.clip(u, 0.0, 1.0)
    a = np.where(u > 0, np.exp(-1.0 / np.maximum(u, 1e-300)), 0.0)
    b = np.where(u < 1, np.exp(-1.0 / np.maximum(1.0 - u, 1e-300)), 0.0)
    return a / (a + b)


def brute_force(positions, species, cell, radius, alpha):
    """Plain real-space sums over all images: Σ' 1/r⁶ and Σ' exp(−αr), per center and element.

    The 1/r⁶ sum is truncated smoothly between ``radius`` and 2·``radius`` (weight
    1 − step(r/R − 1)) and the truncated part is added as the integral over a uniform density
    of the element, 4πρ ∫ step(r/R − 1) r⁻⁴ dr (Gauss–Legendre) + 4πρ/(3(2R)³): with a smooth
    window the lattice sum of the tail equals that integral up to terms that vanish faster
    than any power of R. The exp sum is plain, to 2·``radius``.
    """
    n = len(species)
    spacing = 1.0 / np.linalg.norm(np.linalg.inv(cell), axis=0)
    reach = np.ceil(2.0 * radius / spacing + 1).astype(int)
    grid = np.stack(np.meshgrid(*[np.arange(-k, k + 1) for k in reach], indexing="ij"), -1)
    images = grid.reshape(-1, 3) @ cell
    london = np.zeros((n, 2))
    pauli = np.zeros((n, 2))
    for i in range(n):
        for j in range(n):
            r = np.linalg.norm(positions[j] + images - positions[i], axis=1)
            r = r[(r > 1e-9) & (r < 2.0 * radius)]
            london[i, species[j]] += ((1.0 - smooth_step(r / radius - 1.0)) / r**6).sum()
            pauli[i, species[j]] += np.exp(-alpha * r).sum()
    x, w = np.polynomial.legendre.leggauss(200)
    r, w = radius * (1.5 + 0.5 * x), 0.5 * radius * w
    volume = abs(np.linalg.det(cell))
    for s in range(2):
        rho = (species == s).sum() / volume
        london[:, s] += 4 * np.pi * rho * ((w * smooth_step(r / radius - 1.0) / r**4).sum()
                                           + 1.0 / (3.0 * (2.0 * radius) ** 3))
    return london, pauli


def lammps_ewald(positions, cell, types, charges):
    """Total and per-atom Coulomb energies (eV) from LAMMPS coul/long + kspace_style ewald."""
    from mlip.lammps import load_lammps

    lmp = load_lammps().lammps(cmdargs=["-log", "none", "-screen", "none"])
    try:
        lmp.command("units metal")
        lmp.command("atom_style charge")
        lmp.command("boundary p p p")
        a, b, c = cell
        box = [0.0, a[0], 0.0, b[1], 0.0, c[2], b[0], c[0], c[1]]
        lmp.command("region box prism " + " ".join(repr(float(v)) for v in box) + " units box")
        lmp.command("create_box 2 box")
        for t, p in zip(types, positions, strict=True):
            lmp.command(f"create_atoms {t + 1} single {' '.join(repr(float(v)) for v in p)} units box")
        lmp.command("mass * 1.0")
        for t, q in enumerate(charges):
            lmp.command(f"set type {t + 1} charge {q!r}")
        lmp.command("pair_style coul/long 5.0")
        lmp.command("pair_coeff * *")
        lmp.command("pair_modify table 0")  # exact erfc, no lookup table
        # a large splitting parameter leaves real space only erfc(g r) < 1e-9: LAMMPS' real-space
        # erfc is a polynomial fit (~1e-7), its k-space sum is exact to the requested accuracy
        lmp.command("kspace_style ewald 1e-13")
        lmp.command("kspace_modify gewald 3.0")
        lmp.command("compute pe all pe/atom")
        lmp.command("thermo_style custom pe")
        lmp.command("run 0")
        n = lmp.get_natoms()
        ids = np.array(lmp.numpy.extract_atom("id")[:n])
        per_atom = np.array(lmp.numpy.extract_compute("pe", 1, 1)[:n])[np.argsort(ids)]
        return lmp.get_thermo("pe"), per_atom
    finally:
        lmp.close()


def test_coulomb_madelung_nacl():
    a = 5.64
    frac = np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]], dtype=float)
    cell = np.eye(3) * a
    positions = np.vstack([frac, frac + [0.5, 0.0, 0.0]]) @ cell
    species = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    out = features(PotNetFeatures(2), positions, species, cell)
    potential = out[:, 0] - out[:, 1]  # unit charges +1 on element 0, −1 on element 1
    np.testing.assert_allclose(potential[:4], -MADELUNG_NACL / (a / 2), rtol=1e-12)
    np.testing.assert_allclose(potential[4:], MADELUNG_NACL / (a / 2), rtol=1e-12)


@pytest.mark.parametrize("charges", [(1.3, -1.3), (0.9, -0.4)])
def test_coulomb_matches_lammps_ewald(charges):
    """½ k_e Σ_s q_{s_i} q_s C_i^s is LAMMPS' per-atom Ewald energy (background included)."""
    positions, species, cell = random_frame(7)
    positions = wrapped(positions, cell)
    out = features(PotNetFeatures(2), positions, species, cell)
    q = np.array(charges)
    mine = 0.5 * COULOMB * q[species] * (out[:, :2] @ q)
    total, per_atom = lammps_ewald(positions, cell, species, charges)
    assert abs(mine.sum() - total) <= 1e-8 * abs(total)
    np.testing.assert_allclose(mine, per_atom, rtol=1e-8, atol=1e-8 * np.abs(per_atom).max())


def test_coulomb_matches_the_ewald_term():
    """The same per-atom energies from mlip.physics.Ewald (charges from the data)."""
    from mlip.physics.ewald import Ewald

    positions, species, cell = random_frame(9)
    q = np.array([0.6, -1.1])  # a charged cell: the backgrounds must agree too
    out = features(PotNetFeatures(2), positions, species, cell)
    mine = 0.5 * COULOMB * q[species] * (out[:, :2] @ q)
    data = {"positions": torch.tensor(positions), "charges": torch.tensor(q[species]),
            "batch": torch.zeros(len(species), dtype=torch.long), "cell": torch.tensor(cell)[None],
            "pbc": torch.ones(1, 3, dtype=torch.bool)}
    term = Ewald(accuracy=1e-10, mode="ewald")
    ewald = term(with_edges(data, term.cutoff), len(species)).numpy()
    np.testing.assert_allclose(mine, ewald, rtol=1e-8, atol=1e-8 * np.abs(ewald).max())


def test_london_simple_cubic_lattice_sum():
    out = features(PotNetFeatures(1), np.zeros((1, 3)), np.zeros(1, dtype=np.int64), 2.0 * np.eye(3))
    assert abs(out[0, 1] * 2.0**6 - SC_LATTICE_SUM_R6) < 1e-12 * SC_LATTICE_SUM_R6


def test_london_and_pauli_match_brute_force():
    positions, species, cell = random_frame(3)
    alpha = 0.7
    out = features(PotNetFeatures(2, alpha=alpha), positions, species, cell)
    london, pauli = brute_force(positions, species, cell, radius=30.0, alpha=alpha)
    np.testing.assert_allclose(out[:, 2:4], london, rtol=1e-8)
    np.testing.assert_allclose(out[:, 4:6], pauli, rtol=1e-8)


def test_supercell_gives_the_same_features():
    positions, species, cell = random_frame(5)
    module = PotNetFeatures(2, alpha=1.5)
    out = features(module, positions, species, cell)
    shifts = np.array([[i, j, 0] for i in range(2) for j in range(3)]) @ cell
    big_positions = np.vstack([positions + s for s in shifts])
    big_cell = cell * np.array([[2.0], [3.0], [1.0]])
    big = features(module, big_positions, np.tile(species, len(shifts)), big_cell)
    np.testing.assert_allclose(big, np.tile(out, (len(shifts), 1)), rtol=1e-9, atol=1e-12)


def test_rotation_translation_invariance_and_script():
    positions, species, cell = random_frame(11)
    module = PotNetFeatures(2)
    out = features(module, positions, species, cell)
    rotation, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    moved = (positions + np.array([0.3, -1.7, 2.2])) @ rotation.T
    np.testing.assert_allclose(features(module, moved, species, cell @ rotation.T), out, rtol=1e-10,
                               atol=1e-12)
    scripted = torch.jit.script(module)
    assert scripted.n_features == 6 and scripted.cutoff == module.cutoff > 10.0
    np.testing.assert_allclose(features(scripted, positions, species, cell), out, rtol=1e-13, atol=1e-14)
    first = evaluate(scripted, torch.tensor(positions), torch.tensor(species), torch.tensor(cell), 2).numpy()
    np.testing.assert_allclose(first, out[:2], rtol=1e-13, atol=1e-14)


def test_gradients_match_finite_differences():
    positions, species, cell = random_frame(13)
    module = PotNetFeatures(2, alpha=2.0)
    weights = torch.linspace(0.5, 1.5, 6 * 6, dtype=torch.float64).view(6, 6)

    def scalar(x, c):
        return (evaluate(module, x, torch.tensor(species), c) * weights).sum()

    x = torch.tensor(positions, requires_grad=True)
    c = torch.tensor(cell, requires_grad=True)
    gx, gc = torch.autograd.grad(scalar(x, c), [x, c])
    h = 1e-5
    for target, grad, index in [(positions, gx, (2, 1)), (positions, gx, (5, 0)), (cell, gc, (1, 0)),
                                (cell, gc, (2, 2))]:
        plus, minus = target.copy(), target.copy()
        plus[index] += h
        minus[index] -= h
        if target is positions:
            args = [(plus, cell), (minus, cell)]
        else:
            args = [(positions, plus), (positions, minus)]
        values = [scalar(torch.tensor(p), torch.tensor(q)).item() for p, q in args]
        assert abs((values[0] - values[1]) / (2 * h) - grad[index].item()) < 1e-6 * max(1.0, abs(grad[index]))


def test_bad_parameters():
    with pytest.raises(UserError, match="alpha"):
        PotNetFeatures(2, alpha=0.0)
    with pytest.raises(UserError, match="tolerance"):
        PotNetFeatures(2, tolerance=0.0)
