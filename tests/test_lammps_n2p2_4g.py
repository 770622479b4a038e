"""An imported 4G-HDNNP (n2p2's water model, ``mlip import-n2p2``) in LAMMPS: a long-range model
(its charges are one global solve), so ``pair_style mlip`` runs it in the gathered path (every
rank evaluates the whole system). Energy, per-atom energies, forces and virial equal the ASE
calculator's to 1e-6 relative on 1 rank (in process) and 2 ranks (``mpirun -np 2``), newton on
and off (measured: 3e-15 relative or better)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from lammps_runs import run_one_rank, run_two_ranks

from mlip.calculator import MLIPCalculator
from mlip.interop import n2p2, n2p2_4g
from parsers.runner import read_runner

NKTV2P_METAL = 1.6021765e6  # LAMMPS metal units: bar per (eV/Å³)
ELEMENTS = ["H", "O"]  # LAMMPS types 1, 2
MASSES = {"H": 1.008, "O": 15.999}


def water(shared_data: Path) -> Atoms:
    """The 36-atom water box of the reference (cubic, 7.11 Å)."""
    directory = shared_data / "longrange_4g" / "prediction_reference" / "water-test" / "nnp-predict"
    raw = next(read_runner(directory / "input.data", units="metal"))
    atoms = Atoms(numbers=raw.numbers, positions=raw.positions * n2p2.BOHR_ANGSTROM,
                  cell=raw.cell * n2p2.BOHR_ANGSTROM, pbc=True)
    atoms.wrap()
    return atoms


def write_data(path: Path, atoms: Atoms) -> None:
    cell = atoms.cell.array
    types = [ELEMENTS.index(s) + 1 for s in atoms.get_chemical_symbols()]
    lines = ["water, n2p2 4G reference structure", "", f"{len(atoms)} atoms", "2 atom types", "",
             *[f"0 {cell[d, d]:.17g} {axis}lo {axis}hi" for d, axis in enumerate("xyz")], "", "Masses", "",
             *[f"{t + 1} {MASSES[e]}" for t, e in enumerate(ELEMENTS)], "", "Atoms # atomic", "",
             *[f"{k + 1} {t} {x:.17g} {y:.17g} {z:.17g}"
               for k, (t, (x, y, z)) in enumerate(zip(types, atoms.positions, strict=True))]]
    path.write_text("\n".join(lines) + "\n")


def case_input(workdir: Path, newton: bool, out: Path) -> str:
    name = out / f"newton{'on' if newton else 'off'}"
    return "\n".join([
        "clear", "units metal", "atom_style atomic", "boundary p p p", f"newton {'on' if newton else 'off'}",
        f"read_data {workdir / 'water.data'}",
        f"pair_style mlip {workdir / 'model.pt'}", f"pair_coeff * * {' '.join(ELEMENTS)}",
        "compute pe all pe/atom", "compute p all pressure NULL virial",
        f"dump d all custom 1 {name}.dump id fx fy fz c_pe", "dump_modify d sort id format float %.17g",
        "run 0",
        f'print "$(pe:%.17g) $(vol:%.17g) $(c_p[1]:%.17g) $(c_p[2]:%.17g) $(c_p[3]:%.17g) '
        f'$(c_p[4]:%.17g) $(c_p[5]:%.17g) $(c_p[6]:%.17g)" file {name}.txt screen no',
        "undump d", ""])


def read_case(out: Path, newton: bool) -> dict[str, np.ndarray]:
    name = out / f"newton{'on' if newton else 'off'}"
    values = np.loadtxt(f"{name}.txt")
    w = values[2:] * values[1] / NKTV2P_METAL
    dump = np.loadtxt(f"{name}.dump", skiprows=9)
    return {"energy": values[0], "forces": dump[:, 1:4], "atomic_energies": dump[:, 4],
            "virial": np.array([[w[0], w[3], w[4]], [w[3], w[1], w[5]], [w[4], w[5], w[2]]])}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lammps_4g")


@pytest.fixture
def setup(shared_data, workdir) -> tuple[Path, dict[str, np.ndarray]]:
    """The exported model, the data file and the ASE calculator's results (once per module)."""
    if not (workdir / "model.pt").exists():
        directory = shared_data / "longrange_4g" / "prediction_reference" / "water-test" / "nnp-predict"
        n2p2_4g.export(directory, workdir / "model.pt")
        write_data(workdir / "water.data", water(shared_data))
    atoms = water(shared_data)
    atoms.calc = MLIPCalculator(workdir / "model.pt")
    reference = {"energy": atoms.get_potential_energy(), "atomic_energies": atoms.get_potential_energies(),
                 "forces": atoms.get_forces(), "virial": -atoms.get_stress(voigt=False) * atoms.get_volume()}
    return workdir, reference


@pytest.mark.parametrize("ranks", [1, 2])
def test_lammps_equals_ase(setup, ranks):
    workdir, reference = setup
    out = workdir / f"np{ranks}"
    out.mkdir(exist_ok=True)
    script = "".join(case_input(workdir, newton, out) for newton in (True, False))
    if ranks == 1:
        run_one_rank([script])
    else:
        run_two_ranks(out, script)
    for newton in (True, False):
        got = read_case(out, newton)
        for key, value in reference.items():
            scale = np.abs(value).max()
            assert np.abs(got[key] - value).max() <= 1e-6 * scale, (key, newton, ranks)
