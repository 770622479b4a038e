"""Extrapolation warnings (mlip.physics.extrapolation, pair_style mlip): a pair closer than the
training data's shortest distance of its elements, and an atom whose descriptors leave the
training range, are reported once, naming the atoms (indices in ASE, atom IDs in LAMMPS, 1 and
2 ranks); structures inside the data and model files without those metadata give none."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from fingerprints.neighbors import neighbor_list
from mlip import MLIPCalculator
from mlip.export import export_model, model_metadata, read_metadata
from mlip.lammps import load_lammps
from mlip.lammps.build import ensure_built
from mlip.physics.extrapolation import MAX_WARNINGS, ExtrapolationWarning
from mlip.train.model_builder import build_potential

ELEMENTS = ["Ni", "Cu"]
R_MIN = 2.2  # Å, the made-up "training data's" shortest distance of every pair
BIN = Path(sys.executable).parent
PAIR_WARNING = "closer than the training data's shortest distance"
FEATURE_WARNING = "descriptors outside the training range"


def crystal() -> Atoms:
    """32-atom fcc cell, Ni on every fourth site, slightly rattled (nearest pairs ≈ 2.45–2.65 Å)."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.symbols[::4] = "Ni"
    atoms.positions += np.random.default_rng(0).normal(0.0, 0.03, atoms.positions.shape)
    return atoms


def squeezed() -> tuple[Atoms, int]:
    """:func:`crystal` with atom 0 moved to 1.9 Å of its neighbour j; returns (atoms, j)."""
    atoms = crystal()
    d = atoms.get_distances(0, range(1, len(atoms)), mic=True)
    j = 1 + int(np.argmin(d))
    vec = atoms.get_distance(0, j, mic=True, vector=True)
    atoms.positions[0] += vec * (1.0 - 1.9 / np.linalg.norm(vec))
    return atoms, j


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """``data.pt``: an untrained model (repulsion auto) whose "training data" are :func:`crystal`
    (r_min R_MIN, descriptor range of that structure); ``old.pt``: the same without those
    metadata, as model files from before them."""
    path = tmp_path_factory.mktemp("extrapolation")
    torch.manual_seed(0)
    cfg = {"descriptors": "default", "hidden": [16], "activation": "silu", "physics": [], "charges": "none",
           "dtype": "float64"}
    model = build_potential(cfg, ELEMENTS)
    model.set_energy_reference(torch.tensor([-4.4, -3.5]), 1.0)
    r_min = torch.full((2, 2), R_MIN, dtype=torch.float64)
    model.set_min_pair_distance(r_min, torch.ones(2, 2, dtype=torch.bool))
    atoms = crystal()
    edge_index, _, shift = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, model.cutoff)
    pos = torch.as_tensor(atoms.positions)
    species = torch.as_tensor((atoms.numbers == 29).astype(np.int64))
    ei = torch.as_tensor(edge_index)
    with torch.no_grad():
        f = model.descriptors(species, ei, pos[ei[1]] - pos[ei[0]] + torch.as_tensor(shift), len(atoms))
    low = torch.stack([f[species == s].amin(dim=0) for s in (0, 1)])
    high = torch.stack([f[species == s].amax(dim=0) for s in (0, 1)])
    model.set_feature_range(low, high)
    meta = model_metadata(model)
    assert meta["min_pair_distance"] == {"Ni-Ni": R_MIN, "Ni-Cu": R_MIN, "Cu-Cu": R_MIN}
    assert meta["feature_range"] is True
    export_model(model, path / "data.pt", meta)
    new_keys = ("min_pair_distance", "min_pair_distance_fallback", "feature_range", "extrapolation_margin")
    old = {k: v for k, v in meta.items() if k not in new_keys}
    export_model(model, path / "old.pt", old)
    return {"data": path / "data.pt", "old": path / "old.pt", "dir": path}


