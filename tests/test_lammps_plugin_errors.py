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
    extra = {"metadata.json": ""}
    model = torch.jit.load(str(path / "half.pt"), _extra_files=extra)
    meta = json.loads(extra["metadata.json"])
    half = json.dumps({**meta, "dtype": "float16"})
    torch.jit.save(model, str(path / "half.pt"), _extra_files={"metadata.json": half})
    torch.jit.save(model, str(path / "nometa.pt"))
    (path / "corrupt.pt").write_bytes(b"PK\x03\x04 this is not a TorchScript archive")
    return path


def script(model: Path, plugin: Path, units: str = "metal", elements: str = "Cu") -> str:
    """A 32-atom fcc Cu box with pair_style mlip, evaluated with run 0."""
    return f"""
plugin load {plugin}
units {units}
atom_style atomic
lattice fcc 3.61
region box block 0 2 0 2 0 2
create_box 1 box
create_atoms 1 box
mass 1 63.546
pair_style mlip {model}
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
        ("shapes.pt", {}, "returned atomic_energies, forces or virial of a wrong shape"),
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
