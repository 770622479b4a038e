"""pair_style mlip in real LAMMPS against the same model evaluated directly in Python.

The Python reference evaluates the toy model (tests/lammps_toy_models.py) on the whole
periodic system with ASE's neighbour list (image shifts, no ghosts); LAMMPS evaluates it
through the plugin with ghosts, domain decomposition (2 ranks) or the gathered long-range
path. Cases: {short-range, long-range} x {orthogonal Cu, triclinic Cu/Ni} x {newton on, off},
on 1 rank (the Python ``lammps`` module, in-process) and 2 ranks (``mpirun -np 2 lmp``,
plugin autoloaded from LAMMPS_PLUGIN_PATH). Short-range cases also dump compute stress/atom and
centroid/stress/atom, checked against their sums and the model's edge forces.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.md.verlet import VelocityVerlet
from lammps_toy_models import edge_virials, evaluate_periodic, save_model

from mlip.lammps import load_lammps
from mlip.lammps.build import ensure_built

NKTV2P_METAL = 1.6021765e6  # LAMMPS metal units: bar per (eV/Å^3)
KB_EV = 8.617343e-5  # Boltzmann constant, eV/K (LAMMPS metal)
SQRT_EV_PER_AMU_IN_A_PER_PS = 98.22694788  # 1 sqrt(eV/amu) in Å/ps
TYPE_ELEMENTS = ["Cu", "Ni"]  # LAMMPS type 1 = Cu, type 2 = Ni
MASSES = {"Cu": 63.546, "Ni": 58.6934}
BIN = Path(sys.executable).parent


def ortho_cu() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((3, 3, 3))
    atoms.positions += np.random.default_rng(1).normal(0.0, 0.08, atoms.positions.shape)
    atoms.wrap()
    return atoms


def triclinic_cuni() -> Atoms:
    """64 atoms on a perturbed grid in a LAMMPS-style (lower-triangular) triclinic cell."""
    rng = np.random.default_rng(2)
    cell = np.array([[9.6, 0.0, 0.0], [2.2, 9.1, 0.0], [-1.4, 1.9, 9.4]])
    grid = np.stack(np.meshgrid(*[np.arange(4) / 4.0] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    frac = grid + rng.normal(0.0, 0.02, grid.shape)
    symbols = rng.choice(["Cu", "Ni"], size=len(frac))
    atoms = Atoms(symbols=list(symbols), scaled_positions=frac, cell=cell, pbc=True)
    atoms.wrap()
    return atoms


@dataclass(frozen=True)
class Case:
    structure: str  # "ortho_cu" or "tri_cuni"
    model: str  # "toy_short", "toy_long", "real_short" (mlip Potential + ZBL)
    newton: bool
    chunk: int = 0  # pair_style mlip ... chunk N (local atoms per model call); 0: the default

    @property
    def name(self) -> str:
        return f"{self.structure}_{self.model}_newton{'on' if self.newton else 'off'}" + (
            f"_chunk{self.chunk}" if self.chunk else "")

    def pair_style(self, workdir: Path) -> str:
        return f"pair_style mlip {self.model_file(workdir)}" + (f" chunk {self.chunk}" if self.chunk else "")

    def model_file(self, workdir: Path) -> Path:
        return workdir / f"{self.structure}_{self.model}.pt"

    @property
    def short_range(self) -> bool:
        return self.model in ("toy_short", "real_short")


TOY_MODELS = ("toy_short", "toy_long")
# short-range models with newton off also run in chunks of 20 local atoms (several per rank)
CASES = [Case(s, m, nw, 20 if (m, nw) == ("toy_short", False) else 0)
         for s in ("ortho_cu", "tri_cuni") for m in TOY_MODELS for nw in (True, False)]
CASES += [Case("tri_cuni", "real_short", True, 16)]  # charge models: tests/test_lammps_coulomb.py
NVE_CASES = [Case("tri_cuni", "toy_long", True), Case("ortho_cu", "toy_short", False, 20)]
STRUCTURES = {"ortho_cu": ortho_cu, "tri_cuni": triclinic_cuni}


def export_real_model(path: Path, elements: list[str]) -> None:
    """An untrained mlip Potential (default descriptors, ZBL) exported by mlip.export."""
    from fingerprints import DescriptorSet
    from fingerprints.descriptor_set import default_config
    from mlip.export import export_model, model_metadata
    from mlip.model import Potential
    from mlip.physics.zbl import ZBL

    torch.manual_seed(0)
    descriptors = DescriptorSet.from_config(default_config(elements), elements)
    model = Potential(descriptors, elements, hidden=[16, 16], physics=[ZBL(elements, 1.0, 2.0)]).double()
    model.set_energy_reference(torch.linspace(-4.0, -3.5, len(elements), dtype=torch.float64), 0.7)
    export_model(model, path, model_metadata(model))


def calculator_reference(model: Path, atoms: Atoms) -> dict[str, np.ndarray]:
    """mlip.MLIPCalculator's energy, per-atom energies, forces and virial W = -stress * volume."""
    from mlip import MLIPCalculator

    atoms = atoms.copy()
    atoms.calc = MLIPCalculator(model)
    return {
        "energy": atoms.get_potential_energy(),
        "atomic_energies": atoms.get_potential_energies(),
        "forces": atoms.get_forces(),
        "virial": -atoms.get_stress(voigt=False) * atoms.get_volume(),
    }


