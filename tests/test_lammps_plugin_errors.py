"""pair_style mlip: user errors become LAMMPS errors with clear messages (never a crash),
float32 models, and the build helper's stale detection and CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk
from click.testing import CliRunner
from lammps_toy_models import evaluate_periodic, save_model

from mlip.cli import main
from mlip.lammps import build as plugin_build
from mlip.lammps import load_lammps

BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def plugin() -> Path:
    return plugin_build.ensure_built()


@pytest.fixture(scope="module")
def models(tmp_path_factory, plugin) -> Path:
    path = tmp_path_factory.mktemp("mlip_models")
    save_model(path / "cu.pt", ["Cu"])
    save_model(path / "cu32.pt", ["Cu"], dtype="float32")
    save_model(path / "half.pt", ["Cu"], dtype="float64")
    save_model(path / "raises.pt", ["Cu"], broken="raises")
    save_model(path / "shapes.pt", ["Cu"], broken="shapes")
    save_model(path / "cu_lr.pt", ["Cu"], long_range=True)
    save_model(path / "cu_legacy.pt", ["Cu"], legacy=True)
    extra = {"metadata.json": ""}
    model = torch.jit.load(str(path / "half.pt"), _extra_files=extra)
    meta = json.loads(extra["metadata.json"])
    half = json.dumps({**meta, "dtype": "float16"})
    torch.jit.save(model, str(path / "half.pt"), _extra_files={"metadata.json": half})
    torch.jit.save(model, str(path / "nometa.pt"))
    (path / "corrupt.pt").write_bytes(b"PK\x03\x04 this is not a TorchScript archive")
    return path


def script(model: Path, plugin: Path, units: str = "metal", elements: str = "Cu", options: str = "") -> str:
    """A 32-atom fcc Cu box with pair_style mlip (``options`` after the model), evaluated with run 0."""
    return f"""
