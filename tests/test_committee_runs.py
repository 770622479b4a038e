"""Committees end to end on LAMMPS Cu EAM dumps (issue 21): `mlip train --committee`, the
bootstrap resamples, `mlip committee` of independent runs, `mlip select` on trajectories in three
formats, and `mlip train --init` (same elements, and a new element labelled by ASE's EMT)."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
import yaml
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from click.testing import CliRunner

from mlip.cli import main
from mlip.demo.cu_eam import write_rann_cu_dumps
from mlip.inference import load_model, predict_frames
from mlip.train.loader import bootstrap_counts
from mlip.train.loss import LossWeights, batch_loss
from parsers import Frame, read

# tiny, quick runs; min_lr 0 so that a run at lr 1e-12 moves its weights by ~1e-12
SMALL = ["--set", "model.hidden=[8]", "--batch-size", "4", "--epochs", "2", "--set", "train.min_lr=0"]


def invoke(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False,
                              env={"MLIP_PROGRESS": "0"})


def one_line_error(res, *words: str) -> None:
    """Exit code 2 and one line on stderr holding ``words``."""
    assert res.exit_code == 2, res.output
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    for word in words:
        assert word in res.stderr, res.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """RANN-format Cu dumps (12 frames of 32 atoms), a 3-member committee run and two single runs."""
    root = tmp_path_factory.mktemp("committee")
    dumps = write_rann_cu_dumps(root / "data", (300.0, 1200.0), n_frames=6, seed=11)
    out = {"dumps": dumps}
    for name, extra in (("committee", ["--committee", 3]), ("a", ["--seed", 1]), ("b", ["--seed", 2])):
        res = invoke("train", dumps, "--out", root / name, *SMALL, *extra)
        assert res.exit_code == 0, res.output
        out[name] = root / name
        out[f"{name}_output"] = res.output
    return out


def energies(model: Path, frames, deviation: bool = False) -> list[dict]:
    module, meta = load_model(model)
    return predict_frames(module, meta, frames, stress=False, deviation=deviation)


def test_training_a_committee(runs):
    meta = load_model(runs["committee"] / "model.pt")[1]
    assert meta["committee"] == 3
    assert "committee: 3 members" in runs["committee_output"]
    preds = energies(runs["committee"] / "model.pt", list(read(runs["dumps"]))[:4], deviation=True)
    assert all(p["max_force_deviation"] > 0 and p["energy_deviation"] > 0 for p in preds)
    assert all(p["max_force_deviation"] == pytest.approx(p["force_deviation"].max()) for p in preds)
    single = energies(runs["a"] / "model.pt", list(read(runs["dumps"]))[:1])[0]
    assert "energy_deviation" not in single


def test_bootstrap_counts_are_resamples_of_the_training_frames():
    train = np.array([0, 2, 3, 5, 7, 8, 9, 11])
    counts = bootstrap_counts(train, 12, 4, seed=5)
    assert counts.shape == (4, 12)
    np.testing.assert_array_equal(counts.sum(axis=1), [8] * 4)
    assert not counts[:, [1, 4, 6, 10]].any()
    assert (counts == counts.round()).all() and (counts[:, train] == 0).any()
    assert len({tuple(row) for row in counts}) == 4
    np.testing.assert_array_equal(counts, bootstrap_counts(train, 12, 4, seed=5))


def test_a_member_does_not_learn_from_frames_outside_its_resample(runs):
    """The gradient of member k's weights ignores the labels of frames member k did not draw."""
    from mlip.batching import collate, frame_to_graph
    from mlip.train.export_run import load_run

    model, _, _ = load_run(runs["committee"])
    frames = list(read(runs["dumps"]))[:2]
    weights = torch.tensor([[0.0, 2.0], [1.0, 1.0], [1.0, 0.0]], dtype=torch.float64)

    def grads(shift: float) -> list[torch.Tensor]:
        batch = collate([frame_to_graph(f, model.elements, model.cutoff) for f in frames])
        batch["energy"][0] += shift
        batch["forces"][batch["batch"] == 0] += shift
        model.zero_grad()
        loss, _ = batch_loss(model, batch, LossWeights(1.0, 1.0), True, member_weights=weights)
        loss.backward()
        return [torch.cat([p.grad.reshape(-1) for p in member.parameters()])
                for member in model.networks.members]

    before, after = grads(0.0), grads(0.5)
    torch.testing.assert_close(before[0], after[0], rtol=1e-12, atol=1e-14)  # member 0 left frame 0 out
    assert (before[1] - after[1]).abs().max() > 1e-6
    assert (before[2] - after[2]).abs().max() > 1e-6


