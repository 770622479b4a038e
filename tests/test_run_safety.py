"""Issue 19: no lost runs, no tracebacks, and a training run that says what it is doing.

Bad input gives one line naming the key, file or parameter, exit code 2 and nothing written;
an existing run is never written into except by --resume or --force; Ctrl-C and SIGTERM end
with one line and 130/143, and the resumed run's metrics are those of an uninterrupted run.
"""

from __future__ import annotations

import csv
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from click.testing import CliRunner

from mlip.cli import main
from mlip.train.checkpoint import load_checkpoint

TINY = ["--set", "model.hidden=[8]", "--set", "model.descriptors=[{type: rann_radial, re: 2.55, rc: 4.0, "
        "dr: 1.5, alpha: [3.0, 4.0], o: 0, n: 1}]", "--set", "train.checkpoint_every=1"]
ENV = {**os.environ, "MLIP_PROGRESS": "0", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """12 rattled 8-atom Cu cells (EMT) with energies, forces and stress, as extxyz."""
    rng = np.random.default_rng(3)
    frames = []
    for _ in range(12):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
        atoms.positions += rng.normal(0.0, 0.08, atoms.positions.shape)
        atoms.calc = EMT()
        results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(),
                   "stress": atoms.get_stress()}
        atoms.calc = SinglePointCalculator(atoms, **results)
        frames.append(atoms)
    path = tmp_path_factory.mktemp("cu") / "cu.xyz"
    write(path, frames, format="extxyz")
    return path


def invoke(*args: object, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False,
                              env={"MLIP_PROGRESS": "0", **(env or {})})


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> Path:
    """A finished two-epoch run."""
    out = tmp_path_factory.mktemp("runs") / "cu"
    res = invoke("train", data, "--epochs", 2, "--out", out, *TINY)
    assert res.exit_code == 0, res.output
    return out


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line(res) -> str:
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


# -- 1. runs are never lost ----------------------------------------------------------------------
def test_existing_run_is_refused_and_a_saved_config_starts_a_new_run(data, run):
    before = _digest(run)
    res = invoke("train", data, "--epochs", 1, "--out", run, *TINY)
    assert res.exit_code == 2
    line = _one_line(res)
    assert str(run) in line and f"--resume {run}" in line and "--force" in line
    res = invoke("train", "--config", run / "config.yaml", "--epochs", 1)
    assert res.exit_code == 0, res.output
    assert f"this new run goes to {run}-2" in res.output
    assert (run.with_name(f"{run.name}-2") / "model.pt").is_file()
    assert _digest(run) == before


def test_force_replaces_a_run_and_says_what_it_replaced(data, tmp_path):
    out = tmp_path / "cu"
    assert invoke("train", data, "--epochs", 2, "--out", out, *TINY).exit_code == 0
    res = invoke("train", data, "--epochs", 1, "--out", out, "--force", *TINY)
    assert res.exit_code == 0, res.output
    assert f"--force: replaced {out} (a run with 2 trained epochs and its model.pt)" in res.output
    assert len((out / "metrics.csv").read_text().splitlines()) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cu"]