def model_elements(atoms: Atoms) -> list[str]:
    """The model's element list for a structure: its elements sorted by atomic number."""
    return sorted(set(atoms.get_chemical_symbols()), key=lambda s: Atoms(s).numbers[0])


def initial_velocities(atoms: Atoms, temperature: float = 600.0) -> np.ndarray:
    """Maxwell-Boltzmann velocities (n, 3) in Å/ps (LAMMPS metal), zero total momentum, seeded."""
    masses = np.array([MASSES[s] for s in atoms.get_chemical_symbols()])
    sigma = np.sqrt(KB_EV * temperature / masses) * SQRT_EV_PER_AMU_IN_A_PER_PS
    v = np.random.default_rng(3).normal(size=(len(atoms), 3)) * sigma[:, None]
    return v - (masses[:, None] * v).sum(axis=0) / masses.sum()


def write_data(path: Path, atoms: Atoms) -> None:
    """LAMMPS data file (atom_style atomic) for a cell already in LAMMPS' lower-triangular form,
    with the velocities of :func:`initial_velocities`."""
    cell = atoms.cell.array
    assert abs(cell[0, 1]) + abs(cell[0, 2]) + abs(cell[1, 2]) == 0.0
    types = [TYPE_ELEMENTS.index(s) + 1 for s in atoms.get_chemical_symbols()]
    pos = atoms.positions
    ntypes = max(types)
    lines = [
        "mlip plugin test",
        "",
        f"{len(atoms)} atoms",
        f"{ntypes} atom types",
        "",
        f"0 {cell[0, 0]:.17g} xlo xhi",
        f"0 {cell[1, 1]:.17g} ylo yhi",
        f"0 {cell[2, 2]:.17g} zlo zhi",
        f"{cell[1, 0]:.17g} {cell[2, 0]:.17g} {cell[2, 1]:.17g} xy xz yz",
        "",
        "Masses",
        "",
        *[f"{t + 1} {MASSES[TYPE_ELEMENTS[t]]}" for t in range(ntypes)],
        "",
        "Atoms # atomic",
        "",
        *[f"{k + 1} {types[k]} {x:.17g} {y:.17g} {z:.17g}" for k, (x, y, z) in enumerate(pos)],
        "",
        "Velocities",
        "",
        *[f"{k + 1} {x:.17g} {y:.17g} {z:.17g}" for k, (x, y, z) in enumerate(initial_velocities(atoms))],
    ]
    path.write_text("\n".join(lines) + "\n")


def peratom_virial_input(out: Path) -> str:
    """compute stress/atom and centroid/stress/atom (virial only) dumped with %.17g to
    ``out``.vdump: id, 6 stress/atom then 9 centroid/stress/atom columns (bar Å^3)."""
    return f"""
compute s all stress/atom NULL virial
compute cs all centroid/stress/atom NULL virial
dump v all custom 1 {out}.vdump id c_s[*] c_cs[*]
dump_modify v sort id format float %.17g
"""


