"""``mlip demo --fast`` end to end: LAMMPS EAM data, training, export, MD in LAMMPS and ASE.

The demo's own comparison (LAMMPS ``pair_style mlip`` vs ``MLIPCalculator``) is checked
here against its output files: two independent evaluations of the exported model
(LAMMPS with ghost atoms in C++, ASE with image shifts in Python) along the same NVE run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from parsers import read

MLIP = [sys.executable, "-m", "mlip"]


def test_demo_fast(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.run([*MLIP, "demo", "--fast", "--out", str(out)], capture_output=True, text=True,
                          env={**os.environ, "MLIP_PROGRESS": "0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("cu.pt", "run/model.pt", "run/metrics.csv", "run/learning_curve.png",
                 "run/parity_forces.png", "md_energies.csv", "summary.json"):
        assert (out / name).is_file(), name

    # The training dumps hold what the demo promises: energies, forces, a vacancy, a slab.
    vacancy = list(read(out / "dumps" / "vacancy.dump"))
    bulk = list(read(out / "dumps" / "bulk_900K.dump"))
    slab = list(read(out / "dumps" / "surface_001.dump"))
    assert len(vacancy[0]) == len(bulk[0]) - 1
    z = np.sort(slab[0].positions[:, 2] % slab[0].cell[2, 2])
    gaps = np.append(np.diff(z), z[0] + slab[0].cell[2, 2] - z[-1])
    assert gaps.max() > 8.0  # Å of vacuum between the slab's two surfaces (periodic along z)
    assert all(f.energy is not None and f.forces is not None for f in vacancy + bulk + slab)

    summary = json.loads((out / "summary.json").read_text())
    md = summary["md"]
    assert md["first_step_diff_eV"] < 1e-6
    steps, e_lammps, e_ase = np.loadtxt(out / "md_energies.csv", delimiter=",", skiprows=1).T
    assert len(steps) == md["steps"] + 1
    np.testing.assert_allclose(e_ase, e_lammps, rtol=0, atol=1e-6 * md["n_atoms"])
    assert np.ptp(e_lammps) > 1e-3  # the atoms moved: a real trajectory, not one frame repeated
    assert summary["held_out"]["all"]["frames"] == 3
    assert "all" in proc.stdout and "cu.pt" in proc.stdout


def test_demo_refuses_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    proc = subprocess.run([*MLIP, "demo", "--fast", "--out", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "not the output of mlip demo" in proc.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"
