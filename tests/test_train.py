"""Training end to end on dumps written by LAMMPS: CLI, run directory, evaluation,
resume after SIGKILL, bad input, and 2-process data-parallel training."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mlip.cli import main
from mlip.demo.cu_eam import write_cu_eam_dumps, write_rann_cu_dumps
from mlip.train.checkpoint import load_checkpoint

# Tiny runs at the one energy weight these tests were written for (the default, 10, leaves a
# few-epoch validation energy of the small split too noisy for the DDP-vs-single comparison; the
# default stage two would make the best epoch the first of its stage).
SMALL = ["--set", "model.hidden=[8]", "--batch-size", "4", "--set", "train.checkpoint_every=1",
         "--set", "train.energy_weight=1000", "--set", "train.stage_two_fraction=0"]
ENV = {**os.environ, "MLIP_PROGRESS": "0", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def dumps(tmp_path_factory) -> Path:
    """Two RANN-format Cu dump files (32 atoms, energies and forces, element column)."""
    return write_rann_cu_dumps(tmp_path_factory.mktemp("cu"), (300.0, 1200.0), n_frames=6, seed=11)


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False,
                              env={"MLIP_PROGRESS": "0"})


def test_train_cli_writes_complete_run_and_evaluates(dumps, tmp_path):
    run = tmp_path / "run"
    res = invoke("train", dumps, "--epochs", 3, "--out", run, *SMALL)
    assert res.exit_code == 0, res.output
    for name in ("config.yaml", "data.h5", "metrics.csv", "model.pt", "learning_curve.png",
                 "parity_energy.png", "parity_forces.png", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    assert len((run / "metrics.csv").read_text().splitlines()) == 4
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 3
    res = invoke("evaluate", run, dumps, "--csv", tmp_path / "e.csv", "--parity", tmp_path / "p.png")
    assert res.exit_code == 0, res.output
    assert "cu_0.dump" in res.output and "all" in res.output
    assert len((tmp_path / "e.csv").read_text().splitlines()) == 13
    for name in ("p.png", "p_forces.png"):  # energies, and forces next to them
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG", name
    res = invoke("info", run / "model.pt", "--json")
    assert '"elements": [\n    "Cu"\n  ]' in res.output
    res = invoke("export", run, "-o", tmp_path / "again.pt")
    assert res.exit_code == 0 and (tmp_path / "again.pt").is_file()


def _energies(model_path: Path, dumps: Path) -> np.ndarray:
    from mlip.inference import load_model, predict_frames
    from parsers import read

    module, meta = load_model(model_path)
    return np.array([r["energy"] for r in predict_frames(module, meta, list(read(dumps))[:4], stress=False)])


def test_model_pt_holds_the_last_epoch_or_with_export_best_the_best(dumps, tmp_path):
    """model.pt gets the EMA weights of the last epoch by default and those of best.pt with
    train.export=best; `mlip export` re-exports the same checkpoint; a bad value exits with 2."""
    run = tmp_path / "run"
    # lr 0.05 makes the validation loss rise again, so that the best epoch is not the last
    res = invoke("train", dumps, "--epochs", 6, "--out", run, *SMALL, "--set", "train.lr=0.05",
                 "--set", "train.ema_decay=0")
    assert res.exit_code == 0, res.output
    best_epoch = load_checkpoint(run / "checkpoints" / "best.pt")["best_epoch"]
    assert best_epoch < 5, "the test needs a best epoch before the last"
    last = _energies(run / "model.pt", dumps)
    invoke("export", run, "--checkpoint", "best.pt", "-o", tmp_path / "best.pt")
    best = _energies(tmp_path / "best.pt", dumps)
    assert np.abs(last - best).max() > 1e-6
    invoke("export", run, "-o", tmp_path / "again.pt")
    np.testing.assert_array_equal(_energies(tmp_path / "again.pt", dumps), last)

    run_best = tmp_path / "run_best"
    res = invoke("train", dumps, "--epochs", 6, "--out", run_best, *SMALL, "--set", "train.lr=0.05",
                 "--set", "train.ema_decay=0", "--set", "train.export=best")
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose(_energies(run_best / "model.pt", dumps), best, rtol=0, atol=1e-9)
    res = _cli("train", dumps, "--epochs", 1, "--set", "train.export=final", "--out", tmp_path / "bad")
    assert res.returncode == 2 and "train.export" in res.stderr


def test_training_reduces_error(dumps, tmp_path):
    run = tmp_path / "run"
    res = invoke("train", dumps, "--epochs", 12, "--out", run, "--set", "model.hidden=[16]",
                 "--batch-size", 2)
    assert res.exit_code == 0, res.output
    rows = (run / "metrics.csv").read_text().splitlines()[1:]
    first, last = (float(r.split(",")[4]) for r in (rows[0], rows[-1]))
    assert last < first


def test_stage_two_raises_the_energy_weight_and_exports_its_own_best_epoch(dumps, tmp_path):
    """The last stage_two_fraction of the epochs train and validate with stage_two_energy_weight, and the
    best checkpoint (exported with train.export=best) is one of them even when their loss,
    weighted differently, is larger than stage one's best."""
    run = tmp_path / "run"
    res = invoke("train", dumps, "--epochs", 5, "--out", run, *SMALL, "--set", "train.energy_weight=1",
                 "--set", "train.stage_two_fraction=0.4", "--set", "train.stage_two_energy_weight=1e6")
    assert res.exit_code == 0, res.output
    rows = [r.split(",") for r in (run / "metrics.csv").read_text().splitlines()[1:]]
    val_loss = [float(r[3]) for r in rows]
    assert min(val_loss[3:]) > 2 * min(val_loss[:3])  # the energy term now weighs 1e6 times more
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["best_epoch"] in (3, 4)
    assert best["best_val"] == min(val_loss[3:])
    res = _cli("train", dumps, "--epochs", 3, "--set", "train.stage_two_fraction=1.5",
               "--out", tmp_path / "bad")
    assert res.returncode == 2 and "train.stage_two_fraction" in res.stderr


