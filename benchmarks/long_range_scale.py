"""Cost of long-range electrostatics at scale: one energy + forces call through ``mlip.MLIPCalculator``.

Three untrained NaCl models with the same default descriptors (``model.descriptors: default``,
the hidden layers, dtype and repulsive core of ``mlip.train.config.DEFAULTS``; cost does not
depend on the weights): ``short`` (no physics terms), ``long`` (``physics: [ewald]`` with network
charges, the term's defaults unless ``--accuracy``/``--mode`` are given) and ``d3``
(``physics: [d3]``, PBE/BJ, cutoffs of 20 Å for the energy and 12 Å for the coordination
numbers). Rock-salt NaCl (a = 5.64 Å, rattled 0.05 Å) at 512, 4,096 and 32,768 atoms (4³, 8³
and 16³ conventional cells).

Each (size, model) runs in a fresh process (so ``resource.getrusage`` maxrss is that run's peak
resident memory, model building included): the calculator is scripted (``jit=True``, the
deployed path), then ``--calls`` energy + forces calls are made on slightly moved atoms (a new
neighbour list each, as in MD); the first includes TorchScript's warm-up, the reported time is
the fastest of the later calls (``--calls 3``: two timed calls). Cost per atom-step is that time
over the number of atoms. Everything runs on ``--threads`` torch threads (1 by default).

In LAMMPS (``--lammps-sizes``, default 4,096, 32,768 and 262,144 atoms; ``--ranks``, default 1
and 2): the same three models exported by ``mlip export`` and run with the lines of
``model.pt.lammps`` (``long``: the Coulomb path, ``coul/long`` + ``kspace_style pppm`` at the
ewald term's accuracy, domain-decomposed; ``d3``: ``pair_style dispersion/d3`` in the overlay), and
the physics anchor ``rigid_ion``: LAMMPS' own ``born/coul/long`` (Tosi–Fumi NaCl, formal charges)
+ ``pppm`` at the same accuracy and real-space cutoff. Each run is a fresh ``lmp`` (``mpirun -np
2 lmp`` on 2 ranks) in a fresh wrapper process: ``--lammps-steps`` force evaluations (no
integration) after one warm-up step; cost per atom-step is LAMMPS' loop time over steps and atoms,
peak memory the largest resident set of a rank (``RUSAGE_CHILDREN``). The 262,144-atom runs are
the long model on 1 rank only (peak memory). ``lr_strong_scaling_1to2_32k`` is the long model's
1-rank over 2-rank loop time at 32,768 atoms.

Run: ``.venv/bin/python benchmarks/long_range_scale.py`` (``--sizes 512 4096 32768``; ``--sizes``
or ``--lammps-sizes`` with no value skips that part). The last line printed is a JSON object with
``lr_cost_ratio_32k_ase`` (long / short time per call at 32,768 atoms), ``d3_cost_ratio_32k`` (d3 /
short, in ASE), ``lr_cost_ratio_32k_lammps``, ``d3_cost_ratio_32k_lammps`` (1 rank),
``lr_peak_memory_gb_262k_lammps``, ``lr_strong_scaling_1to2_32k``, ``rigid_ion_cost_ratio_32k_lammps``
(the anchor over the short model) and the per-size numbers (null where a run was not made or
failed). A child that fails (e.g. out of the ``--memory-gb`` address-space limit) is reported with
its error and null numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

LATTICE = 5.64  # Å, rock-salt NaCl
D3_CUTOFFS = (20.0, 12.0)  # Å, energy and coordination-number cutoffs of the d3 variant
ELEMENTS = ["Na", "Cl"]
MASSES = (22.99, 35.45)
BIN = Path(sys.executable).parent
WORK = Path(__file__).resolve().parent / "_work" / "long_range_scale"
# Tosi-Fumi NaCl for pair_style born (A eV, rho Å, sigma Å, C eV Å^6, D eV Å^8) by type pair
BORN = {(1, 1): (0.2637, 0.317, 2.340, 1.0486, -0.4993), (1, 2): (0.2110, 0.317, 2.755, 6.9906, -8.6758),
        (2, 2): (0.1582, 0.317, 3.170, 72.402, -145.4268)}


def rocksalt(n_atoms: int):
    """A cubic rock-salt NaCl supercell of ``n_atoms`` (8·k³), rattled 0.05 Å."""
    from ase.build import bulk

    k = round((n_atoms / 8) ** (1 / 3))
    if 8 * k**3 != n_atoms:
        raise SystemExit(f"--sizes: {n_atoms} is not 8·k³")
    atoms = bulk("NaCl", "rocksalt", a=LATTICE, cubic=True).repeat(k)
    atoms.rattle(0.05, seed=0)
    return atoms


def model_config(variant: str, accuracy: float | None, mode: str | None) -> dict[str, Any]:
    """The model section of the config: defaults, plus ``physics: [ewald]`` for ``long`` and
    ``physics: [d3]`` (cutoffs ``D3_CUTOFFS``) for ``d3``."""
    from mlip.train.config import DEFAULTS

    cfg = dict(DEFAULTS["model"])
    cfg["elements"] = ELEMENTS
    cfg["descriptors"] = "default"
    ewald: dict[str, Any] = {"name": "ewald"}
    if accuracy is not None:
        ewald["accuracy"] = accuracy
    if mode is not None:
        ewald["mode"] = mode
    d3 = {"name": "d3", "cutoff": D3_CUTOFFS[0], "cn_cutoff": D3_CUTOFFS[1]}
    cfg["physics"] = {"long": [ewald], "d3": [d3]}.get(variant, [])
    return cfg


def child(n_atoms: int, variant: str, calls: int, accuracy: float | None, mode: str | None) -> dict[str, Any]:
    """One (size, model) measurement in this process: seconds per call and peak memory."""
    import numpy as np

    from mlip.calculator import MLIPCalculator
    from mlip.train.model_builder import build_potential

    atoms = rocksalt(n_atoms)
    model = build_potential(model_config(variant, accuracy, mode), ELEMENTS)
    atoms.calc = MLIPCalculator(model, jit=True)
    rng = np.random.default_rng(1)
    seconds = []
    for _ in range(calls):
        atoms.positions += rng.normal(scale=0.01, size=atoms.positions.shape)
        start = time.perf_counter()
        atoms.get_forces()
        seconds.append(time.perf_counter() - start)
    best = min(seconds[1:]) if calls > 1 else seconds[0]
    return {"atoms": n_atoms, "model": variant, "first_call_s": seconds[0], "call_s": best,
            "us_per_atom_step": 1e6 * best / n_atoms,
            "peak_memory_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
            "physics": [t.name for t in model.physics],
            "coulomb": [t.engine.extra_repr() for t in model.physics if hasattr(t, "engine")]}


def run_script(args: argparse.Namespace, options: list[str], failed: dict[str, Any]) -> dict[str, Any]:
    """This script in a fresh process with ``options`` (and the model options of ``args``): its
    last line's JSON, or ``failed`` with the error."""
    cmd = [sys.executable, __file__, *options]
    if args.accuracy is not None:
        cmd += ["--accuracy", str(args.accuracy)]
    if args.mode is not None:
        cmd += ["--mode", args.mode]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        error = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return {**failed, "error": error}
    return {**failed, **json.loads(lines[-1])}