def test_mlip_committee_combines_runs_into_their_members(runs, tmp_path):
    res = invoke("committee", runs["a"], runs["b"], runs["committee"], "-o", tmp_path / "all.pt")
    assert res.exit_code == 0, res.output
    assert "5 members" in res.output
    frames = list(read(runs["dumps"]))[:3]
    module, meta = load_model(tmp_path / "all.pt")
    assert meta["committee"] == 5 and [r["members"] for r in meta["committee_runs"]] == [1, 1, 3]
    from mlip.batching import collate, frame_to_graph

    batch = collate([frame_to_graph(f, meta["elements"], meta["cutoff"]) for f in frames])
    combined = module.compute(batch, True, False, False, -1, False, True)
    parts = []
    for run in ("a", "b", "committee"):
        m, part_meta = load_model(runs[run] / "model.pt")
        if part_meta["committee"] > 1:
            r = m.compute(batch, True, False, False, -1, False, True)
            parts += list(zip(r["member_energy"].T, r["member_forces"], strict=True))
        else:
            r = m.compute(batch, True, False, False)
            parts.append((r["energy"], r["forces"]))
    for k, (energy, forces) in enumerate(parts):
        torch.testing.assert_close(combined["member_energy"][:, k], energy, rtol=1e-12, atol=1e-9)
        torch.testing.assert_close(combined["member_forces"][k], forces, rtol=1e-9, atol=1e-9)


def test_mlip_committee_names_what_differs(runs, tmp_path):
    other = tmp_path / "other"
    res = invoke("train", runs["dumps"], "--out", other, *SMALL, "--set", "model.descriptors=[{type: "
                 "radial_density, cutoff: 5.0, n_max: 6}]")
    assert res.exit_code == 0, res.output
    one_line_error(invoke("committee", runs["a"], other, "-o", tmp_path / "x.pt"),
                   "model.descriptors", "other")
    one_line_error(invoke("committee", runs["a"], runs["a"], "-o", tmp_path / "x.pt"), "twice")
    one_line_error(invoke("committee", runs["a"], "-o", tmp_path / "x.pt"), "at least two members")
    assert not (tmp_path / "x.pt").exists()


def test_select_reads_three_formats_and_spreads_its_choice(runs, tmp_path):
    frames = list(read(runs["dumps"]))
    images = [f.to_ase() for f in frames[:6]]
    for k, atoms in enumerate(images[3:]):  # strongly rattled: beyond the training data
        atoms.rattle(0.25, seed=k)
    ase.io.write(tmp_path / "md.traj", images[:4])
    ase.io.write(tmp_path / "md.extxyz", images[4:])
    trajectories = [tmp_path / "md.traj", tmp_path / "md.extxyz", runs["dumps"] / "cu_1.dump"]
    pool = [Frame.from_ase(a) for a in images] + frames[6:]
    preds = energies(runs["committee"] / "model.pt", pool, deviation=True)
    deviations = [p["max_force_deviation"] for p in preds]
    lo, hi = sorted(deviations)[2], sorted(deviations)[-3]  # 2 below, 2 above, 8 inside
    res = invoke("select", *trajectories, "--model", runs["committee"], "--lo", lo, "--hi", hi, "-n", 3,
                 "-o", tmp_path / "candidates.extxyz")
    assert res.exit_code == 0, res.output
    assert f"12 frames: 2 below {lo:g} eV/Å, 8 inside [{lo:g}, {hi:g}], 2 above {hi:g}" in res.output
    chosen = ase.io.read(tmp_path / "candidates.extxyz", ":")
    assert len(chosen) == 3 and all(a.calc is None for a in chosen)
    picked = [a.info["max_force_deviation"] for a in chosen]
    assert picked[0] == pytest.approx(max(d for d in deviations if lo <= d <= hi))  # FPS starts there
    assert all(lo <= d <= hi for d in picked)
    assert len({(a.info["source"], a.info["index"]) for a in chosen}) == 3

    one_line_error(invoke("select", runs["dumps"], "--model", runs["a"], "-o", tmp_path / "x.extxyz"),
                   "not a committee", "--committee")
    one_line_error(invoke("select", runs["dumps"], "--model", runs["committee"], "--lo", 0.3, "--hi", 0.1,
                          "-o", tmp_path / "x.extxyz"), "lo")