def _train_cmd(dumps: Path, run: Path, epochs: int) -> list[str]:
    return [sys.executable, "-m", "mlip", "train", str(dumps), "--epochs", str(epochs), "--out", str(run),
            "--set", "train.early_stopping=0", *SMALL]


def test_resume_after_sigkill_gives_identical_model(dumps, tmp_path):
    epochs = 8
    ref = tmp_path / "ref"
    subprocess.run(_train_cmd(dumps, ref, epochs), check=True, env=ENV, capture_output=True)

    run = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(dumps, run, epochs), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    last = run / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while time.time() < deadline:
        if last.exists() and load_checkpoint(last)["epoch"] >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(last)["epoch"]
    assert killed_at < epochs, "the run finished before it could be killed"
    assert not (run / "model.pt").exists()

    res = subprocess.run([sys.executable, "-m", "mlip", "train", "--resume", str(run)], env=ENV,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    a = load_checkpoint(ref / "checkpoints" / "last.pt")
    b = load_checkpoint(run / "checkpoints" / "last.pt")
    assert a["epoch"] == b["epoch"] == epochs
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlip", *map(str, args)], env=ENV, capture_output=True,
                          text=True)


def test_bad_input_exits_2_with_one_line(dumps, tmp_path):
    res = _cli("train", tmp_path / "missing")
    assert res.returncode == 2 and "not found" in res.stderr
    (tmp_path / "empty").mkdir()
    res = _cli("train", tmp_path / "empty")
    assert res.returncode == 2 and "empty" in res.stderr
    res = _cli("train", dumps, "--set", "train.epoch=3", "--out", tmp_path / "r1")
    assert res.returncode == 2 and "train.epoch" in res.stderr and "did you mean 'epochs'" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_data_without_energies_is_rejected(tmp_path):
    run = write_cu_eam_dumps(tmp_path / "md", n_frames=2, size=2, extra_columns=("element",),
                             dump_modify=("element Cu",))
    res = _cli("train", run.dump, "--out", tmp_path / "r")
    assert res.returncode == 2 and "energ" in res.stderr


def test_nan_loss_stops_and_names_the_batch(dumps, tmp_path):
    res = _cli("train", dumps, "--out", tmp_path / "r", "--epochs", 3, "--set", "train.lr=1e300",
               "--set", "train.grad_clip=0", *SMALL)
    assert res.returncode == 2, res.stderr
    assert "loss is" in res.stderr and "batch" in res.stderr