plugin load {plugin}
units {units}
atom_style atomic
lattice fcc 3.61
region box block 0 2 0 2 0 2
create_box 1 box
create_atoms 1 box
mass 1 63.546
pair_style mlip {model} {options}
pair_coeff * * {elements}
run 0
"""


def lammps_error(commands: str) -> str:
    """Run commands in an in-process LAMMPS; return the error message it raised."""
    threads = torch.get_num_threads()
    lmp = load_lammps().lammps(cmdargs=["-log", "none", "-screen", "none"])
    try:
        with pytest.raises(Exception) as info:  # the lammps module raises a bare Exception
            lmp.commands_string(commands)
    finally:
        lmp.close()
        torch.set_num_threads(threads)
    return str(info.value)


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("cu.pt", {"elements": "Zr"}, "element 'Zr' (atom type 1) is not in model"),
        ("missing.pt", {}, "cannot read model file"),
        ("corrupt.pt", {}, "is not a valid TorchScript model file"),
        ("cu.pt", {"units": "real"}, "requires 'units metal'"),
        ("half.pt", {}, "has dtype 'float16'; supported: float64, float32"),
        ("nometa.pt", {}, "has no metadata.json"),
        ("cu.pt", {"elements": "Cu Cu"}, "one element for each of the 1 atom types"),
        ("raises.pt", {}, "failed: The following operation failed in the TorchScript interpreter. "
                         "... builtins.RuntimeError: toy model failure"),
        ("shapes.pt", {}, "returned atomic_energies, charges, forces, virial or edge_forces of a wrong "
                          "shape"),
        ("cu.pt", {"options": "chunk"},
         "expected 'pair_style mlip <model.pt> [chunk N] [heap_pad MiB] [total_charge Q] [deviation_file F] "
         "[every N]'"),
        ("cu.pt", {"options": "chunk -1"}, "chunk must be >= 0"),
        ("cu.pt", {"options": "heap 64"}, "unknown keyword 'heap'"),
        ("cu.pt", {"options": "heap_pad 0"}, "heap_pad must be 1 to 2047 (MiB)"),
    ],
)
def test_user_errors_are_lammps_errors(name, kwargs, message, models, plugin):
    text = lammps_error(script(models / name, plugin, **kwargs))
    assert text.startswith("ERROR") and message in text, text  # "ERROR on proc 0: " from error->one


@pytest.mark.parametrize("name", ["cu.pt", "cu_lr.pt"])  # short-range and gathered (long-range) paths
def test_atoms_at_the_same_place_are_refused_as_by_ase(name, models, plugin):
    """A 33rd atom on top of atom 1 (at the origin): LAMMPS stops naming both atom IDs, where it
    used to drop the pair and report a finite energy; the ASE calculator refuses it too."""
    from mlip.calculator import MLIPCalculator

    commands = script(models / name, plugin).replace("run 0", "create_atoms 1 single 0 0 0\nrun 0")
    text = lammps_error(commands)
    assert text.startswith("ERROR") and "atoms 1 and 33 (atom IDs) are at the same place" in text, text

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    atoms += atoms[:1]
    atoms.calc = MLIPCalculator(models / name)
    with pytest.raises(ValueError, match="are at the same place"):
        atoms.get_potential_energy()


def test_new_model_needs_new_pair_coeff(models, plugin):
    commands = script(models / "cu.pt", plugin).replace("run 0", f"pair_style mlip {models / 'cu.pt'}\nrun 0")
    assert "All pair coeffs are not set" in lammps_error(commands)


def test_console_script_reports_error_and_exits_cleanly(models, plugin, tmp_path):
    (tmp_path / "in.bad").write_text(script(models / "cu.pt", plugin, elements="Xx"))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([str(BIN / "lmp"), "-in", "in.bad", "-log", "none"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "ERROR: pair_coeff: element 'Xx'" in proc.stdout + proc.stderr


def test_heap_pad_option(models, plugin, tmp_path):
    """pair_style mlip ... heap_pad 256 (glibc M_TOP_PAD for the process, so in a subprocess):
    the same energy as without it."""
    energies = []
    for options in ("", "chunk 8 heap_pad 256"):
        (tmp_path / "in.pad").write_text(script(models / "cu.pt", plugin, options=options).replace(
            "run 0", "displace_atoms all random 0.1 0.1 0.1 7\nrun 0\nprint \"PE $(pe:%.17g)\""))
        env = dict(os.environ, OMP_NUM_THREADS="1")
        proc = subprocess.run([str(BIN / "lmp"), "-in", "in.pad", "-log", "none"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        energies.append(float(proc.stdout.split("PE ")[-1].split()[0]))
    assert energies[1] == pytest.approx(energies[0], rel=1e-12)


def test_float32_model_matches_float64_reference(models, plugin):
    """A float32 model runs in float32: agreement with the float64 model to float32 precision."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    rattle = "displace_atoms all random 0.1 0.1 0.1 7\nrun 0"
    commands = script(models / "cu32.pt", plugin).replace("run 0", rattle)
    threads = torch.get_num_threads()
    lmp = load_lammps().lammps(cmdargs=["-log", "none", "-screen", "none"])
    try:
        lmp.commands_string(commands)
        pe = lmp.get_thermo("pe")
        forces = np.array(lmp.gather_atoms("f", 1, 3)).reshape(-1, 3)
        positions = np.array(lmp.gather_atoms("x", 1, 3)).reshape(-1, 3)
    finally:
        lmp.close()
        torch.set_num_threads(threads)
    atoms.positions = positions
    ref = evaluate_periodic(models / "cu.pt", atoms, ["Cu"])
    assert pe == pytest.approx(float(ref["energy"]), rel=1e-6)
    np.testing.assert_allclose(forces, ref["forces"], atol=1e-5 * np.abs(ref["forces"]).max() + 1e-6)
    assert np.abs(ref["forces"]).max() > 0.05


def test_stale_build_is_detected(plugin, tmp_path, monkeypatch):
    """A copied build is up to date; a stamp from another torch version makes it stale."""
    shutil.copy(plugin, tmp_path / plugin.name)
    shutil.copy(plugin.parent / "build_stamp.json", tmp_path / "build_stamp.json")
    monkeypatch.setenv("MLIP_LAMMPS_PLUGIN_DIR", str(tmp_path))
    assert plugin_build.plugin_path() == tmp_path / "mlipplugin.so"
    assert plugin_build.stale_reason() is None
    stamp = json.loads((tmp_path / "build_stamp.json").read_text())
    stamp["torch"] = "0.0.0"
    (tmp_path / "build_stamp.json").write_text(json.dumps(stamp))
    assert plugin_build.stale_reason() == "torch changed since it was built"
    (tmp_path / "mlipplugin.so").unlink()
    assert "is not built yet" in plugin_build.stale_reason()


def test_cli_path_and_build(plugin):
    runner = CliRunner()
    result = runner.invoke(main, ["lammps", "path"])
    assert result.exit_code == 0 and result.stdout.strip() == str(plugin)
    result = runner.invoke(main, ["lammps", "build"])
    assert result.exit_code == 0 and result.stdout.strip() == str(plugin)