def case_input(case: Case, workdir: Path, outdir: Path) -> str:
    """LAMMPS commands for one case: run 0, dump forces and pe/atom, print energy, pressure, volume;
    short-range models also dump per-atom virials."""
    ntypes = len(set(STRUCTURES[case.structure]().get_chemical_symbols()))
    out = outdir / case.name
    return f"""
clear
units metal
atom_style atomic
boundary p p p
newton {'on' if case.newton else 'off'}
read_data {workdir / case.structure}.data
{case.pair_style(workdir)}
pair_coeff * * {' '.join(TYPE_ELEMENTS[:ntypes])}
compute pe all pe/atom
compute p all pressure NULL virial
dump d all custom 1 {out}.dump id fx fy fz c_pe
dump_modify d sort id format float %.17g
{peratom_virial_input(out) if case.short_range else ""}
thermo_style custom step pe c_p[*]
run 0
print "$(pe:%.17g) $(vol:%.17g) $(c_p[1]:%.17g) $(c_p[2]:%.17g) $(c_p[3]:%.17g) \
$(c_p[4]:%.17g) $(c_p[5]:%.17g) $(c_p[6]:%.17g)" file {out}.txt screen no
"""


def nve_input(case: Case, workdir: Path, outdir: Path, steps: int) -> str:
    """An NVE run from the data file's velocities (600 K), 1 fs steps, printing step, pe and
    etotal every 5 steps."""
    ntypes = len(set(STRUCTURES[case.structure]().get_chemical_symbols()))
    return f"""
clear
units metal
atom_style atomic
newton {'on' if case.newton else 'off'}
read_data {workdir / case.structure}.data
{case.pair_style(workdir)}
pair_coeff * * {' '.join(TYPE_ELEMENTS[:ntypes])}
timestep 0.001
fix 1 all nve
fix p all print 5 "$(step) $(pe:%.17g) $(etotal:%.17g)" file {outdir / case.name}.nve screen no
run {steps}
"""


def read_case(workdir: Path, case: Case) -> dict[str, np.ndarray | float]:
    """Energy (eV), per-atom energies (eV), forces (eV/Å) and virial (3,3) eV from a case's files."""
    values = np.loadtxt(workdir / f"{case.name}.txt")
    pe, vol, p = values[0], values[1], values[2:]
    w = p * vol / NKTV2P_METAL  # LAMMPS virial = P V / nktv2p, order xx yy zz xy xz yz
    virial = np.array([[w[0], w[3], w[4]], [w[3], w[1], w[5]], [w[4], w[5], w[2]]])
    dump = np.loadtxt(workdir / f"{case.name}.dump", skiprows=9)
    return {"energy": pe, "forces": dump[:, 1:4], "atomic_energies": dump[:, 4], "virial": virial}


def read_peratom_virials(workdir: Path, case: Case) -> dict[str, np.ndarray]:
    """Per-atom virials W = -S (eV) of a case, S from compute stress/atom (n, 6: xx yy zz xy xz yz)
    and centroid/stress/atom (n, 9: ... yx zx zy) in bar Å^3."""
    dump = np.loadtxt(workdir / f"{case.name}.vdump", skiprows=9)
    return {"stress": -dump[:, 1:7] / NKTV2P_METAL, "centroid": -dump[:, 7:16] / NKTV2P_METAL}


@pytest.fixture(scope="session")
def plugin() -> Path:
    return ensure_built()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, plugin) -> Path:
    """Data files, toy models and Python reference results for every case."""
    path = tmp_path_factory.mktemp("lammps_plugin")
    for name, make in STRUCTURES.items():
        atoms = make()
        write_data(path / f"{name}.data", atoms)
        for kind in TOY_MODELS:
            model = Case(name, kind, True).model_file(path)
            save_model(model, model_elements(atoms), long_range=kind == "toy_long")
    for case in CASES:
        if case.model.startswith("real"):
            atoms = STRUCTURES[case.structure]()
            export_real_model(case.model_file(path), model_elements(atoms))
    return path


@pytest.fixture(scope="module")
def reference(workdir) -> dict[str, dict]:
    """Toy models evaluated in Python on the whole periodic system (ASE neighbour list);
    real models through mlip.MLIPCalculator."""
    refs = {}
    for case in CASES:
        atoms = STRUCTURES[case.structure]()
        if case.model.startswith("toy"):
            ref = evaluate_periodic(case.model_file(workdir), atoms, model_elements(atoms))
        else:
            ref = calculator_reference(case.model_file(workdir), atoms)
        # pair_style mlip spreads energy the model does not assign to atoms evenly over atoms.
        ref["pe_atom"] = ref["atomic_energies"] + (ref["energy"] - ref["atomic_energies"].sum()) / len(atoms)
        refs[case.name] = ref
    return refs


