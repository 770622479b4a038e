"""D3(BJ) dispersion against LAMMPS ``pair_style dispersion/d3`` and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from physics_reference import rocksalt_mgo, term_energy_forces_virial, wrapped, zincblende_sic

from mlip.errors import UserError
from mlip.physics.d3 import BJ_PARAMETERS, NOT_IN_LAMMPS, D3Dispersion, half_pairs, lammps_pair_style

NKTV2P = 1.6021765e6  # LAMMPS metal units: bar per eV/Å³


def lammps_d3(positions, cell, types, elements, cutoff, cn_cutoff, boundary="p p p", damping="bj pbe"):
    """Energy (eV), forces (N, 3) eV/Å and virial (xx yy zz xy xz yz) eV from LAMMPS."""
    from mlip.lammps import load_lammps

    lammps = load_lammps()
    lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none"])
    try:
        lmp.command("units metal")
        lmp.command("atom_style atomic")
        lmp.command(f"boundary {boundary}")
        a, b, c = cell
        box = [0.0, a[0], 0.0, b[1], 0.0, c[2], b[0], c[0], c[1]]
        lmp.command("region box prism " + " ".join(repr(float(v)) for v in box) + " units box")
        lmp.command(f"create_box {len(elements)} box")
        for t, p in zip(types, positions, strict=True):
            lmp.command(f"create_atoms {t + 1} single {' '.join(repr(float(v)) for v in p)} units box")
        lmp.command("mass * 1.0")
        lmp.command("neigh_modify one 200000 page 2000000")
        lmp.command(f"pair_style dispersion/d3 {damping} {cutoff!r} {cn_cutoff!r}")
        lmp.command("pair_coeff * * " + " ".join(elements))
        lmp.command("compute p all pressure NULL virial")
        lmp.command("thermo_style custom pe c_p[1] vol")
        lmp.command("run 0")
        n = lmp.get_natoms()
        assert n == len(types)
        ids = np.array(lmp.numpy.extract_atom("id")[:n])
        forces = np.array(lmp.numpy.extract_atom("f")[:n])[np.argsort(ids)]
        press = np.array([lmp.numpy.extract_compute("p", 0, 1)[k] for k in range(6)])
        return lmp.get_thermo("pe"), forces, press * lmp.get_thermo("vol") / NKTV2P
    finally:
        lmp.close()


def model_d3(term, positions, cell, types, pbc=(True, True, True)):
    """Energy, forces (autograd) and virial W = −∂E/∂ε (xx yy zz xy xz yz) from the term."""
    e, f, w = term_energy_forces_virial(term, positions, cell, types, pbc)
    return e, f, np.array([w[0, 0], w[1, 1], w[2, 2], w[0, 1], w[0, 2], w[1, 2]])


def assert_agree(mine, ref, rtol=1e-6):
    e, f, w = mine
    e_ref, f_ref, w_ref = ref
    assert abs(e - e_ref) <= rtol * abs(e_ref)
    assert np.abs(f - f_ref).max() <= rtol * np.abs(f_ref).max()
    assert np.abs(w - w_ref).max() <= rtol * np.abs(w_ref).max()


@pytest.mark.parametrize(("structure", "elements", "cutoff", "cn_cutoff"), [
    (zincblende_sic, ["C", "Si"], 12.0, 8.0),
    (zincblende_sic, ["C", "Si"], 50.2022, 21.1671),  # the reference program's defaults
    (rocksalt_mgo, ["O", "Mg"], 20.0, 12.0),
])
def test_d3_matches_lammps_periodic(structure, elements, cutoff, cn_cutoff):
    positions, cell, types = structure(1)
    ref = lammps_d3(positions, cell, types, elements, cutoff, cn_cutoff)
    mine = model_d3(D3Dispersion(elements, cutoff=cutoff, cn_cutoff=cn_cutoff), positions, cell, types)
    assert ref[0] < 0.0
    assert_agree(mine, ref)


def test_d3_matches_lammps_metal():
    """Rattled fcc Cu: every atom's CN (~9 at a 10 Å CN cutoff) lies far above Cu's references
    (0 and 0.96), so every pair takes the nearest-reference C6 (the term's shortcut past the
    interpolation)."""
    rng = np.random.default_rng(8)
    a = 3.6
    frac = np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]])
    frac = np.vstack([frac + np.array(n) for n in np.ndindex(2, 2, 2)]) / 2.0
    cell = np.array([[2 * a, 0.0, 0.0], [0.3, 2 * a, 0.0], [0.2, -0.4, 2 * a]])
    positions = wrapped(frac @ cell + rng.normal(0.0, 0.1, (32, 3)), cell)
    types = np.zeros(32, dtype=int)
    term = D3Dispersion(["Cu"], cutoff=14.0, cn_cutoff=10.0)
    ref = lammps_d3(positions, cell, types, ["Cu"], 14.0, 10.0)
    assert_agree(model_d3(term, positions, cell, types), ref)


def test_d3_matches_lammps_molecule_in_big_box():
    """Ethanol-like C2H6O, non-periodic in LAMMPS (boundary s s s) and in the term."""
    positions = np.array([
        [0.000, 0.000, 0.000], [1.520, 0.000, 0.000], [2.030, 1.340, 0.050],  # C C O
        [-0.380, 1.020, 0.080], [-0.390, -0.520, 0.880], [-0.370, -0.500, -0.900],
        [1.900, -0.520, 0.890], [1.880, -0.540, -0.880], [2.990, 1.290, 0.020],
    ]) + 20.0
    elements = ["H", "C", "O"]
    types = np.array([1, 1, 2, 0, 0, 0, 0, 0, 0])
    cell = np.diag([40.0, 40.0, 40.0])
    ref = lammps_d3(positions, cell, types, elements, 50.2022, 21.1671, boundary="s s s")
    mine = model_d3(D3Dispersion(elements), positions, cell, types, pbc=(False, False, False))
    assert_agree(mine, ref)


def mgo_slab(seed):
    """Two rattled MgO layers in a tilted cell, periodic in x and y only (30 Å along z)."""
    positions, cell, types = rocksalt_mgo(seed)
    slab = np.array([[cell[0, 0], 0.0, 0.0], [0.8, cell[1, 1], 0.0], [0.0, 0.0, 30.0]])
    frac = np.linalg.solve(cell.T, positions.T).T
    return frac @ np.array([slab[0], slab[1], cell[2]]) + np.array([0.0, 0.0, 10.0]), slab, types


def test_d3_matches_lammps_slab():
    """LAMMPS boundary p p s. Mg atoms here have CN ≈ 8-11, far above their references, so
    some pairs take the reference program's nearest-reference fallback (``grid_fallback``)."""
    positions, cell, types = mgo_slab(6)
    ref = lammps_d3(positions, cell, types, ["O", "Mg"], 25.0, 15.0, boundary="p p s")
    pbc = (True, True, False)
    mine = model_d3(D3Dispersion(["O", "Mg"], cutoff=25.0, cn_cutoff=15.0), positions, cell, types, pbc=pbc)
    assert_agree(mine, ref)
    smooth = D3Dispersion(["O", "Mg"], cutoff=25.0, cn_cutoff=15.0, grid_fallback=False)
    e_smooth = model_d3(smooth, positions, cell, types, pbc=pbc)[0]
    assert 1e-8 < abs(e_smooth - ref[0]) / abs(ref[0]) < 1e-6


