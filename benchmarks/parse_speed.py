"""Throughput of parsers.read on a large LAMMPS ``dump custom`` file, against ASE.

Writes a ~200 MB dump with LAMMPS itself (Cu EAM MD, 4000 atoms per frame,
columns ``id type x y z fx fy fz c_pe`` at ``%.17g``) into a temporary folder,
then reads it completely with ``list(parsers.read(path, types={1: "Cu"}))``,
with the dump reader alone (``parsers.lammps_dump.read_lammps_dump``, without
the checks parsers.read adds to each Frame) and with ``ase.io.read(path,
format="lammps-dump-text", index=":")``: each read in a child process of its
own, the readers taking turns, ``--repeats`` rounds. Each child reports wall
clock and CPU time, and its peak memory: the growth of its peak resident set
size (``VmHWM``) during the read, after imports (all readers keep every frame,
as a training set build does).

The fourth reader, ``pandas``, is the floor of a reader built on pandas: one
call of pandas' C reader over the whole file (the dump reader's options), the
header lines skipped by their line numbers (known in advance for the dumps
this script writes), tables of ``BATCH_LINES`` rows dropped once parsed; no
headers are read and no frames built.

The last line printed is one JSON object: per reader the median wall and CPU
seconds (and every run's wall seconds), the throughput in MB/s (MB = 10⁶
bytes, median wall time), the peak memory and its ratio to the file size, and
the speedups over ASE: of the median wall times, of the median CPU times (the
steadier figure on a shared machine), and round by round.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/parse_speed.py [--mb 200] [--size 10] \
        [--repeats 3] [--keep DIR | --dump F]

``--size 2`` writes frames of 32 atoms, where the cost per frame matters more.
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

BYTES_PER_ATOM_LINE = 145  # measured for these columns at %.17g
SIZE = 10  # fcc cells per edge, by default: 4000 atoms
READERS = ("parsers", "reader", "ase", "pandas")


def _peak_rss() -> int:
    """This process's peak resident set size in bytes: ``VmHWM`` from /proc (Linux),
    which unlike ``ru_maxrss`` does not start from the parent's size at fork."""
    with open("/proc/self/status") as fh:
        kib = next(line.split()[1] for line in fh if line.startswith("VmHWM:"))
    return int(kib) * 1024


