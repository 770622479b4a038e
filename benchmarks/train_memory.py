"""Peak memory and epoch time of ``mlip train`` on mlearn Cu and on a data set ten times larger.

The larger set holds each training structure of mlearn Cu (``../shared/data/mlearn/Cu``) ten
times, displaced by up to 0.02 Å at random (labels copied: this measures memory and time, not
accuracy). Both sets are written to ``data.h5`` files first; then each is trained for
``--epochs`` epochs (the defaults otherwise, one torch thread) in a fresh process, and we report
that process's peak resident set size and the mean time of the epochs after the first
(``metrics.csv``). The trainer streams its batches from the dataset file, so the peak should
hardly grow with the data set.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_memory.py [--epochs 3] [--work DIR] \\
        [--set KEY=VALUE ...]

The last line printed is one JSON object: ``peak_rss_gb_1x``, ``peak_rss_gb_10x``,
``peak_rss_ratio_10x`` (target <= 1.3), ``epoch_seconds_1x``, ``epoch_seconds_10x`` and the
frame counts.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MLEARN_CU = ROOT.parent / "shared" / "data" / "mlearn" / "Cu" / "training.json"
COPIES = 10


def write_sets(work: Path) -> dict[str, Path]:
    """``data.h5`` of mlearn Cu (``1x``) and of ten displaced copies of it (``10x``)."""
    from mlip.data import write_dataset
    from parsers import read

    frames = list(read(MLEARN_CU))
    rng = np.random.default_rng(0)
    paths = {"1x": work / "cu_1x.h5", "10x": work / "cu_10x.h5"}
    write_dataset(frames, paths["1x"])

    write_dataset((dataclasses.replace(f, positions=f.positions + rng.uniform(-0.02, 0.02, f.positions.shape),
                                       index=k * len(frames) + f.index)
                   for k in range(COPIES) for f in frames), paths["10x"])
    return paths


def train(data: Path, out: Path, epochs: int, sets: list[str]) -> dict[str, float]:
    """Train in a child process; its peak RSS (GB) and mean epoch seconds after the first."""
    cmd = [sys.executable, "-m", "mlip", "train", str(data), "--out", str(out), "--force",
           "--epochs", str(epochs), "--set", "train.threads=1"]
    for item in sets:
        cmd += ["--set", item]
    env = {**os.environ, "MLIP_PROGRESS": "0"}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # this process trains one child only
    with (out / "metrics.csv").open() as fh:
        seconds = [float(row["seconds"]) for row in csv.DictReader(fh)]
    return {"peak_rss_gb": peak_kb / 1e6, "epoch_seconds": float(np.mean(seconds[1:] or seconds))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument("--only", choices=["1x", "10x"], help="train one size only (its own process)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    if not MLEARN_CU.is_file():
        sys.exit(f"{MLEARN_CU} not found (../shared/data)")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        paths = {"1x": work / "cu_1x.h5", "10x": work / "cu_10x.h5"}
        if not all(p.is_file() for p in paths.values()):
            paths = write_sets(work)
        sizes = [args.only] if args.only else ["1x", "10x"]
        if not args.only:  # RUSAGE_CHILDREN keeps the largest child: each size in a process of its own
            result: dict[str, float | int | None] = {}
            for size in sizes:
                cmd = [sys.executable, __file__, "--epochs", str(args.epochs), "--work", str(work),
                       "--only", size]
                cmd += [word for item in args.sets for word in ("--set", item)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1]
                result.update(json.loads(out))
            result["peak_rss_ratio_10x"] = round(result["peak_rss_gb_10x"] / result["peak_rss_gb_1x"], 3)
            print(json.dumps(result))
            return
        size = args.only
        r = train(paths[size], work / f"run_{size}", args.epochs, args.sets)
        from mlip.data import Dataset

        print(f"{size}: {len(Dataset(paths[size]))} frames, peak RSS {r['peak_rss_gb']:.3f} GB, "
              f"epoch {r['epoch_seconds']:.2f} s")
        print(json.dumps({f"peak_rss_gb_{size}": round(r["peak_rss_gb"], 3),
                          f"epoch_seconds_{size}": round(r["epoch_seconds"], 2),
                          f"frames_{size}": len(Dataset(paths[size]))}))


if __name__ == "__main__":
    main()
