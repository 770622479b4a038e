"""ASE dynamics and relaxations with a model trained on LAMMPS Cu EAM data: NVE energy
conservation, cell relaxation to zero stress, and the other ASE drivers."""

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.filters import FrechetCellFilter
from ase.md.langevin import Langevin
from ase.md.nptberendsen import NPTBerendsen
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS, FIRE

from mlip import MLIPCalculator
from mlip.demo.cu_eam import CU_LATTICE, write_cu_eam_dumps
from mlip.train.config import load_config
from mlip.train.trainer import train

FRAMES = 40
EVERY = 20  # MD steps of 2 fs between frames
SCALES = (1.0, 0.98, 1.02, 1.04)  # lattice scale of each block of 10 frames


def _change_volume(lmp, step: int) -> None:
    """Before each block of 10 frames, rescale the box (atoms remapped) to the next lattice scale."""
    frame = step // EVERY + 1
    if frame % 10 == 0 and frame < FRAMES:
        block = frame // 10
        s = SCALES[block] / SCALES[block - 1]
        lmp.command(f"change_box all x scale {s!r} y scale {s!r} z scale {s!r} remap")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A small model trained on 40 frames of 32-atom Cu EAM MD at four lattice constants."""
    root = tmp_path_factory.mktemp("cu_md")
    write_cu_eam_dumps(root / "data", n_frames=FRAMES, every=EVERY, size=2, temperature=900.0, seed=7,
                       on_frame=_change_volume)
    config = load_config(None, {"data.sources": [str(root / "data")], "data.types": {1: "Cu"},
                                "data.energy_column": "c_pe", "model.hidden": [32, 32], "train.epochs": 3,
                                "train.batch_size": 4, "train.lr": 1e-2, "out": str(root / "run")})
    return train(config)


def cu_crystal(repeat: int = 2, scale: float = 1.0):
    return bulk("Cu", "fcc", a=CU_LATTICE * scale, cubic=True).repeat(repeat)


@pytest.mark.slow
def test_nve_conserves_energy(run_dir):
    """2000 steps of 1 fs at 300 K: |E(t) − E(0)| and the linear drift stay below 1e-4 eV/atom."""
    atoms = cu_crystal()
    atoms.calc = MLIPCalculator(run_dir)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    Stationary(atoms)
    dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    energies, temperatures = [], []

    def record():
        energies.append(atoms.get_total_energy())
        temperatures.append(atoms.get_temperature())

    dyn.attach(record, interval=1)
    dyn.run(2000)
    e = np.array(energies) / len(atoms)
    slope = np.polyfit(np.arange(len(e)), e, 1)[0]
    print(f"NVE: max |E(t)-E(0)|/N = {np.abs(e - e[0]).max():.2e} eV/atom, linear drift over the run "
          f"{slope * 2000:.2e} eV/atom, mean T (2nd half) {np.mean(temperatures[1000:]):.0f} K")
    assert len(e) == 2001
    assert 50 < np.mean(temperatures[1000:]) < 400  # it is a real, stable crystal at ~150 K
    assert np.abs(e - e[0]).max() < 1e-4
    assert abs(slope * 2000) < 1e-4


def test_cell_relaxation_reaches_zero_stress(run_dir):
    """A compressed and sheared fcc cell relaxes (FrechetCellFilter + FIRE) to zero stress."""
    atoms = cu_crystal(1, scale=0.98)
    atoms.set_cell(atoms.cell.array @ np.array([[1, 0.03, 0], [0, 1, -0.02], [0.01, 0, 1]]), scale_atoms=True)
    atoms.calc = MLIPCalculator(run_dir)
    before = np.abs(atoms.get_stress()).max()
    opt = FIRE(FrechetCellFilter(atoms), logfile=None)
    assert opt.run(fmax=1e-4, steps=1000)
    stress = atoms.get_stress()
    assert before > 1e-2
    assert np.abs(stress).max() < 1e-4  # eV/Å³
    a, b, c, alpha, beta, gamma = atoms.cell.cellpar()
    print(f"relaxed in {opt.nsteps} FIRE steps: max |stress| {np.abs(stress).max():.1e} eV/Å³ "
          f"(from {before:.3f}), a = {a:.4f} Å (EAM {CU_LATTICE})")
    assert alpha == pytest.approx(90, abs=0.1) and gamma == pytest.approx(90, abs=0.1)  # cubic again
    assert a == pytest.approx(c, rel=1e-3)
    assert a == pytest.approx(CU_LATTICE, rel=0.03)  # near the EAM lattice constant it was trained on


def test_other_ase_drivers(run_dir):
    """Langevin and NPTBerendsen dynamics, and BFGS, run with the calculator."""
    calc = MLIPCalculator(run_dir)
    atoms = cu_crystal()
    atoms.calc = calc
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(1))
    Langevin(atoms, 2 * units.fs, temperature_K=300, friction=0.02, rng=np.random.default_rng(2)).run(50)
    assert np.isfinite(atoms.get_forces()).all()
    volume = atoms.get_volume()
    npt = NPTBerendsen(atoms, 2 * units.fs, temperature_K=300, pressure_au=0.0, taut=50 * units.fs,
                       taup=200 * units.fs, compressibility_au=7e-7 / units.bar)
    npt.run(20)
    assert atoms.get_volume() != volume  # the barostat acted on the calculator's stress
    atoms.rattle(0.05, seed=3)
    opt = BFGS(atoms, logfile=None)
    assert opt.run(fmax=1e-3, steps=200)
    assert np.abs(atoms.get_forces()).max() < 1e-3
