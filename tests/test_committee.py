"""Committee models (issue 21): the mean and the deviations against the members evaluated
alone, finite differences of the mean, the deployed forward with ghost atoms, the exported file
through the ASE calculator, deviation warnings, and bad input."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from ase.md.verlet import VelocityVerlet
from calculator_models import ELEMENTS, triclinic_cell
from model_checks import (
    as_tensor_batch,
    explicit_ghosts,
    finite_difference_forces,
    ghost_forces_folded,
    single,
)

from fingerprints import DescriptorSet, default_config
from mlip import MLIPCalculator, keys
from mlip.calculator import DeviationWarning
from mlip.errors import UserError
from mlip.export import export_model, model_metadata
from mlip.model import Potential
from mlip.model.members import member_model, member_networks, refit_member, set_members

K = 3


def committee(seed: int = 0, members: int = K) -> Potential:
    """An untrained committee with non-trivial normalisation, reference energies and scale."""
    torch.manual_seed(seed)
    descriptors = DescriptorSet.from_config(default_config(ELEMENTS), ELEMENTS)
    model = Potential(descriptors, ELEMENTS, hidden=[12, 12], committee=members).double()
    g = torch.Generator().manual_seed(seed)
    descriptors.mean.copy_(0.1 * torch.randn(descriptors.mean.shape, generator=g, dtype=torch.float64))
    descriptors.std.copy_(0.5 + torch.rand(descriptors.std.shape, generator=g, dtype=torch.float64))
    model.set_energy_reference(torch.tensor([-4.1, -3.5]) - seed, 2.0 + seed)
    return model


@pytest.fixture(scope="module")
def model() -> Potential:
    return committee()


def frame(seed: int = 0):
    """(positions, species, cell) of a 16-atom Ni/Cu triclinic cell."""
    atoms = triclinic_cell(seed)
    species = np.array([ELEMENTS.index(s) for s in atoms.get_chemical_symbols()])
    return atoms.positions, species, atoms.cell.array


def _n(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


def test_the_prediction_is_the_mean_of_the_members_evaluated_alone(model):
    pos, sp, cell = frame()
    batch = as_tensor_batch(model, [(pos, sp, cell), frame(1)])
    res = model.compute(batch, True, True, False, deviation=True)
    alone = [member_model(model, k).compute(batch, True, True, False) for k in range(K)]
    for key in (keys.ENERGY, keys.ATOMIC_ENERGIES, keys.FORCES, keys.VIRIAL, keys.STRESS):
        mean = torch.stack([r[key] for r in alone]).mean(dim=0)
        np.testing.assert_allclose(_n(res[key]), _n(mean), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(_n(res[keys.MEMBER_ENERGY]).T,
                               np.stack([_n(r[keys.ENERGY]) for r in alone]), rtol=1e-12)
    np.testing.assert_allclose(_n(res[keys.MEMBER_FORCES]),
                               np.stack([_n(r[keys.FORCES]) for r in alone]), atol=1e-12)


def test_deviations_match_a_computation_by_hand_from_the_members(model):
    batch = as_tensor_batch(model, [frame(0), frame(2)])
    res = model.compute(batch, True, False, False, deviation=True)
    alone = [member_model(model, k).compute(batch, True, False, False) for k in range(K)]
    forces = np.stack([_n(r[keys.FORCES]) for r in alone])  # (K, N, 3)
    energies = np.stack([_n(r[keys.ENERGY]) for r in alone])  # (K, B)
    n_atoms = batch[keys.N_ATOMS].numpy()
    d = np.sqrt(np.mean(np.sum((forces - forces.mean(axis=0)) ** 2, axis=2), axis=0))
    np.testing.assert_allclose(res[keys.FORCE_DEVIATION].numpy(), d, rtol=1e-10)
    frame_of = batch[keys.BATCH].numpy()
    np.testing.assert_allclose(_n(res[keys.MAX_FORCE_DEVIATION]), [d[frame_of == b].max() for b in (0, 1)])
    np.testing.assert_allclose(_n(res[keys.ENERGY_DEVIATION]), energies.std(axis=0) / n_atoms,
                               rtol=1e-10)
    assert d.max() > 0.01  # members that disagree, or the test would prove little


def with_physics(model: Potential) -> Potential:
    """``model`` with physics terms added: ZBL (inner 1, outer 3 Å, reaching the cell's
    neighbours) and Ewald message passing (whose per-atom embeddings read the descriptors, a
    term that takes the features as the networks do), all its parameters random."""
    from mlip.physics.ewald_mp import EwaldMP
    from mlip.physics.zbl import ZBL

    torch.manual_seed(3)
    ewald_mp = EwaldMP(len(ELEMENTS), int(model.descriptors.n_features), channels=2, k_cutoff=1.0).double()
    with torch.no_grad():
        for parameter in ewald_mp.parameters():
            parameter.copy_(0.3 * torch.randn_like(parameter))
    out = Potential(copy.deepcopy(model.descriptors), ELEMENTS, hidden=[12, 12], committee=model.committee,
                    physics=[ZBL(ELEMENTS, 1.0, 3.0), ewald_mp]).double()
    out.networks.load_state_dict(model.networks.state_dict())
    out.set_energy_reference(model.energy_shift, float(model.energy_scale))
    return out


@pytest.mark.parametrize("members", [2, K])
def test_member_derivatives_equal_the_loop_over_the_members_alone(members):
    """The members' forces and virials (one pass through the networks, K - 1 through the
    descriptors) equal each member's own model's (one full backward pass per member), with
    physics terms, one of them reading the descriptors, in the shared part of the energy."""
    model = with_physics(committee(seed=4, members=members))
    batch = as_tensor_batch(model, [frame(0), frame(2)])
    res = model.compute(batch, True, True, False, deviation=True)
    alone = [member_model(model, k).compute(batch, True, True, False) for k in range(members)]
    for key, member_key in ((keys.FORCES, keys.MEMBER_FORCES), (keys.VIRIAL, keys.MEMBER_VIRIAL)):
        loop = np.stack([_n(r[key]) for r in alone])
        scale = np.abs(loop).max()
        np.testing.assert_allclose(_n(res[member_key]), loop, rtol=0, atol=1e-12 * scale)
        np.testing.assert_allclose(_n(res[key]), loop.mean(axis=0), rtol=0, atol=1e-12 * scale)
    spread = _n(res[keys.MEMBER_FORCES]) - _n(res[keys.FORCES])
    assert np.abs(spread).max() > 1e-3 * np.abs(_n(res[keys.FORCES])).max()  # members that disagree


def test_member_forces_train_each_member_as_if_alone(model):
    """With ``create_graph`` (training), a loss on the members' forces and virials has the
    parameter gradients of the same loss on each member's own model."""
    batch = as_tensor_batch(model, [frame(1)])
    g = torch.Generator().manual_seed(5)
    res = model.compute(batch, True, True, True, deviation=True)
    weights_f = torch.randn(res[keys.MEMBER_FORCES].shape, generator=g, dtype=torch.float64)
    weights_v = torch.randn(res[keys.MEMBER_VIRIAL].shape, generator=g, dtype=torch.float64)
    loss = (weights_f * res[keys.MEMBER_FORCES] ** 2).sum() + (weights_v * res[keys.MEMBER_VIRIAL]).sum()
    grads = torch.autograd.grad([loss], list(model.networks.parameters()), allow_unused=True)
    expected = []
    for k in range(K):
        alone = member_model(model, k)
        own = alone.compute(batch, True, True, True)
        loss_k = (weights_f[k] * own[keys.FORCES] ** 2).sum() + (weights_v[k] * own[keys.VIRIAL]).sum()
        expected += list(torch.autograd.grad([loss_k], list(alone.networks.parameters()), allow_unused=True))
    assert len(grads) == len(expected)
    for got, want in zip(grads, expected, strict=True):
        if want is None:  # the output biases: forces do not depend on them
            assert got is None or not got.any()
            continue
        np.testing.assert_allclose(_n(got), _n(want), rtol=1e-10, atol=1e-12 * float(want.abs().max()))


