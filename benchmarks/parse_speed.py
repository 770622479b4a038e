"""Throughput of parsers.read on a large LAMMPS ``dump custom`` file, against ASE.

Writes a ~200 MB dump with LAMMPS itself (Cu EAM MD, 4000 atoms, columns
``id type x y z fx fy fz c_pe`` at ``%.17g``) into a temporary folder, then
reads it completely, once with ``list(parsers.read(path, types={1: "Cu"}))``
and once with ``ase.io.read(path, format="lammps-dump-text", index=":")``,
each in its own child process, timing wall clock and CPU time (the CPU
time ratio is the steadier one on a shared machine; the calling thread's CPU
time is the part that other threads did not take over), with CPU time split into
user and system time and the page faults counted (fresh memory is expensive
on virtual machines). Peak memory is the growth of the child's peak resident
set size (``VmHWM``) during the read, after imports; both keep all frames in
memory, as a training set build would.

The last line printed is one JSON object with both throughputs (MB/s, MB =
10⁶ bytes), ``speedup_vs_ase``, the peak memory and the number of threads
parsers used for the atom blocks (``parse_threads``: ``MLIP_PARSE_THREADS``,
else the usable cores, at most 8).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/parse_speed.py [--mb 200] [--size 10] \
        [--keep DIR | --dump F] [--phases] [--scan]

``--size 2`` writes frames of 32 atoms, where the cost per frame (headers,
Frame building) matters more than the scan.

``--phases`` adds a third child that runs the dump reader's own loop step by
step and reports the CPU time of each step, and the CPU time of just reading
the file. ``--scan`` adds a child that times the compiled scanner alone
(``parsers._dumpscan.parse_rows``) on all atom lines held in memory, with one
thread and with ``parse_threads``, best of five, in ns per field: the floor
under the reader's time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BYTES_PER_ATOM_LINE = 145  # measured for these columns at %.17g
SIZE = 10  # fcc cells per edge, by default: 4000 atoms


def _peak_rss() -> int:
    """This process's peak resident set size in bytes: ``VmHWM`` from /proc (Linux),
    which unlike ``ru_maxrss`` does not start from the parent's size at fork."""
    with open("/proc/self/status") as fh:
        kib = next(line.split()[1] for line in fh if line.startswith("VmHWM:"))
    return int(kib) * 1024


def _read_by_phase(path: str, phases: dict[str, float]) -> list:
    """The dump reader's own loop (parsers.lammps_dump internals), adding the CPU
    time of each step to ``phases``: header lines, atom block (file reads and
    the compiled scan), Frame building (sorting by id, copies into new arrays)."""
    from parsers.elements import parse_types
    from parsers.lammps_dump import _AtomTable, _FrameMemory, _Scratch
    from parsers.lammps_dump_header import HeaderReader
    from parsers.textio import LineReader

    type_map, scratch, memory = parse_types({1: "Cu"}), _Scratch(), _FrameMemory()
    headers = HeaderReader(None)
    frames, clock = [], time.process_time
    with LineReader(path) as reader:
        while True:
            t0 = clock()
            header = headers.read(reader)
            t1 = clock()
            phases["header"] += t1 - t0
            if header is None:
                return frames
            table = _AtomTable(reader, header, scratch, type_map, None)
            table.finish(reader)
            t2 = clock()
            phases["atom_block"] += t2 - t1
            frames.append(table.frame(len(frames), memory))
            phases["frame"] += clock() - t2


