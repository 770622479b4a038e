"""Committee force deviation in real LAMMPS against mlip's ASE calculator.

``fix dev all pair 1 mlip deviation 1`` makes ``pair_style mlip`` compute each local atom's force
deviation d_i = sqrt(mean_k |F_i^k − F̄_i|²) (the members' forces on ghost atoms reverse-communicated
to their owners first); ``dump ... f_dev`` and ``compute reduce max f_dev`` read it. ``pair_style
mlip ... deviation_file F every N`` writes step, max, min and mean d_i. On 1 rank (in process) and
2 ranks (``mpirun -np 2 lmp``), newton on and off; a single model is a LAMMPS error.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk
from lammps_runs import run_one_rank, run_two_ranks

from fingerprints import DescriptorSet, default_config
from mlip import MLIPCalculator
from mlip.export import export_model, model_metadata
from mlip.lammps import load_lammps
from mlip.lammps.build import ensure_built
from mlip.model import Potential

ELEMENTS = ["Ni", "Cu"]  # LAMMPS types 1, 2


def committee_model(members: int) -> Potential:
    torch.manual_seed(1)
    descriptors = DescriptorSet.from_config(default_config(ELEMENTS), ELEMENTS)
    model = Potential(descriptors, ELEMENTS, hidden=[12, 12], committee=members).double()
    model.set_energy_reference(torch.tensor([-4.4, -3.7]), 1.5)
    return model


def structure():
    """108 rattled Ni/Cu fcc atoms in an orthogonal box (several ghost images per atom on 2 ranks)."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(3)
    rng = np.random.default_rng(2)
    atoms.symbols[rng.random(len(atoms)) < 0.4] = "Ni"
    atoms.positions += rng.normal(0.0, 0.12, atoms.positions.shape)
    atoms.wrap()
    return atoms


def write_data(path: Path, atoms) -> None:
    lx, ly, lz = (float(v) for v in atoms.cell.lengths())
    types = [ELEMENTS.index(s) + 1 for s in atoms.get_chemical_symbols()]
    lines = ["committee test", "", f"{len(atoms)} atoms", "2 atom types", "", f"0 {lx!r} xlo xhi",
             f"0 {ly!r} ylo yhi", f"0 {lz!r} zlo zhi", "", "Masses", "", "1 58.69", "2 63.55", "",
             "Atoms # atomic", "",
             *[f"{k + 1} {t} {x:.17g} {y:.17g} {z:.17g}"
               for k, (t, (x, y, z)) in enumerate(zip(types, atoms.positions, strict=True))]]
    path.write_text("\n".join(lines) + "\n")


def case_input(workdir: Path, out: Path, newton: bool) -> str:
    tag = f"newton{'on' if newton else 'off'}"
    return "\n".join([
        "clear", "units metal", "atom_style atomic", f"newton {'on' if newton else 'off'}",
        f"read_data {workdir / 'cell.data'}",
        f"pair_style mlip {workdir / 'committee.pt'} deviation_file {out / tag}.devi every 2",
        "pair_coeff * * Ni Cu",
        "fix dev all pair 1 mlip deviation 1",
        "compute maxdev all reduce max f_dev",
        "thermo_style custom step pe c_maxdev",
        f"dump d all custom 1 {out / tag}.dump id f_dev fx fy fz",
        "dump_modify d sort id format float %.17g",
        "run 0",
        f'print "$(c_maxdev:%.17g)" file {out / tag}.max screen no',
        "undump d",
        "velocity all create 600 3 mom yes", "fix 1 all nve", "timestep 0.001", "run 4", ""])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lammps_committee")
    model = committee_model(3)
    export_model(copy.deepcopy(model), path / "committee.pt", model_metadata(model))
    single = committee_model(1)
    export_model(single, path / "single.pt", model_metadata(single))
    write_data(path / "cell.data", structure())
    return path


@pytest.fixture(scope="module")
def reference(workdir) -> dict[str, np.ndarray]:
    atoms = structure()
    atoms.calc = MLIPCalculator(workdir / "committee.pt")
    deviation = atoms.calc.get_property("force_deviation", atoms)
    return {"force_deviation": deviation, "forces": atoms.get_forces()}


@pytest.fixture(scope="module")
def one_rank(workdir) -> Path:
    out = workdir / "np1"
    out.mkdir()
    run_one_rank(case_input(workdir, out, newton) for newton in (True, False))
    return out


@pytest.fixture(scope="module")
def two_ranks(workdir) -> Path:
    out = workdir / "np2"
    out.mkdir()
    run_two_ranks(out, case_input(workdir, out, True) + case_input(workdir, out, False))
    return out


@pytest.mark.parametrize("newton", [True, False], ids=["newtonon", "newtonoff"])
@pytest.mark.parametrize("ranks", ["one_rank", "two_ranks"])
def test_force_deviation_matches_ase(ranks, newton, request, reference):
    """fix pair's per-atom deviation and its maximum (compute reduce) equal the ASE calculator's
    force_deviation; the forces are the members' mean."""
    out = request.getfixturevalue(ranks)
    tag = f"newton{'on' if newton else 'off'}"
    dump = np.loadtxt(out / f"{tag}.dump", skiprows=9)
    ref = reference["force_deviation"]
    assert ref.min() > 1e-4  # the members differ
    np.testing.assert_allclose(dump[:, 1], ref, rtol=1e-9, atol=0)
    np.testing.assert_allclose(dump[:, 2:5], reference["forces"], rtol=0, atol=1e-9)
    assert float(np.loadtxt(out / f"{tag}.max")) == pytest.approx(ref.max(), rel=1e-9)


@pytest.mark.parametrize("ranks", ["one_rank", "two_ranks"])
def test_deviation_file(ranks, request, reference):
    """deviation_file ... every 2: step, max, min, mean of d_i on steps 0, 2 and 4 (set-up of the
    MD run included); step 0 of ``run 0`` equals ASE's."""
    out = request.getfixturevalue(ranks)
    rows = np.loadtxt(out / "newtonon.devi", ndmin=2)
    np.testing.assert_array_equal(rows[:, 0], [0, 0, 2, 4])  # run 0, then run 4 from step 0
    ref = reference["force_deviation"]
    np.testing.assert_allclose(rows[0, 1:], [ref.max(), ref.min(), ref.mean()], rtol=1e-9, atol=0)
    assert (rows[:, 1] >= rows[:, 3]).all() and (rows[:, 3] >= rows[:, 2]).all()
    assert (out / "newtonon.devi").read_text().startswith("#       step         max_devi_f")


@pytest.mark.parametrize("request_line, message", [
    ("fix dev all pair 1 mlip deviation 1",
     "is a single model and has no force deviation: train a committee"),
    ("", "deviation_file needs a committee model"),
])
def test_a_single_model_has_no_deviation(workdir, request_line, message):
    style = f"pair_style mlip {workdir / 'single.pt'}" + ("" if request_line else " deviation_file x.devi")
    threads = torch.get_num_threads()
    lmp = load_lammps().lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    try:
        with pytest.raises(Exception) as info:  # the lammps module raises a bare Exception
            lmp.commands_string("\n".join([
                f"plugin load {ensure_built()}", "units metal", "atom_style atomic",
                f"read_data {workdir / 'cell.data'}", style, "pair_coeff * * Ni Cu", request_line, "run 0"]))
    finally:
        lmp.close()
        torch.set_num_threads(threads)
    assert message in str(info.value)
