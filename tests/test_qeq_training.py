"""Training 4G-HDNNPs (``model.long_range: qeq``, :class:`mlip.model.qeq_potential.QEqPotential`)
on Ko et al.'s Carbon_chain data (``../shared/data/longrange_4g``: neutral C10H2 and C10H3⁺,
non-periodic, DFT energies, forces and Hirshfeld charges, total charge per frame).

- The training path (``train()``: the dense, differentiable charge solve) and the evaluation
  path (``eval()``: conjugate gradients and the adjoint correction) give the same charges,
  energies and forces; the gradient of a force loss with respect to parameters of the
  electronegativity networks and the hardness equals central finite differences of the loss
  with re-solved charges; for clusters (direct sum) and in periodic cells (Ewald). (Measured
  with the cluster setup below, on the evaluation path the adjoint correction's gradient of the
  same loss is −67.5 instead of −72.4 and −2.4 instead of −8.8 for two χ weights, and it has
  none for the hardness: its second derivatives are not exact.)
- ``mlip train`` with ``model.long_range: qeq`` on a few frames: model.pt is long-range with
  the qeq metadata (widths = covalent radii by default); in the ASE calculator
  ``atoms.get_charges()`` sums to ``atoms.info["charge"]`` and the forces are −dE/dx by finite
  differences (through the charges' response); the charge loss lowers the charge error; in
  LAMMPS (the gathered path, a cluster in a non-periodic box) on 1 and 2 ranks energy, per-atom
  energies and forces equal ASE's.
- Bad settings are one line each, exit code 2.

The physics reference of the 4G model itself (charges, energy, forces against n2p2) is
tests/test_n2p2_4g.py.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ase import Atoms
from click.testing import CliRunner
from conftest import SHARED_DATA
from lammps_runs import run_one_rank, run_two_ranks

from fingerprints.descriptor_set import default_config
from mlip.batching import collate, frame_to_graph
from mlip.calculator import MLIPCalculator
from mlip.cli import main
from mlip.data.store import write_dataset
from mlip.export import read_metadata
from mlip.inference import load_model, predict_frames
from mlip.train.config import DEFAULTS
from mlip.train.model_builder import build_potential
from parsers import Frame, read

CARBON = SHARED_DATA / "longrange_4g" / "nnp-train" / "Carbon_chain_4G" / "input.data"
ELEMENTS = ["H", "C"]  # LAMMPS types 1, 2
MASSES = {"H": 1.008, "C": 12.011}
SMALL = ["--batch-size", "2", "--set", "model.hidden=[8]",
         "--set", "model.descriptors=[{type: power_spectrum, cutoff: 4.0, n_max: 3, l_max: 2}]",
         "--set", "data.val_fraction=0", "--set", "train.stage_two_fraction=0", "--set", "train.ema_decay=0",
         "--set", "train.energy_weight=1", "--set", "train.force_weight=1"]


@pytest.fixture(scope="module")
def frames() -> list[Frame]:
    """Four neutral and four charged (Q = +1 e) frames of the carbon chain."""
    if not CARBON.is_file():
        pytest.skip(f"{CARBON} is not available")
    every = list(read(CARBON))
    neutral = [f for f in every if f.total_charge == 0][:4]
    charged = [f for f in every if f.total_charge == 1][:4]
    assert len(neutral) == 4 and len(charged) == 4
    return neutral + charged


def invoke(*args) -> str:
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, env={"MLIP_PROGRESS": "0"})
    assert res.exit_code == 0, res.output
    return res.output


def boxed(frames: list[Frame], periodic: bool) -> list[Frame]:
    """The frames as they are (clusters), or each in a periodic cubic cell of 20 Å (Ewald)."""
    if not periodic:
        return frames
    return [dataclasses.replace(f, cell=20.0 * np.eye(3), pbc=np.ones(3, dtype=bool)) for f in frames]


def small_model(frames: list[Frame]) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """A fresh qeq model (tanh networks of 8, hardness 2 eV/e², descriptors normalised on the
    frames) and the batch of the frames."""
    config = {**DEFAULTS["model"], "long_range": {"name": "qeq", "hardness": 2.0}, "hidden": [8],
              "activation": "tanh", "repulsion": "none", "descriptors": default_config(ELEMENTS, 4.0)}
    torch.manual_seed(0)
    model = build_potential(config, ELEMENTS)
    batch = collate([frame_to_graph(f, ELEMENTS, model.cutoff) for f in frames])
    src, dst = batch["edge_index"]
    edge_vec = batch["positions"][dst] - batch["positions"][src] + batch["edge_shift"]
    model.descriptors.fit_normalization([(batch["species"], batch["edge_index"], edge_vec)])
    return model, batch


@pytest.mark.parametrize("periodic", [False, True])
def test_training_and_evaluation_paths_agree(frames, periodic):
    model, batch = small_model(boxed(frames[2:6], periodic))  # two neutral, two charged frames
    model.train()
    dense = model.compute(batch, True, False)
    model.eval()
    iterative = model.compute(batch, True, False)
    for key in ("charges", "energy", "forces"):
        torch.testing.assert_close(dense[key], iterative[key], rtol=0, atol=1e-10)
    sums = torch.zeros(4, dtype=torch.float64).index_add(0, batch["batch"], dense["charges"])
    torch.testing.assert_close(sums, batch["total_charge"], rtol=0, atol=1e-12)
    assert float(dense["charges"].detach().abs().max()) > 1e-3


@pytest.mark.parametrize("periodic", [False, True])
def test_force_loss_gradient_matches_finite_differences(frames, periodic):
    """L = Σ (F − F_DFT)² in training mode: dL/dθ by autograd (through the dense solve) against
    central differences of L (charges re-solved at θ ± h) for two weights of the carbon
    electronegativity network and the hydrogen hardness; clusters (direct sum) and periodic
    cells (Ewald)."""
    model, batch = small_model(boxed(frames[2:5], periodic))
    model.train()

    def loss(create_graph: bool) -> torch.Tensor:
        forces = model.compute(batch, True, False, create_graph)["forces"]
        return ((forces - batch["forces"]) ** 2).sum()

    loss(True).backward()
    weight = model.networks.nets[1][0].weight
    for param, index in [(weight, (0, 0)), (weight, (3, 5)), (model.hardness, (0,))]:
        analytic = float(param.grad[index])
        h = 1e-5
        values = []
        for step in (h, -2 * h, h):  # to θ + h, θ − h and back
            with torch.no_grad():
                param[index] += step
            values.append(float(loss(False).detach()))
        numeric = (values[0] - values[1]) / (2 * h)
        assert abs(numeric) > 1e-3
        assert analytic == pytest.approx(numeric, rel=1e-6), (index, analytic, numeric)


@pytest.fixture(scope="module")
def trained(frames, tmp_path_factory) -> Path:
    """``mlip train`` (``model.long_range: qeq`` from a config file, charge weight 1000) on the
    eight frames, 8 epochs."""
    work = tmp_path_factory.mktemp("qeq_training")
    write_dataset(frames, work / "carbon.h5")
    (work / "cfg.yaml").write_text(yaml.safe_dump({"model": {"long_range": "qeq"},
                                                   "train": {"charge_weight": 1000.0, "lr": 0.02}}))
    output = invoke("train", work / "carbon.h5", "--config", work / "cfg.yaml", "--epochs", 8, "--out",
                    work / "run", *SMALL)
    (work / "train_output.txt").write_text(output)
    return work / "run"


def test_the_run_states_the_descriptor_cutoff_and_the_longer_edges(trained):
    """The start lines give the descriptors' cutoff as such and the model's longer edge range
    (the Coulomb engine's real space for the Gaussian widths) separately."""
    line = next(x for x in (trained.parent / "train_output.txt").read_text().splitlines()
                if x.strip().startswith("cutoff:"))
    cutoff = read_metadata(trained / "model.pt")["cutoff"]
    assert f"edges to {cutoff:g} Å for the physics and long-range terms" in line, line


def charge_rmse(model: Path, frames: list[Frame]) -> float:
    module, meta = load_model(model)
    preds = predict_frames(module, meta, frames, stress=False)
    errors = np.concatenate([p["charges"] - f.charges for p, f in zip(preds, frames, strict=True)])
    return float(np.sqrt(np.mean(errors**2)))


def test_mlip_train_exports_a_long_range_charge_model(trained, frames):
    meta = read_metadata(trained / "model.pt")
    assert meta["long_range"] is True and meta["charges"] is True
    assert meta["qeq"]["widths_angstrom"] == {"H": 0.31, "C": 0.76}  # ase.data.covalent_radii
    assert all(j > 0 for j in meta["qeq"]["hardness_ev"].values())
    # the charge loss: half the error of uniform charges Q/n
    uniform = np.concatenate([np.full(len(f), f.total_charge / len(f)) - f.charges for f in frames])
    trained_rmse = charge_rmse(trained / "model.pt", frames)
    uniform_rmse = float(np.sqrt(np.mean(uniform**2)))
    print(f"charge RMSE: trained {trained_rmse:.4f} e, uniform Q/n {uniform_rmse:.4f} e")
    assert trained_rmse < 0.5 * uniform_rmse
    # mlip export of the run: the same model and metadata
    again = trained.parent / "exported.pt"
    invoke("export", trained, "-o", again)
    assert read_metadata(again)["qeq"] == meta["qeq"] and read_metadata(again)["long_range"] is True
    assert charge_rmse(again, frames) == pytest.approx(trained_rmse, rel=1e-12)


def carbon_atoms(frame: Frame) -> Atoms:
    atoms = Atoms(numbers=frame.numbers, positions=frame.positions)
    atoms.info["charge"] = frame.total_charge
    return atoms


def test_ase_charges_sum_to_the_total_charge_and_forces_are_the_energy_gradient(trained, frames):
    calc = MLIPCalculator(trained / "model.pt")
    for frame in (frames[0], frames[5]):
        atoms = carbon_atoms(frame)
        atoms.calc = calc
        charges = atoms.get_charges()
        assert charges.sum() == pytest.approx(frame.total_charge, abs=1e-10)
        assert np.ptp(charges) > 1e-3
        forces = atoms.get_forces()
        h = 1e-4
        for atom, axis in [(0, 0), (4, 1), (11, 2)]:
            energies = []
            for sign in (1, -1):
                moved = atoms.copy()
                moved.positions[atom, axis] += sign * h
                moved.calc = calc
                energies.append(moved.get_potential_energy())
            assert forces[atom, axis] == pytest.approx(-(energies[0] - energies[1]) / (2 * h), abs=1e-6)


def write_data(path: Path, atoms: Atoms) -> None:
    """A LAMMPS data file (atom_style atomic) of a cluster in a box 10 Å larger than it."""
    low = (atoms.positions.min(axis=0) - 10.0).tolist()
    high = (atoms.positions.max(axis=0) + 10.0).tolist()
    types = [ELEMENTS.index(s) + 1 for s in atoms.get_chemical_symbols()]
    lines = ["carbon chain", "", f"{len(atoms)} atoms", "2 atom types", "",
             *[f"{low[d]!r} {high[d]!r} {a}lo {a}hi" for d, a in enumerate("xyz")], "", "Masses", "",
             *[f"{k + 1} {MASSES[e]}" for k, e in enumerate(ELEMENTS)], "", "Atoms # atomic", "",
             *[f"{k + 1} {t} {x!r} {y!r} {z!r}"
               for k, (t, (x, y, z)) in enumerate(zip(types, atoms.positions.tolist(), strict=True))]]
    path.write_text("\n".join(lines) + "\n")


def lammps_input(model: Path, data: Path, tag: Path) -> str:
    return "\n".join([
        "clear", "units metal", "atom_style atomic", "boundary f f f", f"read_data {data}",
        f"pair_style mlip {model}", f"pair_coeff * * {' '.join(ELEMENTS)}", "compute pe all pe/atom",
        f"dump d all custom 1 {tag}.dump id fx fy fz c_pe", "dump_modify d sort id format float %.17g",
        "run 0", f'print "$(pe:%.17g)" file {tag}.txt screen no', "undump d", ""])


@pytest.mark.parametrize("ranks", [1, 2])
def test_lammps_equals_ase(trained, frames, ranks, tmp_path):
    """A neutral frame (LAMMPS' model input has no total charge) in the gathered path."""
    atoms = carbon_atoms(frames[1])
    atoms.calc = MLIPCalculator(trained / "model.pt")
    reference = {"energy": atoms.get_potential_energy(), "atomic_energies": atoms.get_potential_energies(),
                 "forces": atoms.get_forces()}
    write_data(tmp_path / "chain.data", atoms)
    script = lammps_input(trained / "model.pt", tmp_path / "chain.data", tmp_path / "out")
    if ranks == 1:
        run_one_rank([script])
    else:
        run_two_ranks(tmp_path, script)
    dump = np.loadtxt(tmp_path / "out.dump", skiprows=9)
    got = {"energy": float(np.loadtxt(tmp_path / "out.txt")), "atomic_energies": dump[:, 4],
           "forces": dump[:, 1:4]}
    for key, value in reference.items():
        scale = max(float(np.abs(value).max()), 1.0)
        assert np.abs(got[key] - value).max() <= 1e-9 * scale, (key, ranks)


@pytest.mark.parametrize("settings, message", [
    ({"model.long_range": {"name": "qeq", "widths": {"O": 0.66}}},
     "model.long_range qeq widths: element(s) O not among the model's elements H, C"),
    ({"model.long_range": "qeq", "model.physics": ["ewald"]},
     "model.long_range qeq: model.physics must be empty"),
    ({"model.long_range": "qeq", "model.charges": "network"},
     "the charges come from its charge equilibration; model.charges must be auto or none"),
    ({"model.long_range": {"name": "qeq", "screening": [4.0, 2.0]}},
     "model.long_range = {'name': 'qeq', 'screening': [4.0, 2.0]}: qeq option screening = [4.0, 2.0]: "
     "expected null or [r_in, r_out] in Å with 0 <= r_in < r_out"),
    ({"model.long_range": {"name": "qeq", "hardness": -1}},
     "qeq option hardness = -1: expected a number > 0"),
])
def test_bad_settings_are_one_line_and_exit_code_2(frames, tmp_path, settings, message):
    data = tmp_path / "carbon.h5"
    write_dataset(frames[:2], data)
    sets = [x for key, value in settings.items() for x in ("--set", f"{key}={json.dumps(value)}")]
    args = ["train", str(data), "--epochs", "1", "--out", str(tmp_path / "run"), *sets]
    res = CliRunner().invoke(main, args, env={"MLIP_PROGRESS": "0"})
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.startswith("mlip: error:")]
    assert len(lines) == 1 and message in lines[0], res.output


def test_init_from_a_qeq_run_is_refused(trained, frames, tmp_path):
    data = tmp_path / "carbon.h5"
    write_dataset(frames, data)
    res = CliRunner().invoke(main, ["train", str(data), "--epochs", "1", "--out", str(tmp_path / "again"),
                                    "--init", str(trained)], env={"MLIP_PROGRESS": "0"})
    assert res.exit_code == 2, res.output
    assert "a 4G model (model.long_range qeq) cannot start from or seed another run" in res.output