def _scan_alone(path: str) -> dict:
    """The compiled scanner alone on every atom line of the dump (copied into
    one buffer): best of five wall-clock times (so not the first writes to
    the output array) with one thread and with default_threads(), in s and
    ns per field; before it, the time to touch as much fresh memory as the
    frames need."""
    import numpy as np

    from parsers._dumpscan import DONE, parse_rows
    from parsers.textio import default_threads

    with open(path, "rb") as fh:
        lines, columns, in_atoms = [], 0, False
        for line in fh:
            if line.startswith(b"ITEM:"):
                in_atoms = line.startswith(b"ITEM: ATOMS")
                columns = len(line.split()) - 2 if in_atoms else columns
            elif in_atoms:
                lines.append(line)
    text = b"".join(lines)
    # First writes to fresh memory, as much as the frames keep (positions, forces, numbers:
    # 7 x 8 bytes per atom), in blocks of 8 MB as parsers.read cuts them: the cost that
    # comes on top of the scan, which on a virtual machine varies from run to run.
    usage, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    blocks = [np.empty(8 << 20, np.uint8) for _ in range(-(-len(lines) * 56 // (8 << 20)))]
    for block in blocks:
        block[::4096] = 1
    touched = resource.getrusage(resource.RUSAGE_SELF)
    del blocks
    result = {
        "fresh_memory_mb": round(len(lines) * 56 / 1e6, 1),
        "fresh_memory_s": round(time.perf_counter() - start, 4),
        "fresh_memory_system_s": round(touched.ru_stime - usage.ru_stime, 4),
    }
    out = np.zeros((len(lines), columns))
    # the last column (c_pe in this benchmark's dump) is checked, not converted, as parsers.read does
    kinds = bytes(2 if c == columns - 1 else 0 for c in range(columns))
    result.update(lines=len(lines), fields=len(lines) * columns)
    for threads in sorted({1, default_threads()}):
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            assert parse_rows(text, 0, len(text), out, 0, kinds, None, threads)[2] == DONE
            best = min(best, time.perf_counter() - start)
        result[f"threads_{threads}_s"] = round(best, 4)
        result[f"threads_{threads}_ns_per_field"] = round(best / result["fields"] * 1e9, 2)
    return result


def _child(reader: str, path: str) -> None:
    """Read the whole file with one reader and print its measurements as JSON."""
    import numpy as np

    phases: dict[str, float] = {}
    if reader == "scan":
        print(json.dumps(_scan_alone(path)))
        return
    if reader == "mlip":
        import parsers

        def read():
            return list(parsers.read(path, types={1: "Cu"}))
    elif reader == "mlip-phases":
        phases.update(header=0.0, atom_block=0.0, frame=0.0)

        def read():
            return _read_by_phase(path, phases)
    else:
        import ase.io

        def read():
            return ase.io.read(path, format="lammps-dump-text", index=":")

    usage, peak_before = resource.getrusage(resource.RUSAGE_SELF), _peak_rss()
    start, cpu_start, main_start = time.perf_counter(), time.process_time(), time.thread_time()
    frames = read()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    main_cpu_seconds = time.thread_time() - main_start
    after = resource.getrusage(resource.RUSAGE_SELF)
    last = frames[-1]
    positions = last.get_positions() if reader == "ase" else last.positions
    forces = last.get_forces() if reader == "ase" else last.forces
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "main_thread_cpu_seconds": main_cpu_seconds,
                "user_seconds": after.ru_utime - usage.ru_utime,
                "system_seconds": after.ru_stime - usage.ru_stime,
                "page_faults": after.ru_minflt - usage.ru_minflt,
                "frames": len(frames),
                "peak_memory_bytes": _peak_rss() - peak_before,
                "checksum": float(np.sum(positions) + np.sum(forces)),
                **({"phases_cpu_seconds": phases} if phases else {}),
            }
        )
    )


