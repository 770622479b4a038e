"""Committee models (issue 21): what a committee costs in ASE, and whether its deviation tracks the
true error.

``cost``: ms per energy + forces call of ``MLIPCalculator`` on rattled fcc Cu (``--sizes``, default
864 atoms) for the default model (``model.descriptors: default``, the default hidden layers),
untrained (cost does not depend on the weights), exported to ``model.pt`` as a single model and as
a committee of ``--members`` (default 4), the committee once as its mean alone and once with the
force deviation (one more backward pass per member; what ``deviation_warning`` or asking for
``force_deviation`` costs). The calls are interleaved, ``--warmup`` first (TorchScript's profiling
executor), then the median of ``--calls``; 1 torch thread by default.

``calibration Mo Si``: trains a committee of ``--members`` on the mlearn ``<El>/training.json``
(the benchmark protocol of ``benchmarks/mlearn.py``: 10 % of each group held out for validation;
``--epochs`` default 250, the training default) and evaluates ``<El>/test.json``: per structure,
the largest per-atom force deviation d_i = sqrt(mean_k |F_i^k − F̄_i|²) against the true largest
force error max_i |F̄_i − F_i^DFT|, Spearman ρ over the structures (``spearman_rho``; also
``spearman_rho_nonzero`` without the structures whose DFT forces vanish by symmetry, all below
1e-4 eV/Å, where model and DFT both give ~0 and the pair only adds a trivial agreement), and a
log–log scatter plot of the latter (``--plot``). ``--eval-only`` evaluates the runs already in
``--workdir`` (``<El>_committee<K>``) instead of training. A 4-member committee trains about as long as
four single models minus the shared descriptor forward pass: on one CPU core expect hours per
element at the default 250 epochs (``--epochs`` to shorten; the number is then not the protocol's).

Run from the repository root::

    .venv/bin/python benchmarks/committee.py cost
    .venv/bin/python benchmarks/committee.py calibration Mo Si --threads 1

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

from mlip import MLIPCalculator  # noqa: E402
from mlip.export import export_model, model_metadata  # noqa: E402
from mlip.inference import load_model, predict_frames  # noqa: E402
from mlip.train.config import DEFAULTS, load_config  # noqa: E402
from mlip.train.model_builder import build_potential  # noqa: E402
from parsers import read  # noqa: E402

LATTICE = 3.615  # Å, fcc Cu


def _model_file(folder: Path, members: int) -> Path:
    """The default Cu model (untrained) with ``members`` members, exported."""
    torch.manual_seed(0)
    config = {**DEFAULTS["model"], "committee": members}
    model = build_potential(config, ["Cu"])
    model.set_energy_reference(torch.tensor([-3.5]), 0.5)
    path = folder / f"committee{members}.pt"
    export_model(model, path, model_metadata(model, config["descriptors"]))
    return path


def cost(args: argparse.Namespace) -> dict[str, Any]:
    from ase.build import bulk

    out: dict[str, Any] = {"members": args.members, "threads": torch.get_num_threads(), "sizes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        files = {"single": _model_file(Path(tmp), 1), "committee": _model_file(Path(tmp), args.members)}
        for n in args.sizes:
            reps = round((n / 4) ** (1 / 3))
            atoms = bulk("Cu", "fcc", a=LATTICE, cubic=True).repeat(reps)
            atoms.rattle(0.05, seed=0)
            calcs = {"single": (MLIPCalculator(files["single"]), ["forces"]),
                     "committee_mean": (MLIPCalculator(files["committee"]), ["forces"]),
                     "committee_deviation": (MLIPCalculator(files["committee"]),
                                             ["forces", "force_deviation"])}
            times: dict[str, list[float]] = {name: [] for name in calcs}
            for call in range(args.warmup + args.calls):
                for name, (calc, props) in calcs.items():
                    calc.reset()
                    t0 = time.perf_counter()
                    calc.calculate(atoms, ["energy", *props], ["positions"])
                    if call >= args.warmup:
                        times[name].append(time.perf_counter() - t0)
            ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
            out["sizes"][str(len(atoms))] = {
                "ms": ms, "mean_ratio": ms["committee_mean"] / ms["single"],
                "deviation_ratio": ms["committee_deviation"] / ms["single"]}
            print(f"{len(atoms)} atoms: " + ", ".join(f"{k} {v:.1f} ms" for k, v in ms.items()), flush=True)
    return out


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def calibrate(element: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from mlip.train.trainer import train

    run = workdir / f"{element}_committee{args.members}"
    t0 = time.perf_counter()
    if not args.eval_only:
        overrides = {"data.sources": [str(DATA / "mlearn" / element / "training.json")],
                     "data.split_by": "group", "model.committee": args.members, "train.threads": args.threads,
                     "train.epochs": args.epochs, "out": str(run)}
        train(load_config(None, overrides), force=True, echo=lambda line: None)
    seconds = time.perf_counter() - t0
    module, meta = load_model(run / "model.pt")
    test = list(read(DATA / "mlearn" / element / "test.json"))
    preds = predict_frames(module, meta, test, stress=False, deviation=True)
    deviation = np.array([p["max_force_deviation"] for p in preds])
    error = np.array([np.linalg.norm(p["forces"] - f.forces, axis=1).max()
                      for p, f in zip(preds, test, strict=True)])
    moving = np.array([np.abs(f.forces).max() > 1e-4 for f in test])
    result = {"structures": len(test), "spearman_rho": _spearman(deviation, error),
              "structures_nonzero": int(moving.sum()),
              "spearman_rho_nonzero": _spearman(deviation[moving], error[moving]), "nonzero": moving.tolist(),
              "max_force_deviation": deviation.tolist(), "max_force_error": error.tolist(),
              "train_seconds": None if args.eval_only else seconds, "epochs": args.epochs, "run": str(run)}
    print(f"{element}: Spearman rho {result['spearman_rho']:.3f} over {len(test)} test structures",
          flush=True)
    return result


def calibration(args: argparse.Namespace) -> dict[str, Any]:
    if not (DATA / "mlearn").is_dir():
        raise SystemExit(f"mlearn data not found under {DATA}")
    workdir = Path(args.workdir)
    out = {"members": args.members, "elements": {el: calibrate(el, args, workdir) for el in args.elements}}
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(args.elements), figsize=(4.5 * len(args.elements), 4), squeeze=False)
        for ax, (el, r) in zip(axes[0], out["elements"].items(), strict=True):
            keep = np.asarray(r["nonzero"])
            deviation, error = np.asarray(r["max_force_deviation"]), np.asarray(r["max_force_error"])
            ax.loglog(deviation[keep], error[keep], "o", ms=4)
            ax.set_xlabel("max force deviation (eV/Å)")
            ax.set_ylabel("max force error vs DFT (eV/Å)")
            ax.set_title(f"{el}: Spearman ρ = {r['spearman_rho_nonzero']:.2f} ({keep.sum()} structures)")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        out["plot"] = str(args.plot)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    sub = parser.add_subparsers(dest="part", required=True)
    p_cost = sub.add_parser("cost")
    p_cost.add_argument("--sizes", type=int, nargs="+", default=[864])
    p_cost.add_argument("--calls", type=int, default=15)
    p_cost.add_argument("--warmup", type=int, default=12)
    p_cal = sub.add_parser("calibration")
    p_cal.add_argument("elements", nargs="+")
    p_cal.add_argument("--epochs", type=int, default=DEFAULTS["train"]["epochs"])
    p_cal.add_argument("--workdir", default="benchmarks/_work")
    p_cal.add_argument("--eval-only", action="store_true", help="evaluate the runs already in --workdir")
    p_cal.add_argument("--plot", default="benchmarks/committee_calibration.png")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    result = cost(args) if args.part == "cost" else calibration(args)
    result["load_average"] = [load[0], os.getloadavg()[0]]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