def test_force_does_not_replace_a_folder_that_is_not_a_run(data, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    res = invoke("train", data, "--epochs", 1, "--out", tmp_path / "notes", "--force", *TINY)
    assert res.exit_code == 2 and "not an mlip run directory" in _one_line(res)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


# -- 2 and 4. bad config values and bad data: one line, exit 2, nothing written -------------------
@pytest.mark.parametrize("args, message", [
    (["--set", "train.epochs=abc"], "train.epochs = 'abc': expected an integer >= 1"),
    (["--set", "train.lr=fast"], "train.lr = 'fast': expected a number > 0"),
    (["--set", "model.hidden=64"], "model.hidden = 64: expected a list of integers >= 1, e.g. [64, 64]"),
    (["--batch-size", "0"], "train.batch_size = 0: expected an integer >= 1"),
    (["--epochs", "-3"], "train.epochs = -3: expected an integer >= 1"),
    (["--set", "train.device=cuda:x"], "train.device = 'cuda:x': expected cpu, cuda, cuda:N or mps"),
    (["--set", "model.descriptors=[{type: rann_radial, re: 2.5, rc: 4, dr: 1.5, alpha: [3.0], o: 0, n: 1}]"],
     "model.descriptors: RANN radial needs n - o + 1 = 2 alpha values, got 1"),
    (["--set", "model.descriptors=[{type: soap}]"], "model.descriptors: unknown descriptor type 'soap'"),
])
def test_bad_config_value_is_named_and_nothing_is_written(data, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    res = invoke("train", data, *args)
    assert res.exit_code == 2
    assert _one_line(res).startswith(f"mlip: error: {message}")
    assert list(tmp_path.iterdir()) == []


def test_failing_data_leaves_no_run_directory(tmp_path, monkeypatch):
    """Frames without energies are refused after they are read; neither the run directory, nor
    its hidden set-up folder, nor the runs/ folder made for it is left behind."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    write(tmp_path / "no_energy.xyz", [atoms, atoms], format="extxyz")
    monkeypatch.chdir(tmp_path)
    res = invoke("train", "no_energy.xyz", "--epochs", 1, *TINY)
    assert res.exit_code == 2 and "energ" in _one_line(res)
    res = invoke("train", "no_energy.xyz", "--epochs", 1, "--out", "deep/er/run", *TINY)
    assert res.exit_code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no_energy.xyz"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_said_before_anything_is_written(data, tmp_path):
    res = invoke("train", data, "--device", "cuda", "--out", tmp_path / "r", *TINY)
    assert res.exit_code == 2 and "CUDA is not available" in _one_line(res)
    assert list(tmp_path.iterdir()) == []


# -- 3. Ctrl-C and SIGTERM ------------------------------------------------------------------------
def _metric_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_says_how_to_resume_and_resume_gives_the_same_metrics(data, tmp_path, signum, code):
    """The signal lands inside an epoch (one frame per batch), after the first checkpoint; the
    resumed run's metrics rows, the interrupted epoch's included, equal an uninterrupted run's."""
    epochs = 6
    cmd = [sys.executable, "-m", "mlip", "train", str(data), "--epochs", str(epochs), "--batch-size", "1",
           "--set", "train.early_stopping=0", *TINY]
    ref = tmp_path / "ref"
    subprocess.run([*cmd, "--out", str(ref)], check=True, env=ENV, capture_output=True)

    out = tmp_path / "stopped"
    proc = subprocess.Popen([*cmd, "--out", str(out)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    last = out / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    ckpt = load_checkpoint(last)
    assert ckpt["epoch"] < epochs, "the run finished before the signal"
    assert stderr.strip().splitlines() == [
        f"mlip: interrupted at epoch {ckpt['epoch'] + 1}; resume with: mlip train --resume {out}"]
    assert not (out / "model.pt").exists()

    res = subprocess.run([sys.executable, "-m", "mlip", "train", "--resume", str(out)], env=ENV,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert _metric_rows(out / "metrics.csv") == _metric_rows(ref / "metrics.csv")


def test_sigterm_during_set_up_leaves_nothing(data, tmp_path):
    """A signal while the data is read and the model set up: exit 143, one line, and neither the
    run directory nor its hidden set-up folder remains. (The frames repeated 40 times make the
    set-up last long enough to be hit.)"""
    from ase.io import read

    many = tmp_path.parent / f"{tmp_path.name}-many.xyz"
    write(many, read(data, index=":") * 40, format="extxyz")
    proc = subprocess.Popen([sys.executable, "-m", "mlip", "train", str(many), "--out", str(tmp_path / "r"),
                             *TINY], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(tmp_path.glob(".r.new-*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert stderr.strip().splitlines() == ["mlip: interrupted"]
    assert list(tmp_path.iterdir()) == []


# -- 5. messages that say what is wrong -----------------------------------------------------------
def test_training_checkpoint_as_model_says_so(run):
    res = invoke("info", run / "checkpoints" / "last.pt")
    assert res.exit_code == 2
    line = _one_line(res)
    assert "training checkpoint" in line and f"mlip export {run}" in line and "corrupt" not in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_says_so_in_evaluate_and_the_calculator(data, run):
    from mlip import MLIPCalculator
    from mlip.errors import UserError

    res = invoke("evaluate", run, data, "--device", "cuda")
    assert res.exit_code == 2 and "CUDA is not available" in _one_line(res)
    for model in (run / "model.pt", run):
        with pytest.raises(UserError, match="CUDA is not available"):
            MLIPCalculator(model, device="cuda")


# -- 6. what a run says -----------------------------------------------------------------------------
def test_a_run_says_what_it_trains_how_it_goes_and_how_it_ended(data, tmp_path):
    # MLIP_PROGRESS=auto with stdout not a terminal: a plain line per epoch (here, of 3)
    res = invoke("train", data, "--epochs", 3, "--out", tmp_path / "r", *TINY, env={"MLIP_PROGRESS": "auto"})
    assert res.exit_code == 0, res.output
    out = res.output
    for text in ("elements: Cu", "cutoff: 4 Å (from model.descriptors)", "features per atom",
                 "parameters", "frames: 12 from 1 source: 11 train, 1 validation",
                 "labels used: energy (11 of 11 train frames, weight 10", "forces (11 of 11 train frames",
                 "labels ignored: stress present in 11 train frames, stress weight 0: not used",
                 "epoch 1/3: train E", "| val E", "epoch 3/3", "best validation: epoch",
                 "last validation: epoch 3", f"model: {tmp_path / 'r' / 'model.pt'}", "time: "):
        assert text in out, text
    quiet = invoke("train", data, "--epochs", 2, "--out", tmp_path / "q", *TINY).output
    assert "epoch 1/2" not in quiet and "labels used" in quiet


def test_help_documents_progress_and_force():
    res = invoke("train", "--help")
    assert "MLIP_PROGRESS" in res.output and "--force" in res.output


def test_info_prints_a_table_and_json_on_request(run):
    import json

    res = invoke("info", run)
    assert res.exit_code == 0
    rows = dict(line.split(None, 1) for line in res.output.splitlines() if line.strip())
    assert rows["elements"] == "Cu" and rows["cutoff"] == "4 Å" and rows["physics"] == "none"
    meta = json.loads(invoke("info", run, "--json").output)
    assert meta["elements"] == ["Cu"]


# -- 7. plots -----------------------------------------------------------------------------------------
def test_plots_mark_stage_two_and_name_split_errors_and_elements(monkeypatch, tmp_path):
    from matplotlib.figure import Figure

    from mlip import plots

    figures: list[Figure] = []
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: figures.append(self))
    history = [{"epoch": e, "train_energy_mae_meV_atom": 1.0 / (e + 1), "val_energy_mae_meV_atom": 1.0,
                "train_force_mae_eV_A": 0.1, "val_force_mae_eV_A": 0.2} for e in range(5)]
    data = plots.ParitySet("validation", np.array([0.0, 1.0]), np.array([0.5, 1.0]), np.array(["Cu", "CuNi"]),
                           np.array([1.0, 2.0, np.nan, 4.0]), np.array([1.0, 1.0, 0.0, 4.0]),
                           np.array(["Cu", "Ni", "Ni", "Cu"]))
    plots.write_plots(tmp_path, history, 3, data)
    curve, energy, forces = figures
    assert any(line.get_label() == "stage two starts" for line in curve.axes[0].get_lines())
    title = energy.axes[0].get_title()
    assert "validation frames" in title and "MAE 0.25" in title and "RMSE 0.3536" in title
    assert "N = 2" in title
    assert "N = 3" in forces.axes[0].get_title()
    assert [t.get_text() for t in forces.axes[0].get_legend().get_texts()] == ["Cu", "Ni"]


def test_learning_curve_of_energy_only_data(tmp_path):
    """Energy-only data (yttrium): the force panel has no finite values; with stage two marked and
    a log scale it used to raise, ending the run after training."""
    from mlip import plots

    history = [{"epoch": e, "train_energy_mae_meV_atom": 1.0 / (e + 1), "val_energy_mae_meV_atom": 1.0,
                "train_force_mae_eV_A": np.nan, "val_force_mae_eV_A": np.nan} for e in range(5)]
    plots.learning_curve(history, tmp_path / "curve.png", 3)
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_plots_do_not_import_the_trainer():
    import ast

    import mlip.plots as plots

    tree = ast.parse(Path(plots.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    assert not any("trainer" in name for name in imported)