def _pandas_reader(path: str) -> Callable[[], list]:
    """The floor: a function that reads all atom lines of ``path`` (a dump whose headers are 9
    lines and whose frames have one atom count, as this script writes them) with one call of
    pandas' C reader over the file, the header lines skipped by line number, a table of the
    whole frames in about BATCH_LINES rows at a time, each dropped once parsed (the dump
    reader's options); it returns one table per frame, all empty but the last, (n, 9). The line
    numbers are counted here, before the clock starts."""
    import numpy as np
    import pandas as pd

    from parsers.lammps_dump import _READ_CSV, BATCH_LINES

    n_frames, n_atoms = _count_frames(Path(path))
    headers = {k * (9 + n_atoms) + j for k in range(n_frames) for j in range(9)}
    rows_per_table = max(1, BATCH_LINES // n_atoms) * n_atoms

    def read() -> list:
        rows = 0
        for table in pd.read_csv(path, sep=" ", dtype=np.float64, skiprows=headers, chunksize=rows_per_table,
                                 **_READ_CSV):
            values = table.to_numpy(np.float64)
            rows += len(values)
        tables = [np.empty((0, values.shape[1])) for _ in range(rows // n_atoms)]
        tables[-1] = values[-n_atoms:]
        return tables

    return read


def _child(reader: str, path: str) -> None:
    """Read the whole file with ``reader`` (one of READERS) and print its measurements as JSON."""
    import numpy as np

    if reader == "pandas":
        read = _pandas_reader(path)
    elif reader == "parsers":
        import parsers

        def read() -> list:
            return list(parsers.read(path, types={1: "Cu"}))
    elif reader == "reader":
        from parsers.lammps_dump import read_lammps_dump

        def read() -> list:
            return list(read_lammps_dump(path, types={1: "Cu"}))
    else:
        import ase.io

        def read() -> list:
            return ase.io.read(path, format="lammps-dump-text", index=":")

    peak_before = _peak_rss()
    start, cpu_start = time.perf_counter(), time.process_time()
    frames = read()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    last = frames[-1]
    if reader == "pandas":
        positions, forces = last[:, 2:5], last[:, 5:8]
    else:
        positions = last.get_positions() if reader == "ase" else last.positions
        forces = last.get_forces() if reader == "ase" else last.forces
    print(json.dumps({
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "frames": len(frames),
        "peak_memory_bytes": _peak_rss() - peak_before,
        "checksum": float(np.sum(positions) + np.sum(forces)),
    }))


def _run_child(reader: str, path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", reader, str(path)], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _count_frames(dump: Path) -> tuple[int, int]:
    """(frames, atoms in the first frame) of a dump, streamed line by line (a
    child starts with this process's peak RSS)."""
    n_frames, n_atoms, previous = 0, 0, b""
    with open(dump, "rb") as fh:
        for line in fh:
            n_frames += line.startswith(b"ITEM: TIMESTEP")
            if n_frames == 1 and previous.startswith(b"ITEM: NUMBER OF ATOMS"):
                n_atoms = int(line)
            previous = line
    return n_frames, n_atoms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=200.0, help="approximate dump size in MB (default 200)")
    ap.add_argument("--size", type=int, default=SIZE,
                    help=f"fcc cells per edge of the written dump (4 size^3 atoms per frame; default {SIZE})")
    ap.add_argument("--repeats", type=int, default=3, help="rounds of the three readers (default 3)")
    ap.add_argument("--keep", type=Path, help="write the dump into this folder and keep it")
    ap.add_argument("--dump", type=Path, help="read this dump (from an earlier --keep), write none")
    ap.add_argument("--child", nargs=2, metavar=("READER", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(*args.child)
        return

    from mlip.demo.cu_eam import write_cu_eam_dumps

    with tempfile.TemporaryDirectory() as tmp:
        if args.dump:
            dump = args.dump
        else:
            n_atoms = 4 * args.size**3
            n_frames = max(2, round(args.mb * 1e6 / (n_atoms * BYTES_PER_ATOM_LINE)))
            start = time.perf_counter()
            run = write_cu_eam_dumps(args.keep or Path(tmp), n_frames=n_frames, every=1, size=args.size,
                                     temperature=600.0)
            dump = run.dump
            print(f"wrote {dump} in {time.perf_counter() - start:.1f} s")
        n_frames, n_atoms = _count_frames(dump)
        size = dump.stat().st_size
        print(f"reading {dump} ({size / 1e6:.1f} MB, {n_frames} x {n_atoms} atoms)")
        runs: dict[str, list[dict]] = {reader: [] for reader in READERS}
        for _ in range(args.repeats):
            for reader in READERS:
                runs[reader].append(_run_child(reader, dump))
                print(f"{reader}: {runs[reader][-1]}")
    checksum = runs["ase"][0]["checksum"]
    for reader in READERS:
        assert all(r["frames"] == n_frames for r in runs[reader]), reader
        assert abs(runs[reader][0]["checksum"] - checksum) < 1e-6 * abs(checksum), reader
    mb = size / 1e6
    result: dict = {"benchmark": "parse_speed", "file_mb": round(mb, 1), "frames": n_frames,
                    "atoms_per_frame": n_atoms}
    for reader in READERS:
        seconds = statistics.median(r["seconds"] for r in runs[reader])
        peak = max(r["peak_memory_bytes"] for r in runs[reader])
        result[reader] = {
            "s": round(seconds, 3),
            "cpu_s": round(statistics.median(r["cpu_seconds"] for r in runs[reader]), 3),
            "runs_s": [round(r["seconds"], 3) for r in runs[reader]],
            "mb_per_s": round(mb / seconds, 1),
            "peak_memory_mb": round(peak / 1e6, 1),
            "peak_memory_over_file": round(peak / size, 2),
        }
    for reader in ("parsers", "reader", "pandas"):
        result[f"{reader}_speedup_vs_ase"] = round(result["ase"]["s"] / result[reader]["s"], 2)
        result[f"{reader}_speedup_vs_ase_cpu"] = round(result["ase"]["cpu_s"] / result[reader]["cpu_s"], 2)
        result[f"{reader}_speedup_vs_ase_per_round"] = [
            round(a["seconds"] / r["seconds"], 2) for a, r in zip(runs["ase"], runs[reader], strict=True)
        ]
    result.update(cpus=os.cpu_count(), load_average=[round(x, 2) for x in os.getloadavg()],
                  omp_num_threads=os.environ.get("OMP_NUM_THREADS"))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
