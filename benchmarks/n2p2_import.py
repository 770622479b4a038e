"""Imported n2p2 NNPs (Zuo et al. 2020, mlearn) against an independent evaluator of the same models.

For each element: import ``../shared/data/n2p2_nnp/<El>`` with :func:`mlip.interop.n2p2.load`,
evaluate every structure of ``../shared/data/mlearn/<El>/test.json`` with mlip (batches of 8,
energies and forces), and report the largest deviation from the independent evaluator's
predictions (``reference_predictions.json``: all energies, forces of the first five structures),
the MAE against DFT next to the recomputed NNP MAE of
``reference/mlearn_published_and_recomputed.json``, and the evaluation time. The last line
printed is one JSON object keyed by element.

Usage (from the repository root)::

    .venv/bin/python benchmarks/n2p2_import.py Cu Li Mo Si
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

from mlip.export import model_metadata  # noqa: E402
from mlip.inference import predict_frames  # noqa: E402
from mlip.interop import n2p2  # noqa: E402
from parsers import read  # noqa: E402


def run_element(element: str, reference: list[dict], recomputed: dict) -> dict:
    model = n2p2.load(DATA / "n2p2_nnp" / element)
    frames = list(read(DATA / "mlearn" / element / "test.json"))
    t0 = time.perf_counter()
    pred = predict_frames(model, model_metadata(model), frames, batch_size=8, stress=False)
    seconds = time.perf_counter() - t0
    n_atoms = sum(len(f) for f in frames)
    de = max(abs(p["energy"] - r["energy_eV"]) / len(f)
             for p, r, f in zip(pred, reference, frames, strict=True))
    df = max(float(np.abs(p["forces"] - np.array(r["forces_eV_per_A"])).max())
             for p, r in zip(pred, reference, strict=True) if r.get("forces_eV_per_A") is not None)
    e_mae = np.mean([abs(p["energy"] - f.energy) / len(f) for p, f in zip(pred, frames, strict=True)]) * 1000
    f_mae = np.mean(np.concatenate([np.abs(p["forces"] - f.forces).ravel()
                                    for p, f in zip(pred, frames, strict=True)]))
    return {"structures": len(frames), "atoms": n_atoms,
            "max_dE_per_atom_vs_reference_eV": float(de), "max_dF_vs_reference_eV_A": df,
            "E_mae_meV_atom": round(float(e_mae), 3), "F_mae_eV_A": round(float(f_mae), 4),
            "recomputed_E_mae": recomputed["E"][element], "recomputed_F_mae": recomputed["F"][element],
            "eval_seconds": round(seconds, 2), "eval_us_per_atom": round(seconds / n_atoms * 1e6, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("elements", nargs="+", choices=["Cu", "Li", "Mo", "Si"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reference = json.loads((DATA / "n2p2_nnp" / "reference_predictions.json").read_text())
    recomputed = json.loads((DATA / "reference" / "mlearn_published_and_recomputed.json").read_text())
    recomputed = recomputed["recomputed_here_from_published_mvl_models_on_mlearn_test"]["NNP"]
    results = {}
    for element in args.elements:
        results[element] = run_element(element, reference[element], recomputed)
        print(element, results[element], flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