def test_a_single_model_reports_no_deviation():
    model = committee(members=1)
    res = model.compute(as_tensor_batch(model, [frame()]), True, True, False, deviation=True)
    assert not {k for k in res if "deviation" in k or k.startswith("member")}
    assert model_metadata(model)["committee"] == 1


def test_forces_of_the_mean_are_its_finite_differences(model):
    pos, sp, cell = frame(3)
    res = single(model, pos, sp, cell)
    for (a, d), value in finite_difference_forces(model, pos, sp, cell, (True,) * 3, atoms=(0, 5)).items():
        assert res["forces"][a, d] == pytest.approx(value, rel=1e-6, abs=1e-8)


def test_deployed_forward_with_ghost_atoms_gives_member_forces_to_fold(model):
    """LAMMPS' view: local atoms then ghosts; each member's forces summed onto the owners (reverse
    communication) are that member's forces, and d_i follows from them."""
    pos, sp, cell = frame(4)
    all_pos, all_sp, edge_index, n_local = explicit_ghosts(pos, sp, cell, model.cutoff)
    dt = torch.float64
    out = model(torch.tensor(all_pos, dtype=dt), torch.as_tensor(all_sp), torch.as_tensor(edge_index),
                torch.zeros(edge_index.shape[1], 3, dtype=dt), torch.tensor(cell, dtype=dt),
                torch.tensor([True] * 3), n_local, False, True)
    assert set(out) == {keys.ENERGY, keys.ATOMIC_ENERGIES, keys.FORCES, keys.VIRIAL, keys.EXTRAPOLATION,
                        keys.MEMBER_ENERGY, keys.MEMBER_FORCES}
    assert out[keys.MEMBER_ENERGY].shape == (K,) and out[keys.MEMBER_FORCES].shape == (K, len(all_pos), 3)
    ref = model.compute(as_tensor_batch(model, [(pos, sp, cell)]), True, False, False, deviation=True)
    folded = np.stack([ghost_forces_folded(f, n_local, all_pos, pos, cell)
                       for f in _n(out[keys.MEMBER_FORCES])])
    np.testing.assert_allclose(folded, _n(ref[keys.MEMBER_FORCES]), atol=1e-10)
    np.testing.assert_allclose(_n(out[keys.MEMBER_ENERGY]), _n(ref[keys.MEMBER_ENERGY][0]),
                               rtol=1e-12)
    plain = model(torch.tensor(all_pos, dtype=dt), torch.as_tensor(all_sp), torch.as_tensor(edge_index),
                  torch.zeros(edge_index.shape[1], 3, dtype=dt), torch.tensor(cell, dtype=dt),
                  torch.tensor([True] * 3), n_local)
    assert keys.MEMBER_FORCES not in plain  # members' forces only on request: one backward pass
    np.testing.assert_allclose(_n(plain[keys.FORCES]), _n(out[keys.FORCES]), atol=1e-12)


