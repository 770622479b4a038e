"""``mlip export``'s LAMMPS overlay: the fixed terms (D3, ZBL) computed by LAMMPS' own pair styles
next to ``pair_style mlip``, against the whole model (network + D3 + ZBL) through the ASE
calculator, which evaluates every term in the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from physics_reference import lammps_reference

from fingerprints import DescriptorSet, default_config
from mlip import MLIPCalculator
from mlip.export import export_model, lammps_file, lammps_overlay_terms, model_metadata, read_metadata
from mlip.lammps.build import ensure_built
from mlip.model import Potential
from mlip.physics import ZBL, D3Dispersion

ELEMENTS = ["Ni", "Cu"]  # sorted by atomic number; LAMMPS types 1, 2


def cuni_cell() -> Atoms:
    """32 atoms of Ni and Cu on a rattled fcc lattice in a sheared (LAMMPS lower-triangular) cell,
    some pairs inside the ZBL range."""
    rng = np.random.default_rng(4)
    a = 3.58
    frac = np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]])
    grid = np.stack(np.meshgrid(*[np.arange(2)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    frac = ((grid + frac[None]) / 2.0).reshape(-1, 3)
    cell = np.array([[2 * a, 0.0, 0.0], [0.4, 2 * a, 0.0], [-0.3, 0.5, 2 * a]])
    positions = frac @ cell + rng.normal(0.0, 0.15, (len(frac), 3))
    atoms = Atoms(symbols=rng.choice(ELEMENTS, len(frac)), positions=positions, cell=cell, pbc=True)
    atoms.wrap()
    return atoms


def overlay_model() -> Potential:
    torch.manual_seed(3)
    terms = [ZBL(ELEMENTS, inner=1.6, outer=2.4), D3Dispersion(ELEMENTS, cutoff=9.0, cn_cutoff=7.0)]
    descriptors = DescriptorSet.from_config(default_config(ELEMENTS), ELEMENTS)
    model = Potential(descriptors, ELEMENTS, hidden=[16, 16], physics=terms).double()
    model.set_energy_reference(torch.tensor([-4.4, -3.7]), 0.5)
    return model


def test_lammps_overlay_matches_ase(tmp_path, monkeypatch):
    model = overlay_model()
    assert lammps_overlay_terms(model) == ["zbl", "d3"]
    path = export_model(model, tmp_path / "model.pt", model_metadata(model, lammps_overlay=["zbl", "d3"]))
    meta = read_metadata(path)
    assert meta["long_range"] is False  # D3 is LAMMPS' now: pair_style mlip sees local + ghost atoms
    assert meta["cutoff"] == model.cutoff < 9.0
    commands = [line for line in lammps_file(path).read_text().splitlines() if not line.startswith("#")]
    assert commands == meta["lammps_commands"]
    assert commands[0] == "pair_style hybrid/overlay mlip model.pt zbl 1.6 2.4 dispersion/d3 bj pbe 9.0 7.0"

    atoms = cuni_cell()
    atoms.calc = MLIPCalculator(path)
    ref = {"energy": atoms.get_potential_energy(), "atomic_energies": atoms.get_potential_energies(),
           "forces": atoms.get_forces(), "virial": -atoms.get_stress(voigt=False) * atoms.get_volume()}
    zbl_pairs = atoms.get_all_distances(mic=True)[np.triu_indices(len(atoms), 1)] < 2.4
    assert zbl_pairs.any()

    monkeypatch.chdir(tmp_path)  # the model file name in the lines is relative
    threads = torch.get_num_threads()  # the plugin sets libtorch's (shared) thread count
    types = np.array([ELEMENTS.index(s) + 1 for s in atoms.get_chemical_symbols()])
    got = lammps_reference(atoms.cell.array, atoms.positions, types, len(ELEMENTS),
                           [f"plugin load {ensure_built()}", *commands])
    torch.set_num_threads(threads)
    assert got["energy"] == pytest.approx(ref["energy"], rel=1e-6, abs=0)
    for key in ("atomic_energies", "forces", "virial"):
        scale = np.abs(ref[key]).max()
        np.testing.assert_allclose(got[key], ref[key], rtol=0, atol=1e-6 * scale, err_msg=key)


def test_overlay_model_without_the_overlay_is_a_lammps_error(tmp_path):
    """A model that leaves D3 and ZBL to LAMMPS, run with plain ``pair_style mlip``, would lack
    them: LAMMPS stops and names the missing pair style and the file with the lines."""
    from mlip.lammps import load_lammps

    model = overlay_model()
    path = export_model(model, tmp_path / "model.pt", model_metadata(model, lammps_overlay=["zbl", "d3"]))
    threads = torch.get_num_threads()
    lmp = load_lammps().lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    try:
        with pytest.raises(Exception) as info:  # the lammps module raises a bare Exception
            lmp.commands_string(f"""
plugin load {ensure_built()}
units metal
lattice fcc 3.58
region box block 0 2 0 2 0 2
create_box 2 box
create_atoms 1 box
mass * 60.0
pair_style mlip {path}
pair_coeff * * Ni Cu
run 0
""")
    finally:
        lmp.close()
        torch.set_num_threads(threads)
    assert (f"model '{path}' leaves its zbl term to LAMMPS pair_style zbl, which is not defined: use the "
            f"lines of '{path}.lammps'") in str(info.value)
