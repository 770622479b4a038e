"""Neighbour-list time vs system size: fingerprints.neighbors.neighbor_list (vesin) vs ASE.

Systems: rattled fcc Cu supercells of about 1k, 8k and 64k atoms (6³, 13³, 25³ cubic cells
of 4 atoms, a = 3.61 Å), cutoff 5.5 Å (about 54 neighbours per atom, a little above the
default descriptor cutoff for Cu, 5.1 Å). Both libraries return
the full list (i, j, integer shifts). Time per atom that stays flat with N shows O(N).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/neighbor_speed.py [--cutoff 5.5] [--repeat 3]``.
The last printed line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import ase.neighborlist
from ase.build import bulk

from fingerprints.neighbors import neighbor_list


def best_time(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cutoff", type=float, default=5.5)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for n_cells in (6, 13, 25):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * ((n_cells,) * 3)
        atoms.rattle(0.05, seed=0)
        pos, cell = atoms.positions, atoms.cell.array
        t_ours, (ei, _, _) = best_time(lambda: neighbor_list(pos, cell, True, args.cutoff), args.repeat)  # noqa: B023
        t_ase, (i, _) = best_time(lambda: ase.neighborlist.neighbor_list("ij", atoms, args.cutoff),  # noqa: B023
                                  1 if n_cells > 13 else args.repeat)
        assert len(i) == ei.shape[1], (len(i), ei.shape[1])
        n = len(atoms)
        rows.append({"atoms": n, "pairs": int(ei.shape[1]), "mlip_s": t_ours, "ase_s": t_ase,
                     "mlip_us_per_atom": 1e6 * t_ours / n, "ase_us_per_atom": 1e6 * t_ase / n,
                     "speedup": t_ase / t_ours})
        print(f"{n:6d} atoms, {ei.shape[1]:8d} pairs: mlip (vesin) {t_ours * 1e3:8.1f} ms "
              f"({1e6 * t_ours / n:.2f} us/atom), ASE {t_ase * 1e3:8.1f} ms ({1e6 * t_ase / n:.2f} us/atom), "
              f"speedup {t_ase / t_ours:.1f}x")
    print(json.dumps({"cutoff": args.cutoff, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                      "results": rows}))


if __name__ == "__main__":
    main()