def test_d3_explicit_parameters_match_named_functional():
    positions, cell, types = zincblende_sic(2)
    named = model_d3(D3Dispersion(["C", "Si"], cutoff=15.0, cn_cutoff=10.0), positions, cell, types)
    explicit = D3Dispersion(["C", "Si"], functional=None, s6=1.0, s8=0.7875, a1=0.4289, a2=4.4407,
                            cutoff=15.0, cn_cutoff=10.0)
    assert_agree(model_d3(explicit, positions, cell, types), named, rtol=1e-14)
    other = D3Dispersion(["C", "Si"], functional="pbe0", cutoff=15.0, cn_cutoff=10.0)
    ref = lammps_d3(positions, cell, types, ["C", "Si"], 15.0, 10.0, damping="bj pbe0")
    assert_agree(model_d3(other, positions, cell, types), ref)


@pytest.mark.parametrize(("structure", "grid_fallback", "pbc"), [
    (rocksalt_mgo, True, (True, True, True)),
    (mgo_slab, False, (True, True, False)),
])
def test_d3_finite_differences(structure, grid_fallback, pbc):
    positions, cell, types = structure(3)
    term = D3Dispersion(["O", "Mg"], cutoff=14.0, cn_cutoff=9.0, grid_fallback=grid_fallback)
    _, forces, virial = model_d3(term, positions, cell, types, pbc=pbc)

    def energy(x, c):
        return model_d3(term, x, c, types, pbc=pbc)[0]

    h = 1e-5
    for atom, axis in [(0, 0), (3, 1), (6, 2)]:
        step = np.zeros_like(positions)
        step[atom, axis] = h
        fd = -(energy(positions + step, cell) - energy(positions - step, cell)) / (2 * h)
        assert abs(fd - forces[atom, axis]) < 1e-7 * np.abs(forces).max() + 1e-9
    for k, (a, b) in enumerate([(0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)]):
        eps = np.zeros((3, 3))
        eps[a, b] = h
        plus = energy(positions @ (np.eye(3) + eps), cell @ (np.eye(3) + eps))
        minus = energy(positions @ (np.eye(3) - eps), cell @ (np.eye(3) - eps))
        assert abs(-(plus - minus) / (2 * h) - virial[k]) < 1e-7 * np.abs(virial).max()