def run_child(args: argparse.Namespace, n_atoms: int, variant: str) -> dict[str, Any]:
    options = ["--child", str(n_atoms), variant, "--calls", str(args.calls), "--threads", str(args.threads),
               "--memory-gb", str(args.memory_gb)]
    failed = {"atoms": n_atoms, "model": variant, "call_s": None, "peak_memory_gb": None}
    return run_script(args, options, failed)


def export_models(args: argparse.Namespace) -> dict[str, Path]:
    """The short, long and d3 models as ``mlip export`` writes them (d3 with its LAMMPS overlay)."""
    from mlip.export import export_model, model_metadata
    from mlip.train.model_builder import build_potential

    WORK.mkdir(parents=True, exist_ok=True)
    paths = {}
    for variant in ("short", "long", "d3"):
        model = build_potential(model_config(variant, args.accuracy, args.mode), ELEMENTS)
        overlay = ["d3"] if variant == "d3" else []
        metadata = model_metadata(model, lammps_overlay=overlay)
        paths[variant] = export_model(model, WORK / f"{variant}.pt", metadata)
    return paths


def write_data(n_atoms: int) -> Path:
    """LAMMPS data file (atom_style charge, all charges 0) of :func:`rocksalt`."""
    path = WORK / f"nacl_{n_atoms}.data"
    if path.exists():
        return path
    atoms = rocksalt(n_atoms)
    length = atoms.cell.lengths()
    types = [1 if s == "Na" else 2 for s in atoms.get_chemical_symbols()]
    lines = ["long_range_scale", "", f"{n_atoms} atoms", "2 atom types", "",
             *[f"0 {length[d]:.12g} {a}lo {a}hi" for d, a in enumerate("xyz")], "", "Masses", "",
             f"1 {MASSES[0]}", f"2 {MASSES[1]}", "", "Atoms # charge", "",
             *[f"{k + 1} {t} 0 {x:.12g} {y:.12g} {z:.12g}"
               for k, (t, (x, y, z)) in enumerate(zip(types, atoms.get_scaled_positions() * length,
                                                      strict=True))]]
    path.write_text("\n".join(lines) + "\n")
    return path


