"""Validation energy error on the yttrium RANN training set (energies only, no forces).

Trains mlip's DEFAULT configuration on all dumps of ``../shared/data/yttrium`` (``types={1: "Y"}``,
random 10 % validation split, as ``mlip train ../shared/data/yttrium --types 1=Y``) and reports
the validation energy MAE per source file, next to the peer baseline of the same split: the
per-element reference energy alone (least squares on the training frames, no network). The
last line printed is one JSON object; ``--results`` rewrites the yttrium table in
benchmarks/RESULTS.md.

Usage (from the repository root)::

    .venv/bin/python benchmarks/yttrium.py --threads 1 --results
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "yttrium"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
BEGIN, END = "<!-- yttrium:begin -->", "<!-- yttrium:end -->"

sys.path.insert(0, str(ROOT))

from mlip.data import Dataset  # noqa: E402
from mlip.inference import load_model, predict_frames  # noqa: E402
from mlip.train.config import load_config  # noqa: E402
from mlip.train.model_builder import fit_energy_reference  # noqa: E402


def per_file_mae(frames: list, energies: list[float]) -> dict[str, dict[str, float]]:
    """Energy MAE (meV/atom) and frame count per source file name, plus ``all``."""
    errors: dict[str, list[float]] = defaultdict(list)
    for frame, energy in zip(frames, energies, strict=True):
        err = abs(energy - frame.energy) / len(frame) * 1000.0
        errors[Path(frame.source).name].append(err)
        errors["all"].append(err)
    return {k: {"frames": len(v), "E_mae": round(float(np.mean(v)), 3)} for k, v in sorted(errors.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training")
    parser.add_argument("--work", default=str(ROOT / "benchmarks" / "_work" / "yttrium"),
                        help="run directory")
    parser.add_argument("--eval-only", action="store_true", help="evaluate the run already in --work")
    parser.add_argument("--results", action="store_true", help="update the table in benchmarks/RESULTS.md")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"yttrium data not found at {DATA}: skipping (the benchmark needs ../shared/data)")
        print(json.dumps({"skipped": "no yttrium data"}))
        return
    torch.set_num_threads(args.threads)
    run_dir = Path(args.work)
    out: dict[str, Any] = {"threads": args.threads}
    if not args.eval_only:
        from mlip.train.trainer import train

        if run_dir.exists():
            shutil.rmtree(run_dir)
        config = load_config(None, {"data.sources": [str(DATA)], "data.types": {1: "Y"}, "out": str(run_dir),
                                    "train.threads": args.threads})
        t0, c0 = time.perf_counter(), time.process_time()
        train(config)
        out.update(train_minutes=round((time.perf_counter() - t0) / 60, 2),
                   train_cpu_minutes=round((time.process_time() - c0) / 60, 2))
    config = load_config(run_dir / "config.yaml")
    dataset = Dataset(run_dir / "data.h5")
    frames = list(dataset)
    train_idx, val_idx = dataset.split(config["data"]["val_fraction"], config["train"]["seed"],
                                       config["data"]["split_by"])
    val = [frames[i] for i in val_idx]
    module, meta = load_model(run_dir)
    ours = per_file_mae(val, [p["energy"] for p in predict_frames(module, meta, val, stress=False)])
    train_frames = [frames[i] for i in train_idx]
    shift, _ = fit_energy_reference([np.zeros(len(f), dtype=np.int64) for f in train_frames],
                                    np.array([f.energy for f in train_frames]), 1, [])
    baseline = per_file_mae(val, [float(shift[0]) * len(f) for f in val])
    out["files"] = {k: {**v, "reference_only_E_mae": baseline[k]["E_mae"]} for k, v in ours.items()}
    out["descriptors"] = config["model"]["descriptors"]
    if args.results:
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