@pytest.mark.slow
def test_two_process_data_parallel(dumps, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    steady = ["--set", "train.lr=1e-3"]  # at lr 5e-3, six epochs of these tiny runs are too noisy
    run2 = tmp_path / "ddp"
    cmd = [str(torchrun), "--nproc_per_node=2", "--master_port=29531", "-m", "mlip", "train", str(dumps),
           "--epochs", "6", "--out", str(run2), "--ddp", *SMALL, *steady]
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    run1 = tmp_path / "single"
    subprocess.run(_train_cmd(dumps, run1, 6) + steady, env=ENV, check=True, capture_output=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "single"]
    mae = [float((r / "metrics.csv").read_text().splitlines()[-1].split(",")[6]) for r in (run1, run2)]
    assert np.isfinite(mae).all()
    assert max(mae) / min(mae) < 5.0, mae


def test_training_with_potnet_channels_fits_their_normalization(dumps, tmp_path):
    run = tmp_path / "run"
    desc = ("model.descriptors=[{type: rann_radial, re: 2.55, rc: 4.5, dr: 1.5, alpha: [3.0, 4.0],"
            " o: 0, n: 1}, {type: potnet, alpha: 3.0}]")
    res = invoke("train", dumps, "--epochs", 1, "--out", run, "--set", desc, *SMALL)
    assert res.exit_code == 0, res.output
    state = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    mean, std = state["descriptors.mean"], state["descriptors.std"]  # PotNet's 3 columns come last
    assert mean.shape[1] == 2 + 3 and (std[:, -3:] > 0).all() and (std[:, -3:] != 1).all()
    assert mean[:, -3:].abs().min() > 0


def test_export_keeps_the_code_compiled_when_training_started(dumps, tmp_path, monkeypatch):
    """model.pt is the module scripted when training started: a source edit during the run (here
    the descriptor set's forward replaced by one that runs eagerly but that TorchScript cannot
    compile) neither breaks the export nor reaches the exported code."""
    from fingerprints.descriptor_set import DescriptorSet
    from mlip.inference import load_model, predict_frames
    from mlip.train import trainer as trainer_module
    from mlip.train.config import load_config
    from parsers import read

    original_forward = DescriptorSet.forward

    def edited_forward(self, species, edge_index, edge_vec, n_centers, *unused):  # varargs: not scriptable
        return original_forward(self, species, edge_index, edge_vec, n_centers)

    original_fit = trainer_module.Trainer.fit

    def fit_after_edit(self):
        monkeypatch.setattr(DescriptorSet, "forward", edited_forward)
        return original_fit(self)

    monkeypatch.setattr(trainer_module.Trainer, "fit", fit_after_edit)
    config = load_config(None, {"data.sources": [str(dumps)], "out": str(tmp_path / "run"),
                                "train.epochs": 2, "model.hidden": [8], "train.energy_weight": 1000.0})
    run = trainer_module.train(config)
    with pytest.raises(Exception, match="(?i)var"):
        torch.jit.script(DescriptorSet.from_config([{"type": "rann_radial", "re": 2.55, "rc": 4.5, "dr": 1.5,
                                                     "alpha": [3.0, 4.0], "o": 0, "n": 1}], ["Cu"]))
    module, meta = load_model(run / "model.pt")
    frames = list(read(dumps))[:3]
    exported = predict_frames(module, meta, frames, stress=False)
    saved = load_config(run / "config.yaml")  # train() resolves elements and descriptors in its own copy
    eager_model = trainer_module.build_potential(saved["model"], saved["model"]["elements"])
    eager_model.load_state_dict(load_checkpoint(run / "checkpoints" / "last.pt")["ema"])
    eager = predict_frames(eager_model.eval(), meta, frames, stress=False)
    for a, b in zip(exported, eager, strict=True):
        assert a["energy"] == pytest.approx(b["energy"], abs=1e-10)
        np.testing.assert_allclose(a["forces"], b["forces"], atol=1e-10)


def test_a_run_saved_before_model_repulsion_keeps_no_core(dumps, tmp_path):
    """A run whose config.yaml predates ``model.repulsion`` was trained without a repulsive core:
    re-exporting (and resuming) it must not add one at fallback distances."""
    import yaml

    from mlip.export import read_metadata

    run = tmp_path / "run"  # an old run: no core in its checkpoints, no key in its config.yaml
    res = _cli("train", dumps, "--epochs", 1, "--out", run, *SMALL, "--set", "model.repulsion=none")
    assert res.returncode == 0, res.stderr
    config = yaml.safe_load((run / "config.yaml").read_text())
    del config["model"]["repulsion"]
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    res = _cli("export", run, "-o", tmp_path / "old.pt")
    assert res.returncode == 0, res.stderr
    assert read_metadata(tmp_path / "old.pt")["repulsion"] == "none"
    res = _cli("train", "--resume", run, "--set", "train.epochs=2")
    assert res.returncode == 0, res.stderr
    assert read_metadata(run / "model.pt")["repulsion"] == "none"
