"""The README's new-user path runs as written: extxyz and LAMMPS dumps → ``mlip train`` →
``mlip evaluate`` → ASE MD → LAMMPS on 2 ranks.

The shell block and ``md.py`` are taken from README.md (the blocks after the ``walkthrough``
markers) and run unchanged but for their lengths: 2 epochs instead of 100, 5 MD steps in ASE and
10 in LAMMPS instead of 1000. The data are Cu EAM frames written by LAMMPS: RANN-format dumps, and
extxyz files (energy, forces, stress, ``config_type``) made from other frames.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ase.io import write

import parsers
from mlip.demo.cu_eam import write_cu_eam_dumps, write_rann_cu_dumps, write_rann_dump

ROOT = Path(__file__).resolve().parents[1]
ELEMENT_COLUMN = {"extra_columns": ("element",), "dump_modify": ("element Cu",)}  # no --types needed

pytestmark = pytest.mark.slow

SHORTER = [("--epochs 100", "--epochs 2"), ("dyn.run(1000)", "dyn.run(5)"),
           ("-var steps 1000", "-var steps 10")]


def readme_block(marker: str) -> str:
    """The fenced code block that follows ``<!-- walkthrough: MARKER ...-->`` in README.md."""
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- walkthrough: {re.escape(marker)}[^>]*-->\s*```\w*\n(.*?)```", text, re.S)
    assert match, f"README.md has no walkthrough block '{marker}'"
    block = match.group(1)
    for long, short in SHORTER:
        block = block.replace(long, short)
    return block


def write_extxyz(frames: list[parsers.Frame], path: Path, config_type: str) -> None:
    atoms = []
    for frame in frames:
        a = frame.to_ase()
        a.info = {"config_type": config_type}
        atoms.append(a)
    write(path, atoms, format="extxyz")


def test_readme_walkthrough_runs(tmp_path):
    write_rann_cu_dumps(tmp_path, (600.0, 1200.0), n_frames=4, seed=3, every=15)  # tmp_path/dumps
    for name, seed, temperature in (("dft", 20, 900.0), ("test", 30, 1500.0)):
        run = write_cu_eam_dumps(tmp_path / f"xyz_{name}", n_frames=4, every=15, size=2,
                                 temperature=temperature, seed=seed, **ELEMENT_COLUMN)
        frames = list(parsers.read(write_rann_dump(run, tmp_path / f"{name}.dump")))
        write_extxyz(frames, tmp_path / f"{name}.xyz", config_type=f"{name}_{temperature:g}K")
    (tmp_path / "md.py").write_text(readme_block("md.py"))
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "MLIP_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", "-e", "-c", readme_block("shell")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "group:test_1500K" in out  # mlip evaluate's row of the extxyz config_type
    assert re.search(r"-?\d+\.\d+ eV/atom after 5 steps", out)  # md.py
    assert (tmp_path / "runs" / "cu" / "model.pt").is_file()
    log = (tmp_path / "log.lammps").read_text()
    assert "Loop time" in log and "on 2 procs" in log