def test_exported_committee_through_the_ase_calculator(model, tmp_path):
    path = export_model(copy.deepcopy(model), tmp_path / "model.pt", model_metadata(model))
    atoms = triclinic_cell(5)
    atoms.calc = MLIPCalculator(path)
    assert {"energy_deviation", "force_deviation"} <= set(atoms.calc.implemented_properties)
    batch = as_tensor_batch(model, [frame(5)])
    ref = model.compute(batch, True, True, False, deviation=True)
    assert atoms.get_potential_energy() == pytest.approx(float(_n(ref[keys.ENERGY])[0]), rel=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), _n(ref[keys.FORCES]), atol=1e-10)
    np.testing.assert_allclose(atoms.calc.get_property("force_deviation"), ref[keys.FORCE_DEVIATION].numpy(),
                               atol=1e-10)
    energy_deviation = float(_n(ref[keys.ENERGY_DEVIATION])[0])
    assert atoms.calc.get_property("energy_deviation") == pytest.approx(energy_deviation, rel=1e-10)
    single_model = MLIPCalculator(member_model(model, 0))
    assert "force_deviation" not in single_model.implemented_properties


def test_lammps_runs_a_committee_as_its_mean(model, tmp_path):
    """pair_style mlip with a committee file, no deviation asked for: the members' mean, as in ASE."""
    from mlip.lammps import load_lammps
    from mlip.lammps.build import ensure_built
    from mlip.lammps.cell import lammps_cell

    path = export_model(copy.deepcopy(model), tmp_path / "model.pt", model_metadata(model))
    atoms = triclinic_cell(8)
    lower, rotation = lammps_cell(atoms.cell.array)
    atoms.set_cell(lower)
    atoms.positions = atoms.positions @ rotation
    atoms.wrap()
    (a, _, _), (b, c, _), (d, e, f) = lower.tolist()
    lmp = load_lammps().lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    try:
        lmp.commands_list([f"plugin load {ensure_built(echo=lambda line: None)}", "units metal",
                           "atom_style atomic", "atom_modify map array",
                           f"region box prism 0 {a!r} 0 {c!r} 0 {f!r} {b!r} {d!r} {e!r} units box",
                           "create_box 2 box", "mass * 60.0"])
        for number, (x, y, z) in zip(atoms.numbers, atoms.positions.tolist(), strict=True):
            lmp.command(f"create_atoms {1 if number == 28 else 2} single {x!r} {y!r} {z!r} units box")
        lmp.commands_list([f"pair_style mlip {path}", "pair_coeff * * Ni Cu", "run 0"])
        n = lmp.get_natoms()
        order = np.argsort(np.array(lmp.numpy.extract_atom("id"))[:n])
        forces = np.array(lmp.numpy.extract_atom("f"))[:n][order]
        energy = lmp.get_thermo("pe")
    finally:
        lmp.close()
    atoms.calc = MLIPCalculator(path)
    assert energy == pytest.approx(atoms.get_potential_energy(), abs=1e-9)
    np.testing.assert_allclose(forces, atoms.get_forces(), atol=1e-9)


