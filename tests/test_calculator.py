"""mlip.MLIPCalculator: derivatives against finite differences, agreement of the eager model, the
TorchScript file and the calculator, neighbour-list reuse, total charge, errors, batch API."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError
from calculator_models import (
    ELEMENTS,
    STRUCTURES,
    molecule,
    physics_model,
    plain_model,
    small_cell,
    triclinic_cell,
)

from fingerprints import DescriptorSet, default_config
from fingerprints.neighbors import neighbor_list
from mlip import MLIPCalculator
from mlip.errors import UserError
from mlip.export import export_model, model_metadata
from mlip.model import Potential
from mlip.physics.ewald import Ewald
from parsers import Frame


@pytest.fixture(scope="module")
def model() -> Potential:
    return plain_model()


@pytest.fixture(scope="module")
def model_file(model, tmp_path_factory):
    return export_model(model, tmp_path_factory.mktemp("m") / "model.pt", model_metadata(model))


def energy(atoms: Atoms, calc: MLIPCalculator) -> float:
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms.get_potential_energy()


def test_forces_are_minus_finite_difference_gradient(model):
    calc = MLIPCalculator(model)
    for atoms in (triclinic_cell(), small_cell(), molecule()):
        atoms.calc = calc
        forces = atoms.get_forces()
        assert np.abs(forces).max() > 0.01  # a non-trivial test
        h = 1e-5
        for a in range(min(3, len(atoms))):
            for d in range(3):
                plus, minus = atoms.copy(), atoms.copy()
                plus.positions[a, d] += h
                minus.positions[a, d] -= h
                fd = -(energy(plus, calc) - energy(minus, calc)) / (2 * h)
                assert forces[a, d] == pytest.approx(fd, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("make", [triclinic_cell, small_cell])
def test_stress_is_finite_difference_strain_derivative(model, make):
    """σ_ab = (1/V) ∂E/∂ε_ab for a symmetric strain x → x(I+ε), cell → cell(I+ε)."""
    atoms = make()
    atoms.calc = MLIPCalculator(model)
    stress = atoms.get_stress(voigt=False)
    assert np.abs(stress).max() > 1e-3
    volume = atoms.get_volume()
    h = 1e-6
    for a, b in [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]:
        eps = np.zeros((3, 3))
        eps[a, b] = eps[b, a] = h if a == b else h / 2
        values = []
        for sign in (1, -1):
            strained = atoms.copy()
            strained.set_cell(atoms.cell.array @ (np.eye(3) + sign * eps), scale_atoms=True)
            values.append(energy(strained, atoms.calc))
        fd = (values[0] - values[1]) / (2 * h) / volume
        assert stress[a, b] == pytest.approx(fd, rel=1e-6, abs=1e-9)


def reference_forward(module, model: Potential, atoms: Atoms) -> dict[str, np.ndarray]:
    """The deployed ``forward`` of ``module`` on ``atoms`` with a neighbour list built here."""
    ei, _, shift = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, model.cutoff)
    species = torch.as_tensor([ELEMENTS.index(s) for s in atoms.get_chemical_symbols()])
    f64 = torch.float64
    out = module(torch.tensor(atoms.positions, dtype=f64), species, torch.as_tensor(ei),
                 torch.tensor(shift, dtype=f64), torch.tensor(atoms.cell.array, dtype=f64),
                 torch.tensor(atoms.pbc), len(atoms))
    return {k: v.detach().numpy() for k, v in out.items()}


@pytest.mark.parametrize("with_physics", [False, True], ids=["plain", "physics"])
def test_eager_torchscript_file_and_calculator_agree(with_physics, model, model_file, tmp_path):
    eager = physics_model() if with_physics else model
    path = export_model(eager, tmp_path / "model.pt", model_metadata(eager)) if with_physics else model_file
    loaded = torch.jit.load(str(path))
    calculators = {"file": MLIPCalculator(path), "eager": MLIPCalculator(eager)}
    if not with_physics:
        calculators["scripted"] = MLIPCalculator(eager, jit=True)
    for name, make in STRUCTURES.items():
        atoms = make()
        ref = reference_forward(eager, eager, atoms)
        assert np.abs(ref["forces"]).max() > 0.01
        jit = reference_forward(loaded, eager, atoms)
        for key in ref:
            np.testing.assert_allclose(jit[key], ref[key], rtol=0, atol=1e-10, err_msg=f"{name} {key}")
        for label, calc in calculators.items():
            atoms.calc = calc
            where = f"{name}, calculator from {label}"
            assert atoms.get_potential_energy() == pytest.approx(float(ref["energy"]), abs=1e-10), where
            np.testing.assert_allclose(atoms.get_potential_energies(), ref["atomic_energies"], rtol=0,
                                       atol=1e-10, err_msg=where)
            np.testing.assert_allclose(atoms.get_forces(), ref["forces"], rtol=0, atol=1e-10, err_msg=where)
            if atoms.pbc.all():
                virial = -atoms.get_stress(voigt=False) * atoms.get_volume()
                np.testing.assert_allclose(virial, ref["virial"], rtol=0, atol=1e-10, err_msg=where)
            else:
                assert "stress" not in calc.results
                with pytest.raises(PropertyNotImplementedError):
                    atoms.get_stress()
            if with_physics:
                np.testing.assert_allclose(calc.results["charges"], ref["charges"], atol=1e-10)


def test_neighbor_list_rebuilt_only_when_geometry_changes(model):
    calc = MLIPCalculator(model)
    atoms = triclinic_cell()
    atoms.calc = calc
    forces = atoms.get_forces()
    stress = atoms.get_stress()  # a second model evaluation, same neighbour list
    assert calc.n_neighbor_builds == 1
    atoms.get_potential_energy()
    assert calc.n_neighbor_builds == 1
    atoms.positions[0, 0] += 0.05
    moved = atoms.get_forces()
    assert calc.n_neighbor_builds == 2
    assert not np.allclose(moved, forces)
    atoms.set_cell(atoms.cell.array * 1.01, scale_atoms=True)
    atoms.get_stress()
    assert calc.n_neighbor_builds == 3
    fresh = triclinic_cell()
    fresh.calc = MLIPCalculator(model)
    np.testing.assert_allclose(fresh.get_stress(), stress, atol=1e-12)


def test_total_charge_from_atoms_info():
    calc = MLIPCalculator(physics_model())
    atoms = triclinic_cell()
    atoms.calc = calc
    neutral = atoms.get_potential_energy()
    assert calc.results["charges"].sum() == pytest.approx(0.0, abs=1e-10)
    atoms.info["charge"] = 1.0  # ASE's own checks do not see atoms.info; the calculator does
    charged = atoms.get_potential_energy()
    assert calc.results["charges"].sum() == pytest.approx(1.0, abs=1e-10)
    assert charged != pytest.approx(neutral, abs=1e-6)


def test_unknown_element_is_a_clear_error(model):
    atoms = triclinic_cell()
    atoms.numbers[2] = 26
    atoms.calc = MLIPCalculator(model)
    with pytest.raises(UserError, match="Fe.*not in the model's elements Ni, Cu"):
        atoms.get_potential_energy()


def test_mixed_pbc_rejected_only_for_long_range_models(model):
    slab = triclinic_cell()
    slab.pbc = [True, True, False]
    slab.calc = MLIPCalculator(model)
    assert np.isfinite(slab.get_forces()).all()  # short-range models handle any periodicity
    slab.calc = MLIPCalculator(physics_model())
    with pytest.raises(UserError, match=r"pbc=\[True, True, False\].*long-range \(physics terms: zbl, d3"):
        slab.get_potential_energy()


def test_batch_predict_equals_single_calculations(model):
    calc = MLIPCalculator(model)
    structures = [triclinic_cell(0), molecule(), small_cell(), triclinic_cell(1)]
    results = calc.predict(structures, batch_size=3)
    assert len(results) == len(structures)
    for atoms, res in zip(structures, results, strict=True):
        atoms.calc = MLIPCalculator(model)
        assert res["energy"] == pytest.approx(atoms.get_potential_energy(), rel=0, abs=1e-10)
        assert res["free_energy"] == res["energy"]
        np.testing.assert_allclose(res["energies"], atoms.get_potential_energies(), atol=1e-10)
        np.testing.assert_allclose(res["forces"], atoms.get_forces(), atol=1e-10)
        if atoms.pbc.all():
            np.testing.assert_allclose(res["stress"], atoms.get_stress(), atol=1e-12)
        else:
            assert "stress" not in res


def test_float32_calculator_close_to_float64(model):
    atoms = triclinic_cell()
    atoms.calc = MLIPCalculator(model)
    ref = atoms.get_forces()
    atoms.calc = MLIPCalculator(model, dtype="float32")
    np.testing.assert_allclose(atoms.get_forces(), ref, atol=1e-4)
    assert next(model.parameters()).dtype == torch.float64  # the caller's model is untouched


def test_model_file_errors(model_file, tmp_path):
    with pytest.raises(UserError, match="model file not found"):
        MLIPCalculator(tmp_path / "missing.pt")
    with pytest.raises(UserError, match="frozen.*export it as float32"):
        MLIPCalculator(model_file, dtype="float32")
    with pytest.raises(UserError, match="dtype must be float64 or float32"):
        MLIPCalculator(model_file, dtype="float16")


def test_get_charges_for_charge_models_only(model):
    """``atoms.get_charges()`` works through ASE's property machinery for a charge model (its
    ``implemented_properties`` lists ``charges``); a model without charges does not claim them."""
    atoms = triclinic_cell()
    atoms.info["charge"] = -1.0
    atoms.calc = MLIPCalculator(physics_model())
    assert "charges" in atoms.calc.implemented_properties
    assert atoms.get_charges().sum() == pytest.approx(-1.0, abs=1e-10)
    assert "charges" not in MLIPCalculator(model).implemented_properties


def test_frame_to_ase_total_charge_reaches_the_calculator():
    """One total-charge key: ``Frame.to_ase`` writes ``atoms.info["charge"]``, the key the
    calculator reads (and ``Frame.from_ase`` reads back)."""
    cell = triclinic_cell()
    frame = Frame(numbers=cell.numbers, positions=cell.positions, cell=cell.cell.array, pbc=cell.pbc,
                  total_charge=1.0)
    atoms = frame.to_ase()
    assert atoms.info["charge"] == 1.0 and "total_charge" not in atoms.info
    assert Frame.from_ase(atoms).total_charge == 1.0
    atoms.calc = MLIPCalculator(physics_model())
    assert atoms.get_charges().sum() == pytest.approx(1.0, abs=1e-10)


def test_ewald_real_space_cutoff_beyond_the_descriptors_keeps_its_pairs():
    """The model's neighbour cutoff covers every term's edge range: an Ewald real-space cutoff
    above the descriptor cutoff widens it, and the energy (exact Ewald mode) does not depend on
    where real and reciprocal space are split."""
    energies = []
    for cutoff in (4.0, 7.0):
        torch.manual_seed(1)
        descriptors = DescriptorSet.from_config(default_config(ELEMENTS), ELEMENTS)
        ewald = Ewald(1e-8, mode="ewald", cutoff=cutoff)
        model = Potential(descriptors, ELEMENTS, hidden=[8], physics=[ewald], charges="fixed").double()
        with torch.no_grad():
            model.fixed_charges[0].charge.copy_(torch.tensor([0.4, -0.4]))  # Ni, Cu
        assert model.cutoff == max(cutoff, descriptors.cutoff)
        atoms = triclinic_cell()
        atoms.calc = MLIPCalculator(model)
        energies.append(atoms.get_potential_energy())
    assert energies[0] == pytest.approx(energies[1], abs=1e-7)  # pairs beyond 5.1 Å lost: 6e-6 eV off