def test_init_starts_from_the_old_weights(runs, tmp_path):
    new = tmp_path / "next"
    res = invoke("train", runs["dumps"] / "cu_1.dump", "--init", runs["committee"], "--out", new, *SMALL,
                 "--set", "train.lr=1e-12", "--set", "train.ema_decay=0")
    assert res.exit_code == 0, res.output
    assert "initialised from" in res.output
    config = yaml.safe_load((new / "config.yaml").read_text())
    assert config["train"]["init"] == str(runs["committee"].resolve())
    meta = load_model(new / "model.pt")[1]
    assert meta["init"]["run"] == str(runs["committee"].resolve()) and meta["committee"] == 3
    frames = list(read(runs["dumps"]))[:4]
    old = energies(runs["committee"] / "model.pt", frames)
    for a, b in zip(old, energies(new / "model.pt", frames), strict=True):
        assert b["energy"] == pytest.approx(a["energy"], abs=1e-7)
        np.testing.assert_allclose(b["forces"], a["forces"], atol=1e-7)
    one_line_error(invoke("train", runs["dumps"], "--init", runs["a"], "--out", tmp_path / "bad", *SMALL,
                          "--set", "model.hidden=[16]"), "model.hidden", "--init")


def test_init_with_a_new_element_gives_it_fresh_networks(runs, tmp_path):
    images = []
    for k in range(4):  # Cu/Ni cells labelled by ASE's EMT
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
        atoms.numbers[np.random.default_rng(k).choice(len(atoms), 8, replace=False)] = 28
        atoms.rattle(0.05, seed=k)
        atoms.calc = EMT()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        images.append(atoms)
    ase.io.write(tmp_path / "cuni.extxyz", images)
    new = tmp_path / "cuni"
    res = invoke("train", tmp_path / "cuni.extxyz", "--init", runs["a"], "--out", new, *SMALL,
                 "--set", "train.lr=1e-12", "--set", "train.ema_decay=0")
    assert res.exit_code == 0, res.output
    assert "new element(s) Ni: fresh networks" in res.output
    meta = load_model(new / "model.pt")[1]
    assert meta["elements"] == ["Ni", "Cu"] and meta["init"]["elements"] == ["Cu"]
    frames = list(read(runs["dumps"]))[:3]  # pure Cu: the old network's energies
    old = energies(runs["a"] / "model.pt", frames)
    for a, b in zip(old, energies(new / "model.pt", frames), strict=True):
        assert b["energy"] == pytest.approx(a["energy"], abs=1e-7)


def test_bad_committee_sizes_exit_2(runs, tmp_path):
    for k in (0, -2):
        one_line_error(invoke("train", runs["dumps"], "--committee", k, "--out", tmp_path / "r"),
                       "model.committee", "expected an integer >= 1")
    one_line_error(invoke("train", runs["dumps"], "--committee", 2, "--physics", "ewald", "--out",
                          tmp_path / "r"), "model.committee", "charges")
    assert not (tmp_path / "r").exists()