@pytest.mark.parametrize("functional", sorted(BJ_PARAMETERS))
def test_d3_functionals_match_lammps(functional):
    """Every named functional means the same BJ parameters as in LAMMPS (``mlip export`` hands
    the term to ``pair_style dispersion/d3 bj NAME`` by name); explicit parameters and the smooth
    weights have no LAMMPS equivalent."""
    positions, cell, types = zincblende_sic(7)
    term = D3Dispersion(["C", "Si"], functional=functional.upper(), cutoff=8.0, cn_cutoff=6.0)
    if functional in NOT_IN_LAMMPS:
        assert lammps_pair_style(term, ["C", "Si"]) is None
        with pytest.raises(Exception, match="not supported"):
            lammps_d3(positions, cell, types, ["C", "Si"], 8.0, 6.0, damping=f"bj {functional}")
        return
    style, coeffs = lammps_pair_style(term, ["C", "Si"])
    assert style == f"dispersion/d3 bj {functional} 8.0 6.0"
    assert coeffs == ["pair_coeff * * dispersion/d3 C Si", "neigh_modify one 2000 page 100000"]
    ref = lammps_d3(positions, cell, types, ["C", "Si"], 8.0, 6.0, damping=f"bj {functional}")
    assert_agree(model_d3(term, positions, cell, types), ref)
    assert lammps_pair_style(D3Dispersion(["C"], functional=functional, a1=0.4), ["C"]) is None
    assert lammps_pair_style(D3Dispersion(["C"], functional=functional, grid_fallback=False), ["C"]) is None