def _run_child(reader: str, path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", reader, str(path)], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=200.0, help="approximate dump size in MB (default 200)")
    ap.add_argument("--size", type=int, default=SIZE,
                    help=f"fcc cells per edge of the written dump (4 size^3 atoms per frame; default {SIZE})")
    ap.add_argument("--keep", type=Path, help="write the dump into this folder and keep it")
    ap.add_argument("--dump", type=Path, help="read this dump (from an earlier --keep), write none")
    ap.add_argument("--phases", action="store_true", help="also time parsers' steps (header, atoms, Frame)")
    ap.add_argument("--scan", action="store_true", help="also time the scanner alone, lines in memory")
    ap.add_argument("--child", nargs=2, metavar=("READER", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(*args.child)
        return

    from mlip.demo.cu_eam import write_cu_eam_dumps
    from parsers.textio import default_threads

    n_atoms = 4 * args.size**3
    n_frames = max(2, round(args.mb * 1e6 / (n_atoms * BYTES_PER_ATOM_LINE)))
    with tempfile.TemporaryDirectory() as tmp:
        if args.dump:
            dump = args.dump
            with open(dump, "rb") as fh:  # streamed: a child starts with this process's peak RSS
                n_frames, previous = 0, b""
                for line in fh:
                    n_frames += line.startswith(b"ITEM: TIMESTEP")
                    if n_frames == 1 and previous.startswith(b"ITEM: NUMBER OF ATOMS"):
                        n_atoms = int(line)
                    previous = line
        else:
            start = time.perf_counter()
            folder = args.keep or Path(tmp)
            run = write_cu_eam_dumps(folder, n_frames=n_frames, every=1, size=args.size, temperature=600.0)
            dump = run.dump
            print(f"wrote {dump} in {time.perf_counter() - start:.1f} s")
        size = dump.stat().st_size
        print(f"reading {dump} ({size / 1e6:.1f} MB, {n_frames} x {n_atoms} atoms)")
        ours = _run_child("mlip", dump)
        print(f"parsers.read: {ours}")
        theirs = _run_child("ase", dump)
        print(f"ase.io.read:  {theirs}")
        if args.phases:
            by_phase = _run_child("mlip-phases", dump)
            print(f"parsers, step by step: {by_phase}")
            with open(dump, "rb") as fh:  # the file reads alone, in the reader's 4 MB chunks
                buffer, cpu_start = bytearray(4 << 20), time.process_time()
                while fh.readinto(buffer):
                    pass
                print(f"file reads alone: {time.process_time() - cpu_start:.3f} s CPU")
        if args.scan:
            print(f"scanner alone: {_run_child('scan', dump)}")
    assert ours["frames"] == theirs["frames"] == n_frames
    assert abs(ours["checksum"] - theirs["checksum"]) < 1e-6 * abs(theirs["checksum"])
    mb = size / 1e6
    result = {
        "benchmark": "parse_speed",
        "file_mb": round(mb, 1),
        "frames": n_frames,
        "atoms_per_frame": n_atoms,
        "mlip_s": round(ours["seconds"], 3),
        "ase_s": round(theirs["seconds"], 3),
        "mlip_mb_per_s": round(mb / ours["seconds"], 1),
        "ase_mb_per_s": round(mb / theirs["seconds"], 1),
        "speedup_vs_ase": round(theirs["seconds"] / ours["seconds"], 2),
        "mlip_cpu_s": round(ours["cpu_seconds"], 3),
        "ase_cpu_s": round(theirs["cpu_seconds"], 3),
        "speedup_vs_ase_cpu_time": round(theirs["cpu_seconds"] / ours["cpu_seconds"], 2),
        "mlip_main_thread_cpu_s": round(ours["main_thread_cpu_seconds"], 3),
        "mlip_user_s": round(ours["user_seconds"], 3),
        "mlip_system_s": round(ours["system_seconds"], 3),
        "ase_user_s": round(theirs["user_seconds"], 3),
        "ase_system_s": round(theirs["system_seconds"], 3),
        "mlip_page_faults": ours["page_faults"],
        "ase_page_faults": theirs["page_faults"],
        "mlip_peak_memory_mb": round(ours["peak_memory_bytes"] / 1e6, 1),
        "ase_peak_memory_mb": round(theirs["peak_memory_bytes"] / 1e6, 1),
        "mlip_peak_memory_over_file": round(ours["peak_memory_bytes"] / size, 2),
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "parse_threads": default_threads(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
