"""The Potential: derivatives against finite differences, invariances, smoothness, batching,
TorchScript, float32, physics terms and the LAMMPS-style ghost-atom path."""

import numpy as np
import pytest
import torch
from model_checks import (
    as_tensor_batch,
    explicit_ghosts,
    finite_difference_forces,
    finite_difference_virial,
    ghost_forces_folded,
    random_rotation,
    single,
)

from mlip.model import Activation, Potential
from mlip.physics import PhysicsTerm
from mlip.train.model_builder import build_potential

ELEMENTS = ["Ni", "Cu"]  # sorted by Z: Ni (28) before Cu (29)


def make_model(physics=None, hidden=(16, 16)) -> Potential:
    torch.manual_seed(0)
    cfg = {"descriptors": "default", "hidden": list(hidden), "activation": "silu", "physics": physics or [],
           "charges": False, "dtype": "float64"}
    model = build_potential(cfg, ELEMENTS)
    model.set_energy_reference(torch.tensor([-4.1, -3.5]), 0.7)
    return model


@pytest.fixture(scope="module")
def model():
    return make_model()


def structure(seed=0, n=10, skew=True):
    rng = np.random.default_rng(seed)
    cell = np.diag([5.3, 5.0, 5.6])
    if skew:
        cell[1, 0], cell[2, 0], cell[2, 1] = 0.9, -0.6, 0.5
    frac = rng.random((n, 3))
    pos = frac @ cell
    # push atoms apart a little to avoid unphysical overlaps
    species = rng.integers(0, 2, n)
    return pos, species, cell


def test_forces_match_finite_differences(model):
    pos, sp, cell = structure()
    res = single(model, pos, sp, cell)
    fd = finite_difference_forces(model, pos, sp, cell, (True,) * 3)
    for (a, d), value in fd.items():
        assert res["forces"][a, d] == pytest.approx(value, rel=1e-6, abs=1e-8)