@pytest.fixture(scope="module")
def one_rank(workdir, plugin) -> Path:
    """All cases through the Python ``lammps`` module, in this process, 1 rank."""
    threads = torch.get_num_threads()  # the plugin sets libtorch's (shared) thread count
    lmp = load_lammps().lammps(cmdargs=["-log", "none", "-screen", "none"])
    out = workdir / "np1"
    out.mkdir()
    lmp.command(f"plugin load {plugin}")
    for case in CASES:
        lmp.commands_string(case_input(case, workdir, out))
    lmp.close()
    torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def two_ranks(workdir, plugin) -> Path:
    """All cases plus two NVE runs in one ``mpirun -np 2 lmp`` (plugin autoloaded)."""
    out = workdir / "np2"
    out.mkdir()
    script = "".join(case_input(c, workdir, out) for c in CASES)
    script += "".join(nve_input(c, workdir, out, 200) for c in NVE_CASES)
    (out / "in.all").write_text(script)
    env = dict(os.environ, LAMMPS_PLUGIN_PATH=str(plugin.parent), OMP_NUM_THREADS="1")
    cmd = [str(BIN / "mpirun"), "-np", "2", str(BIN / "lmp"), "-in", "in.all", "-log", "log.lammps"]
    proc = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Loaded 1 plugins from" in proc.stdout or "Loading plugin: mlip" in proc.stdout, proc.stdout[:2000]
    assert "2 by 1 by 1" in proc.stdout or "1 by 2 by 1" in proc.stdout or "1 by 1 by 2" in proc.stdout
    return out



def assert_matches(got: dict, ref: dict, rtol: float = 1e-8) -> None:
    assert got["energy"] == pytest.approx(float(ref["energy"]), rel=rtol, abs=0)
    np.testing.assert_allclose(got["atomic_energies"], ref["pe_atom"], rtol=rtol, atol=0)
    scale_f = np.abs(ref["forces"]).max()
    np.testing.assert_allclose(got["forces"], ref["forces"], rtol=0, atol=rtol * scale_f)
    scale_w = np.abs(ref["virial"]).max()
    np.testing.assert_allclose(got["virial"], ref["virial"], rtol=0, atol=rtol * scale_w)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_one_rank_matches_python(case, one_rank, reference):
    assert_matches(read_case(one_rank, case), reference[case.name])


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_two_ranks_match_python(case, two_ranks, reference):
    assert_matches(read_case(two_ranks, case), reference[case.name])


SHORT_CASES = [c for c in CASES if c.short_range]


@pytest.mark.parametrize("ranks", ["one_rank", "two_ranks"])
@pytest.mark.parametrize("case", SHORT_CASES, ids=lambda c: c.name)
def test_peratom_virials_sum_to_the_global_virial(case, ranks, request):
    """compute stress/atom and centroid/stress/atom summed over atoms give LAMMPS' global virial
    (from the pressure) to 1e-10 relative; the centroid's yx, zx, zy too (the virial is symmetric)."""
    out = request.getfixturevalue(ranks)
    virial = read_case(out, case)["virial"]
    per_atom = read_peratom_virials(out, case)
    rows, cols = [0, 1, 2, 0, 0, 1, 1, 2, 2], [0, 1, 2, 1, 2, 2, 0, 0, 1]  # xx yy zz xy xz yz yx zx zy
    tol = 1e-10 * np.abs(virial).max()
    np.testing.assert_allclose(per_atom["stress"].sum(axis=0), virial[rows[:6], cols[:6]], rtol=0, atol=tol)
    np.testing.assert_allclose(per_atom["centroid"].sum(axis=0), virial[rows, cols], rtol=0, atol=tol)
    assert np.abs(per_atom["stress"]).max() > 1e8 * tol  # per-atom values are not (near) zero