def test_d3_script_batch_and_float32():
    pos1, cell1, types1 = zincblende_sic(4)
    pos2, cell2, types2 = rocksalt_mgo(5)
    term = D3Dispersion(["C", "O", "Mg", "Si"], cutoff=12.0, cn_cutoff=8.0)
    scripted = torch.jit.script(term)
    species = np.concatenate([np.where(types1 == 0, 0, 3), np.where(types2 == 0, 1, 2)])
    data = {
        "positions": torch.tensor(np.vstack([pos1, pos2])),
        "species": torch.tensor(species),
        "cell": torch.tensor(np.stack([cell1, cell2])),
        "pbc": torch.ones(2, 3, dtype=torch.bool),
        "batch": torch.tensor([0] * 8 + [1] * 8),
    }
    batched = scripted(data, 16)
    assert batched.shape == (16,)
    for sl, pos, cell in [(slice(0, 8), pos1, cell1), (slice(8, 16), pos2, cell2)]:
        one = {"positions": torch.tensor(pos), "species": torch.tensor(species[sl]),
               "cell": torch.tensor(cell)[None], "pbc": torch.ones(1, 3, dtype=torch.bool),
               "batch": torch.zeros(8, dtype=torch.long)}
        torch.testing.assert_close(term(one, 8), batched[sl], rtol=1e-12, atol=1e-14)
    single = {k: (v.float() if v.is_floating_point() else v) for k, v in data.items()}
    torch.testing.assert_close(scripted(single, 16).double(), batched, rtol=1e-4, atol=1e-6)


def brute_force_pairs(positions, cell, pbc, cutoff):
    """{(i, j, shift)} of every directed pair 0 < |x_j + shift·cell − x_i| < cutoff, over all images."""
    dual = np.linalg.norm(np.linalg.inv(cell), axis=0)
    spread = np.ptp(positions @ np.linalg.inv(cell), axis=0)
    reach = [int(np.ceil(cutoff * dual[k] + spread[k])) + 1 if pbc[k] else 0 for k in range(3)]
    grid = np.stack(np.meshgrid(*[np.arange(-n, n + 1) for n in reach], indexing="ij"), -1).reshape(-1, 3)
    out = set()
    for i, x in enumerate(positions):
        r = np.linalg.norm(positions[None, :, :] + (grid @ cell)[:, None, :] - x, axis=2)  # (shifts, N)
        for s, j in zip(*np.nonzero((r < cutoff) & (r > 0)), strict=True):
            out.add((i, int(j), tuple(int(v) for v in grid[s])))
    return out


@pytest.mark.parametrize("pbc", [(True, True, True), (True, False, True), (False, True, False),
                                 (False, False, False)])
def test_half_pairs_match_brute_force(pbc):
    """The cell list finds every pair once, also in cells thinner than the cutoff, with atoms outside
    the cell, in slabs, wires and clusters (non-periodic rows arbitrary), in chunks of any size."""
    rng = np.random.default_rng(sum(pbc))
    scripted = torch.jit.script(half_pairs)
    for _ in range(4):
        cell = np.diag(rng.uniform(2.0, 8.0, 3)) + np.tril(rng.uniform(-1.5, 1.5, (3, 3)), k=-1)
        positions = rng.uniform(-0.3, 1.3, (int(rng.integers(2, 25)), 3)) @ cell
        cutoff = float(rng.uniform(2.0, 12.0))
        args = (torch.tensor(positions), torch.tensor(cell), torch.tensor(pbc), cutoff)
        i, j, image, shifts, wrap = scripted(*args, chunk=int(rng.integers(1, 4000)))
        shift = (shifts[image] - wrap[j] + wrap[i]).round().long().numpy()
        r = np.linalg.norm(positions[j] - positions[i] + shift @ cell, axis=1)
        inside = r < cutoff
        assert np.all(r < cutoff * (1 + 1e-8))
        found = [(a, b, tuple(s)) for a, b, s in
                 zip(i[inside].tolist(), j[inside].tolist(), shift[inside].tolist(), strict=True)]
        both = found + [(b, a, tuple(-v for v in s)) for a, b, s in found]
        assert len(set(both)) == len(both)  # each unordered pair once
        assert set(both) == brute_force_pairs(positions, cell, pbc, cutoff)


def test_d3_bad_input():
    with pytest.raises(UserError, match="functional"):
        D3Dispersion(["C"], functional="nonsense")
    with pytest.raises(UserError, match="a1, a2"):
        D3Dispersion(["C"], functional=None, s6=1.0, s8=1.0)
    with pytest.raises(UserError, match="Am"):
        D3Dispersion(["C", "Am"])