def test_virial_matches_strain_derivative(model):
    pos, sp, cell = structure(1)
    res = single(model, pos, sp, cell)
    fd = finite_difference_virial(model, pos, sp, cell, (True,) * 3)
    np.testing.assert_allclose(res["virial"], fd, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(res["virial"], res["virial"].T, atol=1e-10)


def test_invariance_rotation_translation_permutation(model):
    pos, sp, cell = structure(2)
    ref = single(model, pos, sp, cell)
    rot = random_rotation(3)
    r = single(model, pos @ rot.T, sp, cell @ rot.T)
    assert r["energy"] == pytest.approx(ref["energy"], abs=1e-10)
    np.testing.assert_allclose(r["forces"], ref["forces"] @ rot.T, atol=1e-10)
    t = single(model, pos + np.array([0.3, -1.1, 2.0]), sp, cell)
    assert t["energy"] == pytest.approx(ref["energy"], abs=1e-10)
    perm = np.random.default_rng(4).permutation(len(pos))
    p = single(model, pos[perm], sp[perm], cell)
    assert p["energy"] == pytest.approx(ref["energy"], abs=1e-10)
    np.testing.assert_allclose(p["forces"], ref["forces"][perm], atol=1e-10)


def test_supercell_is_extensive(model):
    pos, sp, cell = structure(5, n=6)
    ref = single(model, pos, sp, cell)
    shifts = np.array([[i, j, k] for i in range(2) for j in range(2) for k in range(2)])
    big_pos = np.concatenate([pos + s @ cell for s in shifts])
    big = single(model, big_pos, np.tile(sp, 8), 2 * cell)
    assert big["energy"] == pytest.approx(8 * ref["energy"], rel=1e-12)
    np.testing.assert_allclose(big["forces"][: len(pos)], ref["forces"], atol=1e-10)


def test_energy_smooth_at_cutoff(model):
    cell = np.eye(3) * 40.0
    rc = model.cutoff
    energies, forces = [], []
    for r in (rc - 1e-4, rc - 1e-6, rc + 1e-6):
        pos = np.array([[0.0, 0, 0], [r, 0, 0]])
        out = single(model, pos, np.array([0, 1]), cell, (False,) * 3)
        energies.append(out["energy"])
        forces.append(out["forces"][0, 0])
    assert abs(energies[1] - energies[2]) < 1e-9
    assert abs(forces[1]) < 1e-6 and abs(forces[2]) == 0.0


def test_batch_equals_single_frames(model):
    frames = [structure(s, n=5 + s) for s in range(3)]
    b = as_tensor_batch(model, frames)
    res = model.compute(b)
    start = 0
    for k, (pos, sp, cell) in enumerate(frames):
        one = single(model, pos, sp, cell)
        assert float(res["energy"][k]) == pytest.approx(float(one["energy"]), abs=1e-10)
        np.testing.assert_allclose(res["forces"][start:start + len(pos)].detach().numpy(), one["forces"],
                                   atol=1e-10)
        np.testing.assert_allclose(res["virial"][k].detach().numpy(), one["virial"], atol=1e-10)
        start += len(pos)


def test_torchscript_equals_eager(model):
    pos, sp, cell = structure(6)
    scripted = torch.jit.script(model)
    a = single(model, pos, sp, cell)
    b = single(scripted, pos, sp, cell)
    for key in ("energy", "forces", "virial", "atomic_energies"):
        np.testing.assert_allclose(a[key], b[key], atol=1e-12)


def test_float32_model_runs_close_to_float64(model):
    pos, sp, cell = structure(7)
    m32 = make_model().to(torch.float32)
    ei, _, shift = __import__("fingerprints.neighbors", fromlist=["x"]).neighbor_list(pos, cell, (True,) * 3,
                                                                                      m32.cutoff)
    out = m32(torch.tensor(pos, dtype=torch.float32), torch.as_tensor(sp), torch.as_tensor(ei),
              torch.tensor(shift, dtype=torch.float32), torch.tensor(cell, dtype=torch.float32),
              torch.ones(3, dtype=torch.bool), len(pos))
    ref = single(model, pos, sp, cell)
    assert out["energy"].dtype == torch.float32
    assert float(out["energy"]) == pytest.approx(float(ref["energy"]), rel=1e-5)


def test_explicit_ghost_atoms_match_periodic_shifts(model):
    """LAMMPS passes ghost atoms with zero shifts: same energy, folded forces and virial."""
    pos, sp, cell = structure(8, n=8)
    ref = single(model, pos, sp, cell)
    all_pos, all_sp, ei, n_local = explicit_ghosts(pos, sp, cell, model.cutoff)
    dt = torch.float64
    out = model(torch.tensor(all_pos, dtype=dt), torch.as_tensor(all_sp), torch.as_tensor(ei),
                torch.zeros(ei.shape[1], 3, dtype=dt), torch.tensor(cell, dtype=dt),
                torch.ones(3, dtype=torch.bool), n_local)
    assert float(out["energy"]) == pytest.approx(float(ref["energy"]), abs=1e-10)
    folded = ghost_forces_folded(out["forces"].detach().numpy(), n_local, all_pos, pos, cell)
    np.testing.assert_allclose(folded, ref["forces"], atol=1e-10)
    np.testing.assert_allclose(out["virial"].detach().numpy(), ref["virial"], atol=1e-9)


class HarmonicPairs(PhysicsTerm):
    """A trivial physics term: E = Σ_pairs k (r − r0)² on edges within its cutoff."""

    def __init__(self, k: float = 0.3, r0: float = 2.5, cutoff: float = 3.0):
        super().__init__("harmonic", cutoff)
        self.k, self.r0 = k, r0

    def forward(self, data: dict[str, torch.Tensor], n_local: int) -> torch.Tensor:
        r = torch.linalg.norm(data["edge_vec"], dim=1)
        e = torch.where(r < self.cutoff, 0.5 * self.k * (r - self.r0) ** 2, torch.zeros_like(r))
        return torch.zeros(n_local, dtype=r.dtype).index_add(0, data["edge_index"][0], e)


def test_physics_term_adds_energy_with_consistent_derivatives(model):
    pos, sp, cell = structure(9)
    with_term = make_model()
    with_term.physics.append(HarmonicPairs())
    base = single(model, pos, sp, cell)
    both = single(with_term, pos, sp, cell)
    r = []
    for i in range(len(pos)):
        for j in range(len(pos)):
            for s in np.ndindex(3, 3, 3):
                d = pos[j] - pos[i] + (np.array(s) - 1) @ cell
                dist = np.linalg.norm(d)
                if 0 < dist < 3.0:
                    r.append(dist)
    expected = sum(0.5 * 0.3 * (x - 2.5) ** 2 for x in r)
    assert float(both["energy"] - base["energy"]) == pytest.approx(expected, rel=1e-10)
    fd = finite_difference_forces(with_term, pos, sp, cell, (True,) * 3)
    for (a, d), value in fd.items():
        assert both["forces"][a, d] == pytest.approx(value, rel=1e-6, abs=1e-8)
    fd_virial = finite_difference_virial(with_term, pos, sp, cell, (True,) * 3)
    np.testing.assert_allclose(both["virial"], fd_virial, rtol=1e-6, atol=1e-8)
    torch.jit.script(with_term)


def test_rann_sigI_activation():
    x = torch.linspace(-5, 5, 11, dtype=torch.float64)
    expected = 0.1 * x.numpy() + 0.9 * np.log1p(np.exp(x.numpy()))
    np.testing.assert_allclose(Activation("sigI")(x).numpy(), expected)
    assert Activation("t").name == "tanh"
    with pytest.raises(ValueError, match="unknown activation"):
        Activation("relu6")


@pytest.mark.parametrize("charges", ["network", "fixed"])
def test_model_with_zbl_and_ewald_has_consistent_derivatives(charges):
    torch.manual_seed(1)
    cfg = {"descriptors": "default", "hidden": [8], "activation": "tanh", "physics": ["zbl", "ewald"],
           "charges": charges, "dtype": "float64"}
    m = build_potential(cfg, ELEMENTS)
    if charges == "fixed":
        with torch.no_grad():
            m.fixed_charges[0].charge.copy_(torch.tensor([0.4, -0.4]))
    pos, sp, cell = structure(10, n=8)
    pos[1] = pos[0] + np.array([1.5, 0.2, 0.1])  # a close pair inside the ZBL range
    out = single(m, pos, sp, cell)
    assert abs(out["charges"].sum()) < 1e-12 and np.abs(out["charges"]).max() > 1e-3
    fd = finite_difference_forces(m, pos, sp, cell, (True,) * 3)
    for (a, d), value in fd.items():
        assert out["forces"][a, d] == pytest.approx(value, rel=1e-6, abs=1e-7)
    np.testing.assert_allclose(out["virial"], finite_difference_virial(m, pos, sp, cell, (True,) * 3),
                               rtol=1e-6, atol=1e-7)
    scripted = single(torch.jit.script(m), pos, sp, cell)
    assert scripted["energy"] == pytest.approx(out["energy"], abs=1e-10)


def test_potnet_lattice_channels_are_differentiable_and_scriptable():
    torch.manual_seed(2)
    cfg = {"descriptors": [{"type": "rann_radial", "re": 2.5, "rc": 4.0, "dr": 1.0, "alpha": [3.0, 4.0],
                            "o": 0, "n": 1}, {"type": "potnet", "alpha": 3.0}],
           "hidden": [8], "activation": "tanh", "physics": [], "charges": "none", "dtype": "float64"}
    m = build_potential(cfg, ELEMENTS)
    assert m.long_range and m.networks.nets[0][0].in_features == 2 * 2 + 3 * 2
    pos, sp, cell = structure(11, n=6)
    out = single(m, pos, sp, cell)
    fd = finite_difference_forces(m, pos, sp, cell, (True,) * 3)
    for (a, d), value in fd.items():
        assert out["forces"][a, d] == pytest.approx(value, rel=1e-6, abs=1e-7)
    np.testing.assert_allclose(out["virial"], finite_difference_virial(m, pos, sp, cell, (True,) * 3),
                               rtol=1e-6, atol=1e-7)
    assert single(torch.jit.script(m), pos, sp, cell)["energy"] == pytest.approx(out["energy"], abs=1e-10)


def test_checkpoints_of_the_separate_lattice_path_load():
    """State dicts written when PotNet's lattice sums were a separate path of the Potential
    (buffers ``lattice_mean``/``lattice_std``: one statistic per lattice feature, after the
    descriptors; empty for every other model) load into today's model, whose descriptor set holds
    the lattice sums: the same normalised features, the same energies."""
    torch.manual_seed(4)
    cfg = {"descriptors": [{"type": "potnet", "alpha": 3.0},  # listed first: still built last
                           {"type": "rann_radial", "re": 2.5, "rc": 4.0, "dr": 1.0, "alpha": [3.0, 4.0],
                            "o": 0, "n": 1}],
           "hidden": [8], "activation": "tanh", "physics": [], "charges": "none", "dtype": "float64"}
    model = build_potential(cfg, ELEMENTS)
    n_lattice = 6
    with torch.no_grad():
        model.descriptors.mean.normal_()
        model.descriptors.std.uniform_(0.5, 2.0)
        model.descriptors.mean[:, -n_lattice:] = torch.linspace(-1.0, 1.0, n_lattice)  # old: per feature
        model.descriptors.std[:, -n_lattice:] = torch.linspace(0.5, 2.0, n_lattice)
    state = model.state_dict()
    old = {**state, "lattice_mean": state["descriptors.mean"][0, -n_lattice:].clone(),
           "lattice_std": state["descriptors.std"][0, -n_lattice:].clone()}
    for key in ("descriptors.mean", "descriptors.std", "feature_min", "feature_max"):
        old[key] = state[key][:, :-n_lattice].clone()
    loaded = build_potential(cfg, ELEMENTS)
    loaded.load_state_dict(old)
    pos, sp, cell = structure(12, n=6)
    assert single(loaded, pos, sp, cell)["energy"] == pytest.approx(single(model, pos, sp, cell)["energy"],
                                                                    abs=1e-12)
    short = make_model()
    short_state = {**short.state_dict(), "lattice_mean": torch.zeros(0, dtype=torch.float64),
                   "lattice_std": torch.ones(0, dtype=torch.float64)}
    make_model().load_state_dict(short_state)


def test_ionic_systems_start_from_formal_charges():
    from mlip.physics.charges import initial_charges

    assert initial_charges(["Na", "Cl"]) == [1.0, -1.0]
    assert initial_charges(["Mg", "O"]) == [2.0, -2.0]
    assert initial_charges(["H", "C"]) == [0.0, 0.0]  # covalent: electronegativity gap < 1
    assert initial_charges(["Cu"]) == [0.0]
    torch.manual_seed(3)
    cfg = {"descriptors": [{"type": "rann_radial", "re": 2.8, "rc": 5.0, "dr": 1.5, "alpha": [3.0], "o": 0,
                            "n": 0}], "hidden": [8], "activation": "tanh", "physics": ["ewald"],
           "charges": "network", "dtype": "float64"}
    model = build_potential(cfg, ["Na", "Cl"])
    a = 5.64
    pos = np.array([[0, 0, 0], [a / 2, 0, 0], [0, a / 2, 0], [a / 2, a / 2, 0], [0, 0, a / 2],
                    [a / 2, 0, a / 2], [0, a / 2, a / 2], [a / 2, a / 2, a / 2]], dtype=float)
    species = np.array([0, 1, 1, 0, 1, 0, 0, 1])
    q = single(model, pos + 0.05 * np.random.default_rng(0).standard_normal(pos.shape), species,
               np.eye(3) * a)["charges"]
    np.testing.assert_allclose(np.where(species == 0, 1.0, -1.0), q, atol=0.3)
