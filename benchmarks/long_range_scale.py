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

Run: ``.venv/bin/python benchmarks/long_range_scale.py`` (``--sizes 512 4096 32768``). The last
line printed is a JSON object with ``lr_cost_ratio_32k_ase`` (long / short time per call at
32,768 atoms; null if that size was not run or failed), ``d3_cost_ratio_32k`` (d3 / short, in
ASE) and the per-size numbers. The LAMMPS parts of the issue are future work and printed as
null: ``lr_cost_ratio_32k_lammps``, ``lr_peak_memory_gb_262k_lammps`` and
``lr_strong_scaling_1to2_32k``.
A child that fails (e.g. out of the ``--memory-gb`` address-space limit) is reported with its
error and null numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

LATTICE = 5.64  # Å, rock-salt NaCl
D3_CUTOFFS = (20.0, 12.0)  # Å, energy and coordination-number cutoffs of the d3 variant
ELEMENTS = ["Na", "Cl"]


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


def run_child(args: argparse.Namespace, n_atoms: int, variant: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", str(n_atoms), variant, "--calls", str(args.calls),
           "--threads", str(args.threads), "--memory-gb", str(args.memory_gb)]
    if args.accuracy is not None:
        cmd += ["--accuracy", str(args.accuracy)]
    if args.mode is not None:
        cmd += ["--mode", args.mode]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        error = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return {"atoms": n_atoms, "model": variant, "call_s": None, "peak_memory_gb": None, "error": error}
    return json.loads(lines[-1])


def _ratio(run: dict[str, Any], short: dict[str, Any]) -> float | None:
    """Seconds per call of ``run`` over the short-range model's (None if either failed)."""
    return run["call_s"] / short["call_s"] if run["call_s"] and short["call_s"] else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 4096, 32768])
    parser.add_argument("--calls", type=int, default=3, help="calls per run (first = warm-up)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--accuracy", type=float, default=None, help="ewald accuracy (default: the term's)")
    parser.add_argument("--mode", default=None, help="ewald mode: auto, pme or ewald (default: the term's)")
    parser.add_argument("--memory-gb", type=float, default=14.0, help="address-space limit of each child")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per child")
    parser.add_argument("--child", nargs=2, metavar=("ATOMS", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        limit = int(args.memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(child(int(args.child[0]), args.child[1], args.calls, args.accuracy, args.mode)))
        return
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
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
        "lr_cost_ratio_32k_lammps": None,
        "lr_peak_memory_gb_262k_lammps": None,
        "lr_strong_scaling_1to2_32k": None,
        "d3_cost_ratio_32k": by_size.get("32768", {}).get("d3_cost_ratio"),
        "threads": args.threads,
        "sizes": by_size,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