def _ase_warnings(model: Path, structures: list[Atoms]) -> list[str]:
    calc = MLIPCalculator(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for atoms in structures:
            atoms = atoms.copy()
            atoms.calc = calc
            atoms.get_forces()
    return [str(w.message) for w in caught if issubclass(w.category, ExtrapolationWarning)]


def test_ase_warns_once_per_pair_and_atom_naming_them(models):
    atoms, j = squeezed()
    moved = atoms.copy()
    moved.positions[5] += 0.01  # the same close pair and atoms again: no new warning
    got = _ase_warnings(models["data"], [crystal(), atoms, moved])
    pair = [m for m in got if PAIR_WARNING in m]
    feature = [m for m in got if FEATURE_WARNING in m]
    assert len(pair) == 1 and len(feature) == 1, got
    assert pair[0].startswith(f"1 atom pair(s) closer than the training data's shortest distance; closest: "
                              f"atoms 0 and {j} (Ni-Cu) at 1.900 Å, shortest in training 2.200 Å"), pair
    _assert_near_atom_zero(atoms, int(re.search(r"worst: atom (\d+),", feature[0]).group(1)))


def _assert_near_atom_zero(atoms: Atoms, k: int) -> None:
    """The atom a feature warning names is the pushed atom 0 or within a cutoff of it."""
    assert k == 0 or atoms.get_distance(0, k, mic=True) < 6.0, k


def test_ase_caps_the_warnings_and_old_models_give_none(models):
    structures = []
    base, _ = squeezed()
    for k in range(MAX_WARNINGS + 3):  # a new close pair every call: pushed atom k+1 towards atom 0
        atoms = crystal()
        d = atoms.get_distances(k + 1, range(len(atoms)), mic=True)
        d[k + 1] = np.inf
        j = int(np.argmin(d))
        vec = atoms.get_distance(k + 1, j, mic=True, vector=True)
        atoms.positions[k + 1] += vec * (1.0 - 2.0 / np.linalg.norm(vec))
        structures.append(atoms)
    got = [m for m in _ase_warnings(models["data"], structures) if PAIR_WARNING in m]
    assert len(got) == MAX_WARNINGS and got[-1].endswith(f"(the last such warning: {MAX_WARNINGS} given)")
    assert _ase_warnings(models["old"], [base]) == []
    assert "min_pair_distance" not in read_metadata(models["old"])


def _write_data(path: Path, atoms: Atoms) -> None:
    """LAMMPS data file, type 1 = Ni, 2 = Cu, orthogonal box."""
    lines = ["# extrapolation test", "", f"{len(atoms)} atoms", "2 atom types",
             *[f"0 {float(atoms.cell[k, k])!r} {a}lo {a}hi" for k, a in enumerate("xyz")],
             "", "Masses", "", "1 58.6934", "2 63.546", "", "Atoms # atomic", ""]
    wrapped = atoms.get_positions(wrap=True)
    lines += [f"{k + 1} {2 if z == 29 else 1} " + " ".join(repr(float(c)) for c in x)
              for k, (z, x) in enumerate(zip(atoms.numbers, wrapped, strict=True))]
    path.write_text("\n".join(lines) + "\n")


def _lammps_input(model: Path, data: Path, runs: int) -> str:
    return "\n".join(["units metal", "atom_style atomic", "atom_modify map array", f"read_data {data}",
                      f"pair_style mlip {model}", "pair_coeff * * Ni Cu", "thermo_style custom step pe",
                      "thermo_modify format float %.15g", *["run 0"] * runs]) + "\n"


def _warnings_in(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("WARNING: pair_style mlip")]


def _check_lammps_log(log: str, atoms: Atoms, j: int) -> None:
    got = _warnings_in(log)
    pair = [m for m in got if PAIR_WARNING in m]
    feature = [m for m in got if FEATURE_WARNING in m]
    assert len(pair) == 1 and len(feature) == 1, got  # two runs: each pair and atom once
    assert f"closest: atoms 1 and {j + 1} (atom IDs, Ni-Cu) at 1.900 Å, shortest in training 2.200 Å" \
        in pair[0], pair
    _assert_near_atom_zero(atoms, int(re.search(r"worst: atom (\d+) \(atom ID\)", feature[0]).group(1)) - 1)


def test_lammps_one_rank_warns_like_ase_and_agrees_on_the_energy(models):
    plugin = ensure_built()
    atoms, j = squeezed()
    work = models["dir"] / "np1"
    work.mkdir()
    _write_data(work / "squeezed.data", atoms)
    for name in ("data", "old"):
        log = work / f"{name}.log"
        threads = torch.get_num_threads()
        lmp = load_lammps().lammps(cmdargs=["-log", str(log), "-screen", "none", "-nocite"])
        lmp.command(f"plugin load {plugin}")
        lmp.commands_string(_lammps_input(models[name], work / "squeezed.data", 2))
        energy = lmp.get_thermo("pe")
        n = len(atoms)  # local atoms first (1 rank), ghosts after
        ids = np.array(lmp.numpy.extract_atom("id"))[:n]
        forces = np.array(lmp.numpy.extract_atom("f"))[:n][np.argsort(ids)]
        lmp.close()
        torch.set_num_threads(threads)
        a = atoms.copy()
        a.calc = MLIPCalculator(models[name])
        with warnings.catch_warnings():  # the core and the descriptor clamp are in both
            warnings.simplefilter("ignore", ExtrapolationWarning)
            assert energy == pytest.approx(a.get_potential_energy(), rel=1e-10)
            ref = a.get_forces()
        np.testing.assert_allclose(forces, ref, rtol=0, atol=1e-9 * np.abs(ref).max())
        assert np.abs(ref[0]).max() > 1.0  # the pushed atom feels the core
        if name == "data":
            _check_lammps_log(log.read_text(), atoms, j)
        else:
            assert _warnings_in(log.read_text()) == []


def test_lammps_two_ranks_warn_once_on_rank_zero(models):
    plugin = ensure_built()
    atoms, j = squeezed()
    work = models["dir"] / "np2"
    work.mkdir()
    _write_data(work / "squeezed.data", atoms)
    (work / "in.lmp").write_text(_lammps_input(models["data"], work / "squeezed.data", 2))
    env = dict(os.environ, LAMMPS_PLUGIN_PATH=str(plugin.parent), OMP_NUM_THREADS="1")
    cmd = [str(BIN / "mpirun"), "-np", "2", str(BIN / "lmp"), "-in", "in.lmp", "-log", "log.lammps"]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 by 1 by 2" in proc.stdout or "1 by 2 by 1" in proc.stdout or "2 by 1 by 1" in proc.stdout
    _check_lammps_log((work / "log.lammps").read_text(), atoms, j)
