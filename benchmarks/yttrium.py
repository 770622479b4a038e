"""Validation energy error on the yttrium RANN training set (energies only, no forces).

Default mode: trains mlip's DEFAULT configuration on all dumps of ``../shared/data/yttrium``
(``types={1: "Y"}``, random 10 % validation split, as ``mlip train ../shared/data/yttrium --types
1=Y``) and reports the validation energy MAE per source file, next to the peer baseline of the same
split: the per-element reference energy alone (least squares on the training frames, no network);
``--results`` rewrites the yttrium table in benchmarks/RESULTS.md.

``--leave-family-out`` (extrapolation safety): each of the families 1NN, 2NN, 3NN, FreeSurface and
liquid is held out in turn (``data.holdout``: all its frames in validation, none in training); the
model is trained on the other dump files with a random 10 % in-family validation split, once per
``--seeds`` seed. It reports the held-out-family energy MAE next to the in-family validation MAE
and their ratio, each as mean ± sample std (and min-max) over the seeds, and whether the target
holds: held-out-family MAE <= 2 x in-family validation MAE (mean ratio) on every family. Nothing is
tuned here; the defaults are what is measured.

The last line printed is one JSON object. Usage (from the repository root)::

    .venv/bin/python benchmarks/yttrium.py --threads 1 --results
    .venv/bin/python benchmarks/yttrium.py --threads 1 --leave-family-out --seeds 0 1 2
    .venv/bin/python benchmarks/yttrium.py --threads 1 --leave-family-out 1NN   # one family

``--set key=value`` overrides a training config key, for smoke runs (``--set train.epochs=3``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "yttrium"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
BEGIN, END = "<!-- yttrium:begin -->", "<!-- yttrium:end -->"
FAMILIES = ("1NN", "2NN", "3NN", "FreeSurface", "liquid")  # held out in turn by --leave-family-out
TARGET_RATIO = 2.0  # held-out-family MAE at most this times the in-family validation MAE (issue 23)

sys.path.insert(0, str(ROOT))

from benchmarks.mlearn import holdout_summary, holdout_table, split_errors, train_run  # noqa: E402
from mlip.data import Dataset  # noqa: E402
from mlip.inference import load_model, predict_frames  # noqa: E402
from mlip.train.config import load_config, parse_overrides  # noqa: E402
from mlip.train.model_builder import fit_energy_reference  # noqa: E402
from parsers import Frame  # noqa: E402


def yttrium_config(out: Path, seed: int, threads: int, overrides: dict[str, Any],
                   holdout: str | None = None) -> dict[str, Any]:
    """The default configuration on all yttrium dumps (random 10 % validation split seeded by
    ``seed``; ``holdout``: one dump file entirely in validation), then ``overrides``."""
    return load_config(None, {"data.sources": [str(DATA)], "data.types": {1: "Y"}, "data.holdout": holdout,
                              "train.seed": seed, "out": str(out), "train.threads": threads, **overrides})


def file_of(frame: Frame) -> str:
    """The dump file of a frame (the validation breakdown label)."""
    return Path(frame.source).name


def per_file_mae(frames: list, energies: list[float]) -> dict[str, dict[str, float]]:
    """Energy MAE (meV/atom) and frame count per source file name, plus ``all``."""
    errors: dict[str, list[float]] = defaultdict(list)
    for frame, energy in zip(frames, energies, strict=True):
        err = abs(energy - frame.energy) / len(frame) * 1000.0
        errors[Path(frame.source).name].append(err)
        errors["all"].append(err)
    return {k: {"frames": len(v), "E_mae": round(float(np.mean(v)), 3)} for k, v in sorted(errors.items())}


def leave_family_out(args: argparse.Namespace, overrides: dict[str, Any]) -> dict[str, Any]:
    """Each family of ``args.leave_family_out`` (all of :data:`FAMILIES` when empty) held out in
    turn, once per seed; rows of :func:`benchmarks.mlearn.holdout_summary` and the target check."""
    rows = {}
    for family in args.leave_family_out or FAMILIES:
        runs = []
        for seed in args.seeds:
            config = yttrium_config(Path(args.work) / f"without-{family}-seed{seed}", seed, args.threads,
                                    overrides, holdout=family)
            run = train_run(config)
            run.update(seed=seed, **split_errors(Path(run["run_dir"]), file_of))
            print(f"without {family}, seed {seed}: {json.dumps(run)}", file=sys.stderr, flush=True)
            runs.append(run)
        rows[family] = {**holdout_summary(runs), "runs": runs}
        rows[family]["within_target"] = rows[family]["E_ratio"]["mean"] <= TARGET_RATIO
    print(f"leave one family out (energies, meV/atom; mean ± std over seeds {args.seeds}):\n"
          + holdout_table(rows), file=sys.stderr, flush=True)
    return {"threads": args.threads, "seeds": args.seeds, "families": rows,
            "target": f"held-out-family E MAE <= {TARGET_RATIO:g} x in-family validation E MAE (mean over "
                      "seeds) on every family",
            "target_met": all(r["within_target"] for r in rows.values()),
            **({"overrides": overrides} if overrides else {})}


def all_files(args: argparse.Namespace, overrides: dict[str, Any]) -> dict[str, Any]:
    """The default mode: one run on all files, validation MAE per file and the reference-only
    baseline on the same frames."""
    run_dir = Path(args.work)
    out: dict[str, Any] = {"threads": args.threads}
    if not args.eval_only:
        run = train_run(yttrium_config(run_dir, args.seeds[0], args.threads, overrides))
        out.update(train_minutes=run["train_minutes"], train_cpu_minutes=run["train_cpu_minutes"])
    config = load_config(run_dir / "config.yaml")
    dataset = Dataset(run_dir / "data.h5")
    frames = list(dataset)
    train_idx, val_idx = dataset.split(config["data"]["val_fraction"], config["train"]["seed"],
                                       config["data"]["split_by"], config["data"]["holdout"])
    val = [frames[i] for i in val_idx]
    module, meta = load_model(run_dir)
    ours = per_file_mae(val, [p["energy"] for p in predict_frames(module, meta, val, stress=False)])
    train_frames = [frames[i] for i in train_idx]
    shift, _ = fit_energy_reference([np.zeros(len(f), dtype=np.int64) for f in train_frames],
                                    np.array([f.energy for f in train_frames]), 1, [])
    baseline = per_file_mae(val, [float(shift[0]) * len(f) for f in val])
    out["files"] = {k: {**v, "reference_only_E_mae": baseline[k]["E_mae"]} for k, v in ours.items()}
    out["descriptors"] = config["model"]["descriptors"]
    if overrides:
        out["overrides"] = overrides
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], metavar="SEED",
                        help="seeds (split, initial weights, batch order): one run per seed and family with "
                             "--leave-family-out; the default mode uses the first")
    parser.add_argument("--leave-family-out", nargs="*", metavar="FAMILY", choices=FAMILIES,
                        help="hold out each FAMILY in turn (default: all five) and report its MAE next to "
                             "the in-family validation MAE")
    parser.add_argument("--work", default=str(ROOT / "benchmarks" / "_work" / "yttrium"),
                        help="run directory (--leave-family-out: folder of the run directories)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a training config key (smoke runs; not for reported numbers)")
    parser.add_argument("--eval-only", action="store_true", help="evaluate the run already in --work")
    parser.add_argument("--results", action="store_true",
                        help="update the table in benchmarks/RESULTS.md (default mode)")
    args = parser.parse_args()
    if args.leave_family_out is not None and (args.eval_only or args.results):
        parser.error("--leave-family-out trains its own runs and prints its own table "
                     "(no --eval-only or --results)")
    if not DATA.is_dir():
        print(f"yttrium data not found at {DATA}: skipping (the benchmark needs ../shared/data)")
        print(json.dumps({"skipped": "no yttrium data"}))
        return
    overrides = parse_overrides(args.set)
    torch.set_num_threads(args.threads)
    if args.leave_family_out is not None:
        print(json.dumps(leave_family_out(args, overrides)))
        return
    out = all_files(args, overrides)
    if args.results and not overrides:
        update_results(out)
    print(json.dumps(out))


def update_results(out: dict[str, Any]) -> None:
    """Rewrite the yttrium block of RESULTS.md (appended on first use)."""
    rows = ["| file | validation frames | mlip E MAE (meV/atom) | reference energy only (meV/atom) |",
            "|---|---:|---:|---:|"]
    rows += [f"| {k} | {v['frames']} | {v['E_mae']:.2f} | {v['reference_only_E_mae']:.2f} |"
             for k, v in out["files"].items()]
    minutes = (f"\n\nTraining: {out['train_minutes']} min wall, {out['train_cpu_minutes']} min CPU, "
               f"{out['threads']} torch thread(s).") if "train_minutes" in out else ""
    block = f"{BEGIN}\n" + "\n".join(rows) + minutes + f"\n\n    {json.dumps(out)}\n{END}"
    text = RESULTS.read_text() if RESULTS.exists() else ""
    m = re.search(re.escape(BEGIN) + r".*?" + re.escape(END), text, re.S)
    if m:
        text = text[:m.start()] + block + text[m.end():]
    else:
        text = (text.rstrip("\n") + "\n\n## mlip train: yttrium, energies only (`benchmarks/yttrium.py`)\n\n"
                + block + "\n")
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
