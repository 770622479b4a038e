"""The LAMMPS Coulomb path: a charge model with Ewald, domain-decomposed in real LAMMPS, against
the same model through mlip's ASE calculator (which evaluates the whole periodic system itself,
torch-pme's exact Ewald sum).

``pair_style mlip`` predicts the charges, LAMMPS' ``coul/long`` + ``kspace_style pppm`` (or
``ewald``) compute their electrostatics, and ``fix mlip/coulomb`` feeds φ_i = ∂E/∂q_i back to the
model (the lines come from ``model.pt.lammps``, written by ``mlip export``). Cases: rock-salt
NaCl, orthogonal and triclinic, newton on and off, PPPM and Ewald at accuracy 1e-8, on 1 rank (in
process) and 2 ranks (``mpirun -np 2 lmp``); an uncharged start (the orthogonal cell's data file);
a charged cell (``total_charge``); per-atom virials
(``compute stress/atom``; LAMMPS' kspace styles have no centroid/stress/atom);
20 NVE steps; the LAMMPS errors when a needed line is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.geometry import find_mic
from lammps_runs import run_one_rank, run_two_ranks

from fingerprints import DescriptorSet, default_config
from mlip import MLIPCalculator
from mlip.export import export_model, lammps_file, model_metadata, read_metadata
from mlip.lammps import load_lammps
from mlip.lammps.build import ensure_built
from mlip.model import Potential
from mlip.physics.ewald import Ewald
from mlip.physics.zbl import ZBL

ELEMENTS = ["Na", "Cl"]  # LAMMPS types 1, 2
MASSES = {"Na": 22.99, "Cl": 35.45}
NKTV2P_METAL = 1.6021765e6  # bar per eV/Å^3
RTOL = 1e-6  # the bound; coul/long's polynomial erfc (|error| < 1.5e-7) is the floor
MD_STEPS = 20


@dataclass(frozen=True)
class Case:
    structure: str  # "ortho", "tri" or "charged" (triclinic, one Cl removed: total charge +1)
    newton: bool
    kspace: str  # "pppm" (the exported line) or "ewald"

    @property
    def name(self) -> str:
        return f"{self.structure}_newton{'on' if self.newton else 'off'}_{self.kspace}"


CASES = [Case(s, nw, "pppm") for s in ("ortho", "tri") for nw in (True, False)]
CASES += [Case("tri", True, "ewald"), Case("charged", False, "pppm")]


def rocksalt(structure: str) -> Atoms:
    """64 (charged: 63) rattled NaCl atoms, in LAMMPS' lower-triangular cell form."""
    rng = np.random.default_rng(7)
    a = 5.64
    fcc = np.array([[0, 0, 0], [.5, .5, 0], [.5, 0, .5], [0, .5, .5]])
    grid = np.stack(np.meshgrid(*[np.arange(2)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    na = ((grid + fcc[None]) / 2).reshape(-1, 3)
    cl = (((grid + fcc[None] + [.5, 0, 0]) / 2) % 1).reshape(-1, 3)
    tilt = 0.0 if structure == "ortho" else 0.6
    cell = np.array([[2 * a, 0, 0], [tilt, 2 * a, 0], [-0.4 * tilt, 0.7 * tilt, 2 * a]])
    frac = np.vstack([na, cl])
    symbols = ["Na"] * 32 + ["Cl"] * 32
    if structure == "charged":
        frac, symbols = frac[:-1], symbols[:-1]
    atoms = Atoms(symbols, positions=frac @ cell + rng.normal(0, 0.15, (len(frac), 3)), cell=cell, pbc=True)
    atoms.wrap()
    if structure == "charged":
        atoms.info["charge"] = 1.0
    return atoms


def charge_model() -> Potential:
    """An untrained NaCl model with network charges that vary strongly with the environment
    (so that the forces through the charges matter), exact Ewald at 1e-8 and ZBL (in the model;
    its LAMMPS lines keep it there)."""
    torch.manual_seed(0)
    descriptors = DescriptorSet.from_config(default_config(ELEMENTS), ELEMENTS)
    physics = [Ewald(1e-8, mode="ewald"), ZBL(ELEMENTS, 1.6, 2.4)]
    model = Potential(descriptors, ELEMENTS, hidden=[16, 16], physics=physics, charges="network").double()
    model.set_energy_reference(torch.tensor([-1.3, -2.1]), 0.5)
    with torch.no_grad():
        for net in model.networks.nets:
            net[-1].weight[1].mul_(300.0)
    return model


def write_data(path: Path, atoms: Atoms, start: float) -> None:
    """LAMMPS data file, atom_style charge, with charges ±``start`` (kspace chooses its mesh from
    them; pair_style mlip replaces them on every step; all 0: pair_coeff starts them from the
    model's typical charges)."""
    cell = atoms.cell.array
    types = [ELEMENTS.index(s) + 1 for s in atoms.get_chemical_symbols()]
    lines = ["mlip coulomb test", "", f"{len(atoms)} atoms", "2 atom types", "",
             f"0 {cell[0, 0]:.17g} xlo xhi", f"0 {cell[1, 1]:.17g} ylo yhi", f"0 {cell[2, 2]:.17g} zlo zhi",
             f"{cell[1, 0]:.17g} {cell[2, 0]:.17g} {cell[2, 1]:.17g} xy xz yz", "", "Masses", "",
             *[f"{t + 1} {MASSES[e]}" for t, e in enumerate(ELEMENTS)], "", "Atoms # charge", "",
             *[f"{k + 1} {t} {start if t == 1 else -start} {x:.17g} {y:.17g} {z:.17g}"
               for k, (t, (x, y, z)) in enumerate(zip(types, atoms.positions, strict=True))]]
    path.write_text("\n".join(lines) + "\n")


def model_lines(workdir: Path, case: Case) -> list[str]:
    """The exported LAMMPS lines, with the model's path, the case's kspace style and total charge."""
    lines = [line for line in lammps_file(workdir / "model.pt").read_text().splitlines()
             if line and not line.startswith("#")]
    out = []
    for line in lines:
        if line.startswith("pair_style"):
            line = line.replace("mlip model.pt", f"mlip {workdir / 'model.pt'}" + (
                " total_charge 1" if case.structure == "charged" else ""))
        if line.startswith("kspace_style") and case.kspace == "ewald":
            line = line.replace("pppm", "ewald")
        out.append(line)
    return out


def case_input(workdir: Path, case: Case, outdir: Path) -> str:
    out = outdir / case.name
    return "\n".join([
        "clear", "units metal", "atom_style charge", "boundary p p p",
        f"newton {'on' if case.newton else 'off'}",
        f"read_data {workdir / case.structure}.data",
        *model_lines(workdir, case),
        "compute pe all pe/atom",
        "compute p all pressure NULL virial",
        "compute s all stress/atom NULL virial",
        f"dump d all custom 1 {out}.dump id fx fy fz c_pe q c_s[*]",
        "dump_modify d sort id format float %.17g",
        "thermo_style custom step pe c_p[*]",
        "run 0",
        f'print "$(pe:%.17g) $(vol:%.17g) $(c_p[1]:%.17g) $(c_p[2]:%.17g) $(c_p[3]:%.17g) '
        f'$(c_p[4]:%.17g) $(c_p[5]:%.17g) $(c_p[6]:%.17g)" file {out}.txt screen no',
        "undump d", ""])


def md_input(workdir: Path, outdir: Path, steps: int) -> str:
    """NVE steps from 300 K; the last step's positions, forces and energy (computed in an MD
    step through fix mlip/coulomb's pre_reverse, not in the set-up)."""
    case = Case("tri", True, "pppm")
    return "\n".join([
        "clear", "units metal", "atom_style charge", "newton on",
        f"read_data {workdir / 'tri'}.data", *model_lines(workdir, case),
        "velocity all create 300 5 mom yes rot yes dist gaussian",
        "timestep 0.0005", "fix 1 all nve",
        f"dump d all custom {steps} {outdir}/md.dump id x y z fx fy fz",
        "dump_modify d sort id format float %.17g",
        f'fix p all print {steps} "$(pe:%.17g)" file {outdir}/md.txt screen no',
        f"run {steps}", "undump d", ""])


def read_case(outdir: Path, case: Case) -> dict[str, np.ndarray]:
    values = np.loadtxt(outdir / f"{case.name}.txt")
    w = values[2:] * values[1] / NKTV2P_METAL
    dump = np.loadtxt(outdir / f"{case.name}.dump", skiprows=9)
    return {"energy": values[0], "forces": dump[:, 1:4], "atomic_energies": dump[:, 4], "charges": dump[:, 5],
            "virial": np.array([[w[0], w[3], w[4]], [w[3], w[1], w[5]], [w[4], w[5], w[2]]]),
            "stress_atom": -dump[:, 6:12] / NKTV2P_METAL}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lammps_coulomb")
    model = charge_model()
    export_model(model, path / "model.pt", model_metadata(model))
    for structure, start in (("ortho", 0.0), ("tri", 1.0), ("charged", 1.0)):
        write_data(path / f"{structure}.data", rocksalt(structure), start)
    return path


@pytest.fixture(scope="module")
def reference(workdir) -> dict[str, dict]:
    refs = {}
    for structure in ("ortho", "tri", "charged"):
        atoms = rocksalt(structure)
        atoms.calc = MLIPCalculator(workdir / "model.pt")
        refs[structure] = {"energy": atoms.get_potential_energy(),
                           "atomic_energies": atoms.get_potential_energies(), "forces": atoms.get_forces(),
                           "charges": atoms.get_charges(),
                           "virial": -atoms.get_stress(voigt=False) * atoms.get_volume()}
    return refs


@pytest.fixture(scope="module")
def one_rank(workdir) -> Path:
    out = workdir / "np1"
    out.mkdir()
    run_one_rank(case_input(workdir, case, out) for case in CASES)
    return out


@pytest.fixture(scope="module")
def two_ranks(workdir) -> Path:
    out = workdir / "np2"
    out.mkdir()
    run_two_ranks(out, "".join(case_input(workdir, c, out) for c in CASES) + md_input(workdir, out, MD_STEPS))
    return out


def test_export_writes_the_coulomb_lines(workdir):
    meta = read_metadata(workdir / "model.pt")
    coulomb = meta["lammps_coulomb"]
    assert (coulomb["cutoff"], coulomb["accuracy"]) == (5.0, 1e-8)
    assert len(coulomb["typical_charges"]) == 2 and coulomb["typical_charges"][0] > 0.5
    lines = model_lines(workdir, CASES[0])
    assert lines[0] == f"pair_style hybrid/overlay mlip {workdir / 'model.pt'} coul/long 5"
    assert lines[1:] == ["pair_coeff * * mlip Na Cl", "pair_coeff * * coul/long",
                         "pair_modify pair coul/long table 0", "kspace_style pppm 1e-08"]


@pytest.mark.parametrize("ranks", ["one_rank", "two_ranks"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_lammps_matches_ase(case, ranks, request, reference):
    """Energy, per-atom energies, forces, charges and virial equal the ASE calculator's to 1e-6
    relative (the virial of a charged cell differs by LAMMPS' choice, see mlip.physics.ewald)."""
    got = read_case(request.getfixturevalue(ranks), case)
    ref = reference[case.structure]
    assert got["energy"] == pytest.approx(ref["energy"], rel=RTOL, abs=0)
    keys = ["atomic_energies", "forces", "charges"] + ([] if case.structure == "charged" else ["virial"])
    for key in keys:
        scale = np.abs(ref[key]).max()
        np.testing.assert_allclose(got[key], ref[key], rtol=0, atol=RTOL * scale, err_msg=key)
    assert np.ptp(ref["charges"][:32]) > 0.05  # the charges depend on the environment: φ feedback matters


@pytest.mark.parametrize("ranks", ["one_rank", "two_ranks"])
@pytest.mark.parametrize("case", [c for c in CASES if c.structure != "charged"], ids=lambda c: c.name)
def test_peratom_virials_sum_to_the_global_virial(case, ranks, request):
    """compute stress/atom (model, coul/long, kspace and fix mlip/coulomb together) sums to the
    global virial. (LAMMPS' kspace styles have no centroid/stress/atom.)"""
    got = read_case(request.getfixturevalue(ranks), case)
    w = got["virial"]
    tol = 1e-10 * np.abs(w).max()
    np.testing.assert_allclose(got["stress_atom"].sum(axis=0), w[[0, 1, 2, 0, 0, 1], [0, 1, 2, 1, 2, 2]],
                               rtol=0, atol=tol)


def test_md_steps_match_ase(two_ranks, workdir):
    """After 20 NVE steps on 2 ranks the atoms have moved and the charges with them; the forces
    and energy LAMMPS computed on that step equal the ASE calculator's at those positions."""
    frame = np.loadtxt(two_ranks / "md.dump", skiprows=2 * 9 + 64)  # the second frame (step 20)
    atoms = rocksalt("tri")
    moved, _ = find_mic(frame[:, 1:4] - atoms.positions, atoms.cell, pbc=True)
    assert np.linalg.norm(moved, axis=1).max() > 1e-3
    atoms.positions = frame[:, 1:4]
    atoms.calc = MLIPCalculator(workdir / "model.pt")
    forces = atoms.get_forces()
    np.testing.assert_allclose(frame[:, 4:7], forces, rtol=0, atol=RTOL * np.abs(forces).max())
    energy = np.loadtxt(two_ranks / "md.txt")[-1]
    assert energy == pytest.approx(atoms.get_potential_energy(), rel=RTOL, abs=0)


@pytest.mark.parametrize("missing, message", [
    ("kspace", "needs a kspace_style for the long-range electrostatics of its charges"),
    ("coul/long", "needs pair_style coul/long next to mlip"),
    ("atom_style", "needs 'atom_style charge' (or full)"),
])
def test_missing_lines_are_lammps_errors(workdir, missing, message):
    """Without LAMMPS' electrostatics the results would silently be short-range: LAMMPS stops and
    names the line."""
    lines = model_lines(workdir, CASES[0])
    if missing in ("kspace", "atom_style"):  # (kspace itself would object to atom_style atomic first)
        lines = [line for line in lines if not line.startswith("kspace")]
    if missing == "coul/long":
        lines = [f"pair_style mlip {workdir / 'model.pt'}", "pair_coeff * * Na Cl"]
    style = "atomic" if missing == "atom_style" else "charge"
    threads = torch.get_num_threads()
    lmp = load_lammps().lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    try:
        with pytest.raises(Exception) as info:  # the lammps module raises a bare Exception
            lmp.commands_string("\n".join([
                f"plugin load {ensure_built()}", "units metal", f"atom_style {style}",
                "lattice sc 2.82", "region box block 0 4 0 4 0 4", "create_box 2 box", "create_atoms 1 box",
                "set type 1 type/fraction 2 0.5 3",
                *(["set type 1 charge 1.0", "set type 2 charge -1.0"] if style == "charge" else []),
                "mass * 30.0", *lines, "run 0"]))
    finally:
        lmp.close()
        torch.set_num_threads(threads)
    assert message in str(info.value)
