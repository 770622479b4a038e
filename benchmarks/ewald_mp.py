"""Ewald message passing on a long-range interaction that is not Coulomb: short-range only against
learned-charge Ewald against ``model.long_range: ewald_mp``.

Data (:mod:`mlip.demo.lj_slabs`, generated now by LAMMPS' ``pair_style lj/cut 15.0``): a Kr and a
Xe fcc(100) slab across vacuum gaps of 5.5–9 Å on both sides (fully periodic cells, 64 atoms),
laterally strained, shifted and rattled; the slabs are bound only by the −4εσ⁶/r⁶ tails reaching
across the gaps, beyond every model's 5 Å cutoff. Training and test frames come from different
seeds. The cross-gap (adhesion) energy of each test frame, E − E(Kr slab alone) − E(Xe slab alone)
in the same cell (LAMMPS), is reported: its spread is what a short-range model cannot see.

Variants, each with the same descriptors (the default power spectrum at ``--cutoff`` 5 Å),
network, epochs and seed, differing only in the long-range term:

- ``short_range``: no long-range term;
- ``ewald``: ``model.physics: [ewald]`` with network charges (learned from energies and forces);
- ``ewald_mp``: ``model.long_range: ewald_mp`` (defaults: 8 channels, K = 1/Å, 8 radial Gaussians).

Each is trained with ``--seeds`` seeds (the initial weights, split and batch order); errors are
MAEs on the test frames, energies in meV/atom and forces in meV/Å, and the ratios
short_range/ewald_mp and ewald/ewald_mp per seed and their mean. Trainings run one after another
in this process (``--threads`` torch threads).

Run from the repository root (defaults: 120 training and 40 test frames, 60 epochs, 3 seeds):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ewald_mp.py

The last line printed is one JSON object with the per-seed errors and the ratios.

Results and their reading: ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from long_range import (  # the script's folder: the same test MAEs as long_range.py
    errors,
    parse_training_options,
)

from fingerprints.descriptor_set import default_config
from mlip.data.store import write_dataset
from mlip.demo.lj_slabs import lammps_energy, make_frames
from mlip.lammps import load_lammps
from mlip.train.config import load_config
from mlip.train.trainer import train
from parsers import Frame

ELEMENTS = ["Kr", "Xe"]
VARIANTS: dict[str, dict[str, Any]] = {
    "short_range": {},
    "ewald": {"model.physics": ["ewald"], "model.charges": "network"},
    "ewald_mp": {"model.long_range": "ewald_mp"},
}


def adhesion_meV_atom(frames: list[Frame]) -> np.ndarray:
    """Cross-gap energy per atom (meV) of each frame: its LAMMPS energy minus those of its Kr and
    its Xe slab alone in the same cell (each slab's own periodic images stay beyond the cutoff)."""
    lmp = load_lammps().lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    out = []
    try:
        for f in frames:
            types = np.where(f.numbers == 36, 1, 2)
            box = np.diag(f.cell)
            alone = sum(lammps_energy(lmp, f.positions[types == t], types[types == t], box)[0]
                        for t in (1, 2))
            out.append((f.energy - alone) / len(f) * 1e3)
    finally:
        lmp.close()
    return np.array(out)


def train_variant(data: Path, out: Path, name: str, seed: int,
                  args: argparse.Namespace) -> tuple[Path, float]:
    """Train variant ``name`` with ``seed`` into ``out``; returns the run directory and wall time (s)."""
    overrides = {
        "data.sources": [str(data)], "out": str(out), "model.elements": ELEMENTS,
        "model.descriptors": default_config(ELEMENTS, args.cutoff), "model.hidden": [32, 32],
        "train.epochs": args.epochs, "train.batch_size": 4, "train.lr": args.lr, "train.min_lr": args.lr / 20,
        "train.scheduler": "cosine", "train.energy_weight": args.energy_weight, "train.force_weight": 1.0,
        "train.ema_decay": 0.9, "train.seed": seed, "train.threads": args.threads, "data.val_fraction": 0.1,
        **VARIANTS[name],
    }
    t0 = time.perf_counter()
    run_dir = train(load_config(None, overrides))
    return run_dir, time.perf_counter() - t0


def ratios(results: dict[str, dict[int, dict[str, float]]], base: str, seeds: list[int]) -> dict[str, Any]:
    """``base``/ewald_mp MAE ratios per seed, their mean and standard deviation."""
    out: dict[str, Any] = {}
    for key in ("energy_mae_meV_atom", "force_mae_meV_A"):
        per_seed = [results[base][s][key] / results["ewald_mp"][s][key] for s in seeds]
        out[key.split("_mae")[0]] = {"per_seed": [round(r, 3) for r in per_seed],
                                     "mean": round(float(np.mean(per_seed)), 3),
                                     "std": round(float(np.std(per_seed)), 3)}
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--train-frames", type=int, default=120)
    p.add_argument("--test-frames", type=int, default=40)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--lr", type=float, default=1e-2, help="initial learning rate (cosine decay to lr/20)")
    p.add_argument("--energy-weight", type=float, default=100.0, help="train.energy_weight, (eV/atom)^-2")
    p.add_argument("--cutoff", type=float, default=5.0, help="descriptor cutoff (Å) of every variant")
    args = parse_training_options(p, argv)
    t0 = time.perf_counter()
    train_frames = make_frames(args.train_frames, seed=1)
    test_frames = make_frames(args.test_frames, seed=2)
    adhesion = adhesion_meV_atom(test_frames)
    print(f"{len(train_frames)} training / {len(test_frames)} test frames; test adhesion "
          f"{adhesion.mean():.3f} ± {adhesion.std():.3f} meV/atom (mean ± std, MAE about the mean "
          f"{np.mean(np.abs(adhesion - adhesion.mean())):.3f})", file=sys.stderr)
    results: dict[str, dict[int, dict[str, float]]] = {name: {} for name in args.variants}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = work / "slabs_train.h5"
        write_dataset(train_frames, data)
        for seed in args.seeds:
            for name in args.variants:
                run_dir, seconds = train_variant(data, work / f"{name}_seed{seed}", name, seed, args)
                results[name][seed] = {**errors(run_dir, test_frames), "train_s": round(seconds, 1)}
                print(f"  {name} seed {seed}: {json.dumps(results[name][seed])}", file=sys.stderr)
    result: dict[str, Any] = {
        "benchmark": "ewald_mp", "train_frames": len(train_frames), "test_frames": len(test_frames),
        "test_adhesion_meV_atom": {"mean": round(float(adhesion.mean()), 4),
                                   "std": round(float(adhesion.std()), 4)},
        "epochs": args.epochs, "cutoff": args.cutoff, "seeds": args.seeds, "errors": results,
    }
    if "ewald_mp" in results:
        for base in ("short_range", "ewald"):
            if base in results:
                result[f"{base}_over_ewald_mp"] = ratios(results, base, args.seeds)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
