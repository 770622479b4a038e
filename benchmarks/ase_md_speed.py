"""ASE molecular dynamics speed: ms per VelocityVerlet step of mlip.MLIPCalculator vs TorchANI's calculator.

mlip: the default Cu model (``model.descriptors: default``, the hidden layers of
``mlip.train.config.DEFAULTS``, SiLU; or with ``--descriptors rann`` the RANN radial + bond set of
:data:`RANN_CONFIG`), untrained
(cost does not depend on the weights), exported to ``model.pt`` (TorchScript, the deployed path;
headline) and also run eagerly from the in-memory Potential. Fcc Cu at a = 3.615 Å, rattled
0.05 Å, 300 K velocities, 1 fs steps. Each step's time is split into the neighbour list (vesin,
rebuilt every step since atoms move) and the model (descriptors + networks + autograd forces),
from the calculator's ``timings``; the rest of the step is ASE's integrator and conversions.

TorchANI (benchmark-only: ``.venv/bin/pip install torchani --no-deps huggingface_hub``; its
``arch`` module imports ``huggingface_hub``), through ``torchani.ase.Calculator`` with its
pure-torch ``cell_list`` neighbour list, two untrained models (the published weights are
downloaded at run time, which cannot happen here; cost does not depend on them):

- ``ani1x``: the ANI-1x architecture for H, C, N, O (AEV of 384 features, 5.2 Å radial and
  3.5 Å angular cutoffs, C network 384-144-112-96-1, CELU), one network set instead of the
  ensemble of 8. The headline ``speedup_vs_torchani`` is against this one.
- ``matched``: the ANI form sized like the mlip default: C only, 5.5 Å for both parts,
  8 radial + 4x4 angular = 24 features, C network 24-64-64-1 (SiLU). TorchANI's angular terms
  enumerate neighbour pairs, so a 5.5 Å angular cutoff makes it much slower than ANI-1x.

Cu is not an ANI element, so TorchANI runs carbon on the same fcc lattice: same atom count
and density (0.0847 atoms/Å³), hence the same neighbour counts within a given cutoff.

Everything runs in one process, interleaved per system size, in the same dtype (float64, the
mlip default; ``--dtype float32`` for both), on ``--threads`` torch threads (1 by default).
mlip gets ``--warmup`` steps first (TorchScript's profiling executor specialises during the
first ~10 calls); TorchANI (eager) gets 2. Then the mean of ``--steps`` steps is reported; with
``--repeat N`` every calculator runs N times per size (interleaved, each from the same start) and
the run with the smallest mean is kept (less sensitive to other load on a shared machine).

Run: ``.venv/bin/python benchmarks/ase_md_speed.py`` (defaults ``--sizes 1000 8000 --steps 5
--warmup 12 --repeat 1``). The last line printed is a JSON object with ``speedup_vs_torchani``
(the smallest, over the sizes, of TorchANI-ANI-1x ms/step over mlip model.pt ms/step) and all
numbers, and the load average before and after the run.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import torch
from ase import units
from ase.build import bulk
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet

os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")

LATTICE = 3.615  # Å, fcc Cu


def fcc(symbol: str, n_atoms: int):
    """An fcc supercell of ``n_atoms`` (4·a·b·c, nearly cubic), rattled, with 300 K velocities."""
    cells = n_atoms // 4
    a = round(cells ** (1 / 3))
    while cells % a:
        a -= 1
    b = round((cells // a) ** 0.5)
    while (cells // a) % b:
        b -= 1
    atoms = bulk(symbol, "fcc", a=LATTICE, cubic=True).repeat((a, b, cells // (a * b)))
    atoms.rattle(0.05, seed=0)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    return atoms


def time_md(atoms, calc, warmup: int, steps: int) -> dict[str, float]:
    """Mean ms per VelocityVerlet step (and the mlip calculator's split, when it has one)."""
    atoms.calc = calc
    dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    dyn.run(warmup)
    samples: list[dict[str, float]] = []
    dyn.attach(lambda: samples.append(dict(getattr(calc, "timings", {}))), interval=1)
    start = time.perf_counter()
    dyn.run(steps)
    total = (time.perf_counter() - start) / steps
    out = {"ms_per_step": 1e3 * total}
    timed = samples[1:]  # observers also run before the first step (that sample is a warm-up step's)
    if timed and timed[0]:
        out["neighbor_ms"] = 1e3 * float(np.mean([t["neighbors"] for t in timed]))
        out["model_ms"] = 1e3 * float(np.mean([t["model"] for t in timed]))
    return out


#: ``--descriptors rann``: RANN radial (8) + bond (16) features at the default's 5.1 Å cutoff.
RANN_CONFIG = [{"type": "rann_radial", "re": 2.55, "rc": 5.1, "dr": 2.0, "alpha": [4.5] * 8, "o": -1, "n": 6},
               {"type": "rann_bond", "re": 2.55, "rc": 5.1, "dr": 2.0, "alphak": [1, 2, 4, 7], "m": 4}]


def mlip_calculators(dtype: str, descriptors: str, folder: str):
    """The Cu model as ``model.pt`` (TorchScript, the deployed path) and eagerly."""
    from mlip import MLIPCalculator
    from mlip.export import export_model, model_metadata
    from mlip.train.config import DEFAULTS
    from mlip.train.model_builder import build_potential

    torch.manual_seed(0)
    config = {**DEFAULTS["model"], "dtype": dtype}
    if descriptors == "rann":
        config["descriptors"] = RANN_CONFIG
    model = build_potential(config, ["Cu"])
    path = export_model(model, os.path.join(folder, "model.pt"), model_metadata(model))
    info = {"descriptors": descriptors, "features": int(model.descriptors.n_features),
            "hidden": list(DEFAULTS["model"]["hidden"]),
            "network_parameters": sum(p.numel() for p in model.networks.parameters()),
            "cutoff": model.cutoff}
    return {"mlip_model_pt": MLIPCalculator(path), "mlip_eager": MLIPCalculator(model)}, info


def torchani_calculator(kind: str, dtype: str):
    """TorchANI's ASE calculator around an untrained ANI model for carbon.

    ``matched``: the ANI form sized like the mlip default (cutoff 5.5 Å for both parts, 8 radial
    shifts + 4 angular shifts x 4 sections = 24 features, hidden [64, 64]). ``ani1x``: the ANI-1x
    architecture for H, C, N, O (384 features, 144-112-96 for C), one network set instead of the
    ensemble of 8.
    """
    from torchani.aev import ANIAngular, ANIRadial
    from torchani.arch import Assembler
    from torchani.models import SYMBOLS_1X

    asm = Assembler(periodic_table_index=True)
    asm.set_symbols(["C"] if kind == "matched" else SYMBOLS_1X)
    asm.set_global_cutoff_fn("cosine")
    if kind == "matched":
        angular = ANIAngular.cover_linearly(cutoff=5.5 - 1e-6, num_shifts=4, num_sections=4)
        asm.set_aev_computer(radial=ANIRadial.cover_linearly(cutoff=5.5, num_shifts=8), angular=angular)
        asm.set_atomic_networks(ctor="build", kwargs={"dims": {"C": (64, 64)}, "activation": torch.nn.SiLU(),
                                                       "bias": True})
    else:
        asm.set_aev_computer(radial="ani1x", angular="ani1x")
        asm.set_atomic_networks(ctor="ani1x")
    asm.set_neighborlist("cell_list")
    asm.set_gsaes_as_self_energies("wb97x-631gd")
    torch.manual_seed(0)
    model = asm.assemble(1).to(getattr(torch, dtype))
    model.requires_grad_(False)
    n_params = sum(p.numel() for p in model.neural_networks.parameters())
    return model.ase(), n_params, int(model.aev_computer.out_dim)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 8000])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per calculator and size (interleaved); the fastest is kept")
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--descriptors", choices=["default", "rann"], default="default",
                        help="mlip descriptors: the default config, or RANN radial + bond (RANN_CONFIG)")
    parser.add_argument("--torchani", nargs="+", choices=["ani1x", "matched"], default=["ani1x", "matched"],
                        help="TorchANI models to time (ani1x gives speedup_vs_torchani)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    import torchani

    with tempfile.TemporaryDirectory() as folder:
        mlip, mlip_info = mlip_calculators(args.dtype, args.descriptors, folder)
        ani = {f"torchani_{kind}": torchani_calculator(kind, args.dtype) for kind in args.torchani}
        results = []
        for n in args.sizes:
            copper, carbon = fcc("Cu", n), fcc("C", n)
            row: dict = {"atoms": len(copper)}
            runs = [(name, copper, calc, args.warmup) for name, calc in mlip.items()]
            runs += [(name, carbon, calc, 2) for name, (calc, _, _) in ani.items()]  # eager: little warm-up
            for _ in range(args.repeat):
                for name, atoms, calc, warmup in runs:
                    timing = time_md(atoms.copy(), calc, warmup, args.steps)
                    print(json.dumps({"atoms": len(copper), name: timing}), flush=True)
                    if name not in row or timing["ms_per_step"] < row[name]["ms_per_step"]:
                        row[name] = timing
            for kind in args.torchani:
                row[f"speedup_vs_torchani_{kind}"] = (row[f"torchani_{kind}"]["ms_per_step"]
                                                      / row["mlip_model_pt"]["ms_per_step"])
            results.append(row)
    print(json.dumps({
        "benchmark": "ase_md_speed", "dtype": args.dtype, "threads": args.threads, "steps": args.steps,
        "warmup": args.warmup, "repeat": args.repeat,
        "load_average_1_5_15min": {"before": [round(x, 2) for x in load_before],
                                   "after": [round(x, 2) for x in os.getloadavg()]},
        "torchani_version": torchani.__version__, "mlip_model": mlip_info,
        "torchani_models": {name: {"features": feats, "network_parameters": params}
                            for name, (_, params, feats) in ani.items()},
        "system": "mlip: fcc Cu; torchani: C on the same fcc lattice (a = 3.615 Å), rattled, 300 K",
        "results": results,
        "speedup_vs_torchani": min(r.get("speedup_vs_torchani_ani1x", np.nan) for r in results),
    }))


if __name__ == "__main__":
    main()