def test_deviation_warning_once_per_step_above_the_threshold(model):
    atoms = triclinic_cell(6)
    atoms.set_masses([63.5] * len(atoms))
    calc = MLIPCalculator(model, deviation_warning=1e-6)
    atoms.calc = calc
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        VelocityVerlet(atoms, timestep=0.5 * 1e-3 * 98.2269).run(3)  # 0.5 fs in ASE time units
        atoms.get_stress()  # another property of the last step: no second warning
    found = [str(w.message) for w in caught if w.category is DeviationWarning]
    assert [m.split(":")[0] for m in found] == ["step 1", "step 2", "step 3", "step 4"]
    quiet = MLIPCalculator(model, deviation_warning=1e6)
    atoms.calc = quiet
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        atoms.get_forces()
    assert not [w for w in caught if w.category is DeviationWarning]


def test_refit_member_gives_the_same_energies_in_another_normalisation():
    a, b = committee(1, members=1), committee(2, members=1)
    batch = as_tensor_batch(a, [frame(7)])
    both = set_members(copy.deepcopy(a), [copy.deepcopy(a.networks), refit_member(b.networks, b, a)])
    res = both.compute(batch, True, False, False, deviation=True)
    ref = b.compute(batch, True, False, False)
    assert float(res[keys.MEMBER_ENERGY][0, 1]) == pytest.approx(float(_n(ref[keys.ENERGY])[0]), rel=1e-12)
    np.testing.assert_allclose(_n(res[keys.MEMBER_FORCES][1]), _n(ref[keys.FORCES]),
                               atol=1e-10)
    assert len(member_networks(both)) == 2


def test_bad_input(model):
    with pytest.raises(ValueError, match="committee"):
        Potential(copy.deepcopy(model.descriptors), ELEMENTS, hidden=[4], committee=0)
    with pytest.raises(ValueError, match="charges"):
        Potential(copy.deepcopy(model.descriptors), ELEMENTS, hidden=[4], charges="fixed", committee=2)
    with pytest.raises(UserError, match="not a committee"):
        MLIPCalculator(member_model(model, 0), deviation_warning=0.1)