def test_example_input_runs(models, plugin, tmp_path, monkeypatch):
    """examples/lammps/in.mlip runs as documented, with the plugin autoloaded from LAMMPS_PLUGIN_PATH."""
    example = Path(__file__).resolve().parents[1] / "examples" / "lammps" / "in.mlip"
    monkeypatch.setenv("LAMMPS_PLUGIN_PATH", str(plugin.parent))
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    args = ["-log", "none", "-screen", "none", "-var", "model", str(models / "cu.pt"), "-var", "steps", "20"]
    lmp = load_lammps().lammps(cmdargs=args)
    try:
        lmp.file(str(example))
        step, temp, natoms = lmp.get_thermo("step"), lmp.get_thermo("temp"), lmp.get_natoms()
    finally:
        lmp.close()
        torch.set_num_threads(threads)
    assert (step, natoms) == (20, 864)
    assert 100.0 < temp < 1000.0
    frames = (tmp_path / "dump.mlip").read_text().count("ITEM: TIMESTEP")
    assert frames == 1


def run_with_stress_atom(model: Path, plugin: Path, log: Path) -> tuple[float, float, float]:
    """Rattled 32-atom Cu box with compute stress/atom: (pe eV, press bar, -sum of the per-atom
    stress trace / 3V in bar, which equals press without the kinetic part at 0 K)."""
    per_atom = """compute s all stress/atom NULL virial
compute sum all reduce sum c_s[1] c_s[2] c_s[3]
variable p_atoms equal -(c_sum[1]+c_sum[2]+c_sum[3])/(3*vol)
displace_atoms all random 0.1 0.1 0.1 7
thermo_style custom step pe press v_p_atoms
run 0"""
    threads = torch.get_num_threads()
    lmp = load_lammps().lammps(cmdargs=["-log", str(log), "-screen", "none"])
    try:
        lmp.commands_string(script(model, plugin).replace("run 0", per_atom))
        return lmp.get_thermo("pe"), lmp.get_thermo("press"), lmp.extract_variable("p_atoms")
    finally:
        lmp.close()
        torch.set_num_threads(threads)


@pytest.mark.parametrize("name, reason", [
    ("cu_legacy.pt", "the model has no edge_forces output (exported by an older mlip)"),
    ("cu_lr.pt", "not computed for long-range models"),
])
def test_models_without_edge_forces_run_with_zero_peratom_virials(name, reason, models, plugin, tmp_path):
    """A model exported before edge forces (forward without ``edge_forces``) and a long-range model
    still run: energy and pressure as usual, per-atom virials zero with one warning. The current
    short-range model gives the same energy and pressure, with per-atom virials summing to it."""
    pe, press, p_atoms = run_with_stress_atom(models / name, plugin, tmp_path / "log.lammps")
    log = (tmp_path / "log.lammps").read_text()
    assert f"WARNING: pair_style mlip: per-atom virials are zero: {reason}" in log
    assert p_atoms == 0.0 and abs(press) > 100.0
    pe_now, press_now, p_atoms_now = run_with_stress_atom(models / "cu.pt", plugin, tmp_path / "log2.lammps")
    assert "per-atom virials are zero" not in (tmp_path / "log2.lammps").read_text()
    assert p_atoms_now == pytest.approx(press_now, rel=1e-10)
    if name == "cu_legacy.pt":  # the same toy model: the same energy and pressure
        assert (pe, press) == (pytest.approx(pe_now, rel=1e-12), pytest.approx(press_now, rel=1e-10))


def test_heat_flux_example_runs(models, plugin, tmp_path, monkeypatch):
    """examples/lammps/in.heatflux runs a few steps and writes the flux, whose virial part (total minus
    convective) is not zero: pair_style mlip's centroid/stress/atom reaches compute heat/flux."""
    example = Path(__file__).resolve().parents[1] / "examples" / "lammps" / "in.heatflux"
    monkeypatch.setenv("LAMMPS_PLUGIN_PATH", str(plugin.parent))
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    args = ["-log", "log.lammps", "-screen", "none", "-var", "model", str(models / "cu.pt"),
            "-var", "cells", "3", "-var", "steps", "10", "-var", "every", "2"]
    lmp = load_lammps().lammps(cmdargs=args)
    try:
        lmp.file(str(example))
        step, natoms = lmp.get_thermo("step"), lmp.get_natoms()
    finally:
        lmp.close()
        torch.set_num_threads(threads)
    assert (step, natoms) == (10, 108)
    assert "WARNING" not in (tmp_path / "log.lammps").read_text()
    flux = np.loadtxt(tmp_path / "heatflux.dat")
    assert flux.shape == (6, 7) and np.isfinite(flux).all()
    np.testing.assert_array_equal(flux[:, 0], [0, 2, 4, 6, 8, 10])
    virial_part = flux[:, 1:4] - flux[:, 4:7]  # zero at step 0: a perfect lattice has no forces
    assert np.abs(virial_part[1:]).min() > 1e-3 * np.abs(flux[:, 1:4]).max()
