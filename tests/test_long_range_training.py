"""Training with long-range physics end to end: ``mlip train --physics ewald`` on ionic data
written by LAMMPS (NaCl, Born–Mayer + Ewald, neutral and charged cells), learned charges
summing to each frame's total charge, and supervised charges (``train.charge_weight``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mlip.cli import main
from mlip.data.store import write_dataset
from mlip.demo.nacl import Config, run_config
from mlip.inference import load_model, predict_frames
from parsers import Frame

SMALL = ["--set", "model.hidden=[8]", "--batch-size", "2", "--set", "train.scheduler=plateau",
         "--set", "train.energy_weight=1", "--set", "train.force_weight=1", "--set", "train.ema_decay=0",
         "--set", "data.val_fraction=0", "--set", "train.stage_two_fraction=0"]


@pytest.fixture(scope="module")
def nacl(tmp_path_factory) -> tuple[Path, list[Frame]]:
    """A data.h5 of 8 NaCl frames (bulk, Na vacancy Q = −1 e, Cl vacancy Q = +1 e, vacancy pair)
    with LAMMPS energies, forces and the ions' charges ±1 e."""
    configs = [Config("bulk", 300.0, seed=1), Config("na_vacancy", 300.0, seed=2),
               Config("cl_vacancy", 300.0, (0.02, 0.0, -0.01), seed=3), Config("vacancy_pair", 300.0, seed=4)]
    frames = [f for cfg in configs for f in run_config(cfg, 2, every=20, equilibrate=20)]
    path = tmp_path_factory.mktemp("nacl") / "nacl.h5"
    write_dataset(frames, path)
    return path, frames


def invoke(*args) -> None:
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, env={"MLIP_PROGRESS": "0"})
    assert res.exit_code == 0, res.output


def charge_mae(run: Path, frames: list[Frame]) -> tuple[float, list[dict]]:
    module, meta = load_model(run / "model.pt")
    preds = predict_frames(module, meta, frames, stress=False)
    err = np.concatenate([p["charges"] - f.charges for p, f in zip(preds, frames, strict=True)])
    return float(np.mean(np.abs(err))), preds


def test_ewald_trains_through_cli_and_charges_sum_to_total_charge(nacl, tmp_path):
    data, frames = nacl
    assert sorted({f.total_charge for f in frames}) == [-1.0, 0.0, 1.0]
    run = tmp_path / "run"
    invoke("train", data, "--physics", "ewald", "--epochs", 2, "--out", run, *SMALL)
    assert (run / "model.pt").is_file()
    _, preds = charge_mae(run, frames)
    for p, f in zip(preds, frames, strict=True):
        assert p["charges"].shape == (len(f),)
        assert np.ptp(p["charges"]) > 1e-6  # environment/element dependent, not all equal
        assert abs(p["charges"].sum() - f.total_charge) < 1e-10
        assert np.isfinite(p["energy"]) and np.isfinite(p["forces"]).all()
    metrics = (run / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 3


def test_charge_weight_reduces_charge_error(nacl, tmp_path):
    data, frames = nacl
    common = ["--physics", "ewald", "--epochs", 6, "--seed", 0, *SMALL, "--set", "train.lr=0.02"]
    invoke("train", data, "--out", tmp_path / "plain", *common)
    invoke("train", data, "--out", tmp_path / "supervised", *common, "--set", "train.charge_weight=1000")
    plain, _ = charge_mae(tmp_path / "plain", frames)
    supervised, _ = charge_mae(tmp_path / "supervised", frames)
    print(f"charge MAE: supervised {supervised:.3f} e, energies and forces only {plain:.3f} e")
    assert supervised < 0.5 * plain, (supervised, plain)
    assert supervised < 0.5  # predicting zero charges gives 1 e