@pytest.mark.parametrize("ranks", ["one_rank", "two_ranks"])
@pytest.mark.parametrize("case", SHORT_CASES, ids=lambda c: c.name)
def test_peratom_virials_match_edge_forces(case, ranks, request, workdir):
    """Per-atom virials equal the Python reference built from the model's edge forces on the whole
    periodic system (lammps_toy_models.edge_virials): half of r_ij (x) F_e to each of i and j
    (stress/atom), all of it to j (centroid/stress/atom)."""
    out = request.getfixturevalue(ranks)
    atoms = STRUCTURES[case.structure]()
    ref = edge_virials(case.model_file(workdir), atoms, model_elements(atoms))
    got = read_peratom_virials(out, case)
    for kind in ("stress", "centroid"):
        tol = 1e-8 * np.abs(ref[kind]).max()
        np.testing.assert_allclose(got[kind], ref[kind], rtol=0, atol=tol, err_msg=kind)
    # centroid/stress/atom is not stress/atom: many-body edge forces are not along r_ij
    assert np.abs(got["centroid"][:, :6] - got["stress"]).max() > 1e-5 * np.abs(ref["stress"]).max()


def test_pressure_sign_matches_finite_differences(one_rank, workdir):
    """LAMMPS' pressure tensor P = W/V with W = -dE/d(strain) by central differences of the
    Python model's energy on strained cells (x -> x (1 + eps))."""
    case = Case("tri_cuni", "toy_short", True)
    atoms = STRUCTURES[case.structure]()
    model = case.model_file(workdir)
    elements = model_elements(atoms)
    h = 1e-5
    w_fd = np.zeros((3, 3))
    for a in range(3):
        for b in range(a, 3):
            energies = []
            for sign in (1.0, -1.0):
                eps = np.zeros((3, 3))
                eps[a, b] = eps[b, a] = sign * h
                strained = atoms.copy()
                strained.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
                energies.append(evaluate_periodic(model, strained, elements)["energy"])
            w_fd[a, b] = w_fd[b, a] = -(energies[0] - energies[1]) / (2 * h) / (1.0 if a == b else 2.0)
    got = read_case(one_rank, case)["virial"]
    np.testing.assert_allclose(got, w_fd, rtol=0, atol=1e-6 * np.abs(w_fd).max())
    assert np.abs(w_fd).max() > 1.0  # the structure is far from stress-free: the check has teeth


@pytest.mark.parametrize("case", NVE_CASES, ids=lambda c: c.name)
def test_nve_conserves_energy(case, two_ranks):
    step, pe, etotal = np.loadtxt(two_ranks / f"{case.name}.nve", unpack=True)
    assert step[-1] == 200
    n_atoms = len(STRUCTURES[case.structure]())
    assert np.ptp(pe) / n_atoms > 5e-3  # atoms moved: potential energy swings by > 5 meV/atom
    assert np.ptp(etotal) / n_atoms < 2e-5  # total energy constant to < 20 µeV/atom


class ToyCalculator(Calculator):
    """ASE calculator evaluating a toy model.pt on the whole periodic system."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, model: Path, elements: list[str]):
        super().__init__()
        self.model, self.elements = model, elements

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        out = evaluate_periodic(self.model, self.atoms, self.elements)
        self.results = {"energy": float(out["energy"]), "forces": out["forces"]}


def test_nve_matches_ase_velocity_verlet(two_ranks, workdir):
    """The same start (positions, velocities), the same model and integrator in ASE: LAMMPS on
    2 ranks follows the same trajectory and conserves energy as well."""
    case = NVE_CASES[1]
    atoms = STRUCTURES[case.structure]()
    atoms.calc = ToyCalculator(case.model_file(workdir), model_elements(atoms))
    atoms.set_velocities(initial_velocities(atoms) / (1000.0 * units.fs))
    dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    ase_pe, ase_etotal = [], []
    for _ in range(41):
        ase_pe.append(atoms.get_potential_energy())
        ase_etotal.append(ase_pe[-1] + atoms.get_kinetic_energy())
        dyn.run(5)
    step, pe, etotal = np.loadtxt(two_ranks / f"{case.name}.nve", unpack=True)
    np.testing.assert_allclose(pe, ase_pe, rtol=0, atol=1e-5)  # eV; measured 3e-7 (unit constants differ)
    assert np.ptp(etotal) <= 1.5 * np.ptp(ase_etotal)