def lammps_lines(variant: str, models: dict[str, Path], cutoff: float, accuracy: float) -> list[str]:
    """The potential's lines: the model's ``model.pt.lammps`` lines (plain ``pair_style mlip``
    without them), or the rigid-ion anchor."""
    if variant == "rigid_ion":
        return [f"pair_style born/coul/long 8.0 {cutoff:g}",
                *[f"pair_coeff {i} {j} {' '.join(map(str, p))}" for (i, j), p in BORN.items()],
                "set type 1 charge 1.0", "set type 2 charge -1.0", f"kspace_style pppm {accuracy:g}"]
    from mlip.export import read_metadata

    path = models[variant]
    commands = read_metadata(path)["lammps_commands"]
    if not commands:
        return [f"pair_style mlip {path}", f"pair_coeff * * {' '.join(ELEMENTS)}"]
    return [line.replace(f"mlip {path.name}", f"mlip {path}") for line in commands]


def lammps_child(data: Path, lines: list[str], nprocs: int, steps: int) -> dict[str, Any]:
    """One LAMMPS run (in this wrapper process): loop time of ``steps`` force evaluations after a
    warm-up step, and the peak resident memory of a rank (GB)."""
    script = WORK / f"in.{os.getpid()}"
    script.write_text("\n".join(["units metal", "atom_style charge", f"read_data {data}", *lines,
                                  "thermo_style custom step pe", "run 1", f"run {steps}", ""]))
    from mlip.lammps.build import ensure_built

    env = dict(os.environ, OMP_NUM_THREADS="1", LAMMPS_PLUGIN_PATH=str(ensure_built().parent))
    cmd = [str(BIN / "lmp"), "-in", str(script), "-log", "none", "-nocite"]
    if nprocs > 1:
        cmd = [str(BIN / "mpirun"), "-np", str(nprocs), *cmd]
    proc = subprocess.run(cmd, cwd=WORK, env=env, capture_output=True, text=True)
    script.unlink()
    pattern = r"Loop time of ([0-9.eE+-]+) on \d+ procs for (\d+) steps with (\d+) atoms"
    loops = re.findall(pattern, proc.stdout)
    if proc.returncode != 0 or len(loops) != 2:
        error = [line for line in (proc.stdout + proc.stderr).splitlines() if "ERROR" in line] or [
            f"exit {proc.returncode}"]
        raise RuntimeError(error[-1])
    seconds, n_steps, n_atoms = float(loops[1][0]), int(loops[1][1]), int(loops[1][2])
    return {"step_s": seconds / n_steps, "us_per_atom_step": 1e6 * seconds / (n_steps * n_atoms),
            "peak_memory_gb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6}


def run_lammps_child(args: argparse.Namespace, n_atoms: int, variant: str, nprocs: int) -> dict[str, Any]:
    options = ["--lammps-child", str(n_atoms), variant, str(nprocs), "--lammps-steps", str(args.lammps_steps)]
    failed = {"atoms": n_atoms, "model": variant, "ranks": nprocs, "step_s": None, "peak_memory_gb": None}
    return run_script(args, options, failed)


def lammps_part(args: argparse.Namespace) -> dict[str, Any]:
    """Every LAMMPS run, and the issue's LAMMPS numbers."""
    export_models(args)
    runs = []
    for n_atoms in args.lammps_sizes:
        for nprocs in args.ranks:
            for variant in ("short", "long", "d3", "rigid_ion"):
                if n_atoms > 32768 and (variant != "long" or nprocs != 1):
                    continue
                res = run_lammps_child(args, n_atoms, variant, nprocs)
                print(json.dumps(res), flush=True)
                runs.append(res)

    def pick(n_atoms: int, variant: str, nprocs: int) -> dict[str, Any]:
        found = [r for r in runs if (r["atoms"], r["model"], r["ranks"]) == (n_atoms, variant, nprocs)]
        return found[0] if found else {"step_s": None, "peak_memory_gb": None}

    def ratio(a: dict[str, Any], b: dict[str, Any]) -> float | None:
        return a["step_s"] / b["step_s"] if a["step_s"] and b["step_s"] else None

    short, long = pick(32768, "short", 1), pick(32768, "long", 1)
    return {"lr_cost_ratio_32k_lammps": ratio(long, short),
            "d3_cost_ratio_32k_lammps": ratio(pick(32768, "d3", 1), short),
            "rigid_ion_cost_ratio_32k_lammps": ratio(pick(32768, "rigid_ion", 1), short),
            "lr_peak_memory_gb_262k_lammps": pick(262144, "long", 1)["peak_memory_gb"],
            "lr_strong_scaling_1to2_32k": ratio(long, pick(32768, "long", 2)),
            "runs": runs}


def _ratio(run: dict[str, Any], short: dict[str, Any]) -> float | None:
    """Seconds per call of ``run`` over the short-range model's (None if either failed)."""
    return run["call_s"] / short["call_s"] if run["call_s"] and short["call_s"] else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[512, 4096, 32768])
    parser.add_argument("--calls", type=int, default=3, help="calls per run (first = warm-up)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--accuracy", type=float, default=None, help="ewald accuracy (default: the term's)")
    parser.add_argument("--mode", default=None, help="ewald mode: auto, pme or ewald (default: the term's)")
    parser.add_argument("--memory-gb", type=float, default=14.0, help="address-space limit of each child")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per child")
    parser.add_argument("--lammps-sizes", type=int, nargs="*", default=[4096, 32768, 262144])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2], help="LAMMPS MPI ranks")
    parser.add_argument("--lammps-steps", type=int, default=3, help="timed LAMMPS steps per run")
    parser.add_argument("--child", nargs=2, metavar=("ATOMS", "MODEL"), help=argparse.SUPPRESS)
    parser.add_argument("--lammps-child", nargs=3, metavar=("ATOMS", "MODEL", "RANKS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.lammps_child:
        n_atoms, variant, nprocs = int(args.lammps_child[0]), args.lammps_child[1], int(args.lammps_child[2])
        from mlip.export import read_metadata

        models = {v: WORK / f"{v}.pt" for v in ("short", "long", "d3")}
        coulomb = read_metadata(models["long"])["lammps_coulomb"]
        lines = lammps_lines(variant, models, coulomb["cutoff"], coulomb["accuracy"])
        print(json.dumps(lammps_child(write_data(n_atoms), lines, nprocs, args.lammps_steps)))
        return
    if args.child:
        limit = int(args.memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(child(int(args.child[0]), args.child[1], args.calls, args.accuracy, args.mode)))
        return
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    lammps = lammps_part(args) if args.lammps_sizes else {}
    runs = []
    for n_atoms in args.sizes:
        for variant in ("short", "long", "d3"):
            res = run_child(args, n_atoms, variant)
            print(json.dumps(res), flush=True)
            runs.append(res)
    by_size: dict[str, dict[str, Any]] = {}
    for n_atoms in args.sizes:
        short, long, d3 = ({r["model"]: r for r in runs if r["atoms"] == n_atoms}[v]
                           for v in ("short", "long", "d3"))
        by_size[str(n_atoms)] = {"lr_cost_ratio": _ratio(long, short), "d3_cost_ratio": _ratio(d3, short),
                                 "short": short, "long": long, "d3": d3}
    result = {
        "benchmark": "long_range_scale",
        "lr_cost_ratio_32k_ase": by_size.get("32768", {}).get("lr_cost_ratio"),
        "lr_cost_ratio_32k_lammps": lammps.get("lr_cost_ratio_32k_lammps"),
        "lr_peak_memory_gb_262k_lammps": lammps.get("lr_peak_memory_gb_262k_lammps"),
        "lr_strong_scaling_1to2_32k": lammps.get("lr_strong_scaling_1to2_32k"),
        "d3_cost_ratio_32k": by_size.get("32768", {}).get("d3_cost_ratio"),
        "d3_cost_ratio_32k_lammps": lammps.get("d3_cost_ratio_32k_lammps"),
        "rigid_ion_cost_ratio_32k_lammps": lammps.get("rigid_ion_cost_ratio_32k_lammps"),
        "threads": args.threads,
        "sizes": by_size,
        "lammps_runs": lammps.get("runs", []),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
