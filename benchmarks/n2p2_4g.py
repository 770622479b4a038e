"""Imported n2p2 4G-HDNNPs (Ko et al. 2021) on their training data, against DFT and the published
4G errors.

For each system, import the model of ``../shared/data/longrange_4g`` with
:func:`mlip.interop.n2p2_4g.load` (the ``prediction_reference`` models, whose input.nn matches
their weight files; for water also ``nnp-predict/H2O_RPBE-D3_4G``, the n2p2-trained model of that
data: the ``water-test`` model is RuNNer's example and not a fit to it), evaluate every frame of
``nnp-train/<system>/input.data`` (batches of 8, each frame with its total charge) and report the
energy (meV/atom), force (meV/Å) and charge (milli-e, against the Hirshfeld charges) RMSE
against the file's DFT labels, the published 4G test RMSE of the same system where
``reference/mlearn_published_and_recomputed.json`` has it (Ko et al. 2021 via SpookyNet's Table 1;
those are test-set errors of the full data sets, these are the small training subsets shipped
here), and the evaluation time. The last line printed is one JSON object keyed by system.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/n2p2_4g.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

from mlip.export import model_metadata  # noqa: E402
from mlip.inference import predict_frames  # noqa: E402
from mlip.interop import n2p2_4g  # noqa: E402
from parsers.runner import read_runner  # noqa: E402

LONGRANGE = DATA / "longrange_4g"
# system -> (training data, model directories, key of the published errors)
SYSTEMS = {
    "Carbon_chain": ("Carbon_chain_4G", ["prediction_reference/carbon-chain2/nnp-predict"], "C10H2/C10H3+"),
    "AlAuMgO": ("AlAuMgO_4G", ["prediction_reference/AlAuMgO/nnp-predict"], "Au2-MgO"),
    "water": ("H2O_RPBE-D3_4G", ["nnp-predict/H2O_RPBE-D3_4G", "prediction_reference/water-test/nnp-predict"],
              None),
}


def rmse(values: list[np.ndarray]) -> float:
    return float(np.sqrt(np.mean(np.concatenate([np.ravel(v) for v in values]) ** 2)))


def run(model_dir: Path, frames: list) -> dict:
    model = n2p2_4g.load(model_dir)
    meta = {**model_metadata(model), "long_range": True}
    t0 = time.perf_counter()
    pred = predict_frames(model, meta, frames, batch_size=8, stress=False)
    seconds = time.perf_counter() - t0
    pairs = list(zip(pred, frames, strict=True))
    return {
        "model": str(model_dir.relative_to(LONGRANGE)), "frames": len(frames),
        "atoms": sum(len(f) for f in frames), "coulomb_cutoff_A": round(model.qeq.engine.cutoff, 3),
        "E_rmse_meV_atom": round(1000 * rmse([(p["energy"] - f.energy) / len(f) for p, f in pairs]), 3),
        "F_rmse_meV_A": round(1000 * rmse([p["forces"] - f.forces for p, f in pairs]), 2),
        "Q_rmse_me": round(1000 * rmse([p["charges"] - f.charges for p, f in pairs]), 3),
        "max_total_charge_error_e": float(max(abs(p["charges"].sum() - f.total_charge) for p, f in pairs)),
        "eval_seconds": round(seconds, 2), "eval_ms_per_frame": round(1000 * seconds / len(frames), 1),
    }


def main() -> None:
    published = json.loads((DATA / "reference" / "mlearn_published_and_recomputed.json").read_text())
    published = published["Ko2021_4G_HDNNP_RMSE_via_SpookyNet_Table1"]
    results = {}
    for name, (train, model_dirs, key) in SYSTEMS.items():
        frames = list(read_runner(LONGRANGE / "nnp-train" / train / "input.data"))
        rows = [run(LONGRANGE / d, frames) for d in model_dirs]
        for row in rows:
            print(name, json.dumps(row))
        results[name] = {"runs": rows, "published_4G_E_F_Q": published[key]["4G"] if key else None}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
