"""Ewald message passing (``model.long_range: ewald_mp``, mlip.physics.ewald_mp): invariances
(translation, rotation, permutation, supercell), forces and virial against finite differences,
smoothness under strain as k vectors cross the frequency cutoff, PME against the explicit sum,
clusters as the limit of a growing periodic box, TorchScript export through mlip.export and the
ASE calculator, LAMMPS (gathered path) against ASE on 1 and 2 ranks, ``mlip train`` on LAMMPS
Lennard-Jones slab data, and bad config values.

The physics tests switch the networks' energy off (energy scale 0), so the model's energy is the
Ewald-MP term's alone, with filters drawn at random (they start at zero in a fresh model)."""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from click.testing import CliRunner
from lammps_runs import run_one_rank, run_two_ranks
from model_checks import finite_difference_forces, finite_difference_virial, random_rotation, single
from physics_reference import lower_triangular_cell, random_positions

from mlip import MLIPCalculator
from mlip.cli import main
from mlip.data.store import write_dataset
from mlip.demo.lj_slabs import MASSES, make_frames
from mlip.errors import UserError
from mlip.export import export_model, model_metadata, read_metadata
from mlip.model import Potential
from mlip.physics.coulomb import reciprocal_vectors
from mlip.physics.ewald_mp import EwaldMP
from mlip.train.checkpoint import load_checkpoint
from mlip.train.config import DEFAULTS, load_config
from mlip.train.model_builder import build_potential

ELEMENTS = ["Kr", "Xe"]  # LAMMPS types 1, 2
NKTV2P_METAL = 1.6021765e6  # bar per eV/Å³


def make_model(mode: str = "ewald", network_energy: bool = False, k_cutoff: float = 1.0) -> Potential:
    """A small float64 model with an ewald_mp term (3 channels) whose filter weights are random;
    without ``network_energy`` its energy is the term's alone."""
    torch.manual_seed(0)
    long_range = {"name": "ewald_mp", "channels": 3, "k_cutoff": k_cutoff, "n_radial": 6, "mode": mode}
    cfg = {**copy.deepcopy(DEFAULTS["model"]), "descriptors": [{"type": "radial_density", "cutoff": 4.0}],
           "hidden": [8], "repulsion": "none", "long_range": long_range}
    model = build_potential(cfg, ELEMENTS)
    term = ewald_term(model)
    with torch.no_grad():
        term.engine.mesh_filter.kernel.weight.normal_(0.0, 0.3)
    model.set_energy_reference(torch.tensor([-0.1, -0.12]), 0.05 if network_energy else 0.0)
    return model


def ewald_term(model: Potential) -> EwaldMP:
    (term,) = [t for t in model.physics if t.name == "ewald_mp"]
    return term


def triclinic_frame(seed: int = 0, n: int = 30) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions (n, 3) Å, species (n,) and a LAMMPS-style triclinic cell (3, 3) Å."""
    rng = np.random.default_rng(seed)
    cell = lower_triangular_cell(rng, [10.0, 11.0, 12.5], 0.2)
    return random_positions(rng, cell, n, 2.6), rng.integers(0, 2, n), cell


def relative(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def assert_close(got: np.ndarray, ref: np.ndarray, rel: float) -> None:
    """``got`` equals ``ref`` (arrays) to ``rel`` times the largest |ref|."""
    np.testing.assert_allclose(got, ref, rtol=0, atol=rel * np.abs(ref).max())


@pytest.mark.parametrize("mode, tol", [("ewald", 1e-10), ("pme", 1e-4)])
def test_translation_rotation_and_permutation_invariance(mode, tol):
    """Rotation and permutation are exact in both modes (PME's mesh follows the cell); a
    translation moves the atoms against PME's mesh, so it holds to the mesh error there."""
    model = make_model(mode)
    pos, species, cell = triclinic_frame()
    ref = single(model, pos, species, cell)
    assert abs(ref["energy"]) > 1e-3
    shifted = single(model, pos + np.array([0.37, -1.21, 2.05]), species, cell)
    assert relative(shifted["energy"], ref["energy"]) < tol
    assert_close(shifted["forces"], ref["forces"], 10 * tol)
    rot = random_rotation(3)
    rotated = single(model, pos @ rot.T, species, cell @ rot.T)
    assert relative(rotated["energy"], ref["energy"]) < 1e-10
    assert_close(rotated["forces"], ref["forces"] @ rot.T, 1e-10)
    order = np.random.default_rng(4).permutation(len(pos))
    permuted = single(model, pos[order], species[order], cell)
    assert relative(permuted["energy"], ref["energy"]) < 1e-12
    assert_close(permuted["forces"], ref["forces"][order], 1e-12)
    assert_close(permuted["virial"], ref["virial"], 1e-12)


@pytest.mark.parametrize("mode, tol", [("ewald", 1e-10), ("pme", 1e-4)])
def test_supercell_has_the_same_energy_per_atom(mode, tol):
    """A 2×1×2 supercell: four times the energy and virial, the same forces (its extra k vectors
    see a vanishing structure factor; PME: another mesh, so to the mesh error)."""
    model = make_model(mode)
    pos, species, cell = triclinic_frame(1, 16)
    ref = single(model, pos, species, cell)
    images = [np.array([a, 0, c]) @ cell for a in range(2) for c in range(2)]
    big = single(model, np.concatenate([pos + t for t in images]), np.tile(species, 4),
                 cell * np.array([[2.0], [1.0], [2.0]]))
    assert relative(big["energy"], 4.0 * ref["energy"]) < tol
    assert_close(big["forces"], np.tile(ref["forces"], (4, 1)), 10 * tol)
    assert_close(big["virial"], 4.0 * ref["virial"], 10 * tol)


@pytest.mark.parametrize("mode", ["ewald", "pme", "cluster"])
def test_forces_and_virial_match_finite_differences(mode):
    model = make_model("ewald" if mode == "cluster" else mode)
    pos, species, cell = triclinic_frame(2, 20)
    pbc = (mode != "cluster",) * 3
    res = single(model, pos, species, cell, pbc)
    scale = np.abs(res["forces"]).max()
    assert scale > 1e-3
    for (atom, axis), value in finite_difference_forces(model, pos, species, cell, pbc, h=1e-4,
                                                        atoms=(0, 7, 13)).items():
        assert res["forces"][atom, axis] == pytest.approx(value, abs=1e-7 * scale)
    if mode != "cluster":
        fd = finite_difference_virial(model, pos, species, cell, pbc, h=1e-5)
        assert_close(res["virial"], fd, 1e-7)


def test_energy_is_smooth_under_strain_as_k_vectors_cross_the_cutoff():
    """Isotropic scaling s of a frame over ±4 %: k vectors enter the sphere |k| < K, yet each
    energy step equals the trapezoid of the analytic derivative dE/ds = −tr(W)/s to O(δ³), which a
    jump or a kink would break."""
    model = make_model("ewald")
    pos, species, cell = triclinic_frame(5, 24)
    scales = np.linspace(0.96, 1.04, 161)
    energy, slope = [], []
    for s in scales:
        res = single(model, pos * s, species, cell * s)
        energy.append(float(res["energy"]))
        slope.append(-np.trace(res["virial"]) / s)
    energy, slope = np.array(energy), np.array(slope)
    k_cutoff = ewald_term(model).engine.k_end
    counts = {len(reciprocal_vectors(torch.from_numpy(cell * s), k_cutoff)) for s in scales}
    assert len(counts) > 3  # the set of k vectors changes along the path
    step = np.diff(energy)
    trapezoid = 0.5 * (slope[1:] + slope[:-1]) * np.diff(scales)
    assert np.abs(step - trapezoid).max() < 1e-3 * np.abs(step).max()
    assert np.ptp(energy) > 1e-3


def test_pme_matches_the_explicit_sum():
    """A 96-atom cell in both modes: energies and forces to the mesh error (module docstring)."""
    rng = np.random.default_rng(6)
    cell = lower_triangular_cell(rng, [13.0, 14.0, 15.0], 0.15)
    pos, species = random_positions(rng, cell, 96, 2.4), rng.integers(0, 2, 96)
    explicit = single(make_model("ewald"), pos, species, cell)
    mesh = single(make_model("pme"), pos, species, cell)
    assert relative(mesh["energy"], explicit["energy"]) < 1e-4
    assert_close(mesh["forces"], explicit["forces"], 1e-3)


def test_a_cluster_is_the_limit_of_a_growing_periodic_box():
    """The same 12 atoms alone (pbc False) and in cubic periodic boxes of 40, 60 and 80 Å: the
    periodic energy approaches the cluster's. Most of the difference is the k = 0 term the periodic
    sum leaves out, (1/2V) Σ_c f_c(0) (Σ_i h_ic)²; with it added back, what remains is the
    interaction with the periodic images (the kernels' power-law tails, module docstring), below
    1e-5 of the energy."""
    model = make_model("ewald")
    term = ewald_term(model)
    rng = np.random.default_rng(7)
    pos = random_positions(rng, np.eye(3) * 7.0, 12, 2.5)
    species = rng.integers(0, 2, 12)
    cluster = single(model, pos, species, np.zeros((3, 3)), (False,) * 3)["energy"]
    with torch.no_grad():
        h = term.head(features(model, pos, species), torch.as_tensor(species))
        f0 = term.engine.explicit_kernel(torch.tensor([1e-12], dtype=torch.float64))[:, 0]
        k0 = float(0.5 * (f0 * h.sum(dim=0).square()).sum())
    errors, corrected = [], []
    for length in (40.0, 60.0, 80.0):
        box = single(model, pos + length / 2, species, np.eye(3) * length)["energy"]
        errors.append(abs(box - cluster))
        corrected.append(abs(box + k0 / length**3 - cluster))
    assert errors[0] > errors[1] > errors[2]
    assert max(corrected) < 1e-5 * abs(cluster)
    assert all(c < 0.2 * e for c, e in zip(corrected, errors, strict=True))


def features(model: Potential, pos: np.ndarray, species: np.ndarray) -> torch.Tensor:
    """The normalised descriptors (n, F) of an isolated frame, as the model computes them."""
    from fingerprints.neighbors import neighbor_list

    ei, _, shift = neighbor_list(pos, np.zeros((3, 3)), (False,) * 3, model.cutoff)
    x = torch.tensor(pos)
    edge_vec = x[ei[1]] - x[ei[0]] + torch.tensor(shift)
    return model.descriptors(torch.as_tensor(species), torch.as_tensor(ei), edge_vec, len(pos))


def test_a_partly_periodic_frame_is_refused():
    model = make_model("ewald")
    pos, species, cell = triclinic_frame(8, 10)
    with pytest.raises(RuntimeError, match="periodic along some directions only"):
        single(model, pos, species, cell, (True, True, False))


@pytest.mark.parametrize("value, message", [
    ("ewald", "model.long_range = 'ewald': expected none, ewald_mp, or a mapping"),
    ({"name": "ewald_mp", "chanels": 4}, "unknown option 'chanels' of ewald_mp; options: channels, k_cutoff"),
    ({"name": "ewald_mp", "k_cutoff": 0}, "ewald_mp option k_cutoff = 0: expected a number > 0"),
    ({"name": "ewald_mp", "channels": 2.5}, "ewald_mp option channels = 2.5: expected an integer >= 1"),
    ({"name": "ewald_mp", "mode": "p3m"}, "ewald_mp option mode = 'p3m': expected one of auto, ewald, pme"),
])
def test_bad_config_values_are_named_in_one_line(value, message):
    with pytest.raises(UserError) as info:
        load_config(None, {"model.long_range": value})
    assert message in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith("model.long_range = ")


def ase_atoms(pos: np.ndarray, species: np.ndarray, cell: np.ndarray) -> Atoms:
    return Atoms(symbols=[ELEMENTS[s] for s in species], positions=pos, cell=cell, pbc=True)


def calculator_results(path: Path, atoms: Atoms) -> dict[str, np.ndarray]:
    atoms = atoms.copy()
    atoms.calc = MLIPCalculator(path)
    return {"energy": np.array(atoms.get_potential_energy()),
            "atomic_energies": atoms.get_potential_energies(), "forces": atoms.get_forces(),
            "virial": -atoms.get_stress(voigt=False) * atoms.get_volume()}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Potential]:
    """A model with network energy and a PME ewald_mp term (the mesh path in TorchScript),
    exported by mlip.export."""
    model = make_model("pme", network_energy=True)
    path = tmp_path_factory.mktemp("ewald_mp") / "model.pt"
    export_model(copy.deepcopy(model), path, model_metadata(model))
    return path, model


def test_export_and_ase_calculator_match_the_model(exported):
    path, model = exported
    meta = read_metadata(path)
    assert meta["long_range"] is True and "ewald_mp" in meta["physics"]
    assert isinstance(torch.jit.load(str(path)), torch.jit.ScriptModule)
    pos, species, cell = triclinic_frame(9, 40)
    ref = single(model, pos, species, cell)
    got = calculator_results(path, ase_atoms(pos, species, cell))
    assert got["energy"] == pytest.approx(float(ref["energy"]), rel=1e-12)
    assert_close(got["forces"], ref["forces"], 1e-12)
    assert_close(got["virial"], ref["virial"], 1e-12)


def write_data(path: Path, pos: np.ndarray, species: np.ndarray, cell: np.ndarray) -> None:
    """LAMMPS data file (atom_style atomic) of a lower-triangular cell."""
    c = cell.tolist()
    lines = ["ewald_mp test", "", f"{len(pos)} atoms", "2 atom types", "",
             f"0 {c[0][0]!r} xlo xhi", f"0 {c[1][1]!r} ylo yhi", f"0 {c[2][2]!r} zlo zhi",
             f"{c[1][0]!r} {c[2][0]!r} {c[2][1]!r} xy xz yz", "", "Masses", "",
             *[f"{k + 1} {m}" for k, m in enumerate(MASSES)], "", "Atoms # atomic", "",
             *[f"{k + 1} {s + 1} {x!r} {y!r} {z!r}"
               for k, (s, (x, y, z)) in enumerate(zip(species.tolist(), pos.tolist(), strict=True))]]
    path.write_text("\n".join(lines) + "\n")


def lammps_input(model: Path, data: Path, out: Path, newton: bool) -> str:
    tag = out / f"newton{'on' if newton else 'off'}"
    return "\n".join([
        "clear", "units metal", "atom_style atomic", f"newton {'on' if newton else 'off'}",
        f"read_data {data}",
        f"pair_style mlip {model}", f"pair_coeff * * {' '.join(ELEMENTS)}",
        "compute pe all pe/atom", "compute p all pressure NULL virial",
        f"dump d all custom 1 {tag}.dump id fx fy fz c_pe", "dump_modify d sort id format float %.17g",
        "run 0",
        f'print "$(pe:%.17g) $(vol:%.17g) $(c_p[1]:%.17g) $(c_p[2]:%.17g) $(c_p[3]:%.17g) '
        f'$(c_p[4]:%.17g) $(c_p[5]:%.17g) $(c_p[6]:%.17g)" file {tag}.txt screen no', ""])


def read_lammps(tag: Path) -> dict[str, np.ndarray]:
    values = np.loadtxt(f"{tag}.txt")
    w = values[2:] * values[1] / NKTV2P_METAL  # xx yy zz xy xz yz
    dump = np.loadtxt(f"{tag}.dump", skiprows=9)
    return {"energy": values[0], "forces": dump[:, 1:4], "atomic_energies": dump[:, 4],
            "virial": np.array([[w[0], w[3], w[4]], [w[3], w[1], w[5]], [w[4], w[5], w[2]]])}


@pytest.mark.parametrize("ranks", [1, 2])
def test_lammps_matches_ase_on_one_and_two_ranks(exported, ranks, tmp_path):
    """pair_style mlip runs the long-range model in its gathered path (whole frame, atom IDs),
    newton on and off: energy, per-atom energies, forces and virial equal the ASE calculator's."""
    path, _ = exported
    pos, species, cell = triclinic_frame(10, 40)
    write_data(tmp_path / "cell.data", pos, species, cell)
    ref = calculator_results(path, ase_atoms(pos, species, cell))
    script = "".join(lammps_input(path, tmp_path / "cell.data", tmp_path, newton) for newton in (True, False))
    if ranks == 1:
        run_one_rank([script])
    else:
        run_two_ranks(tmp_path, script)
    for newton in ("on", "off"):
        got = read_lammps(tmp_path / f"newton{newton}")
        assert got["energy"] == pytest.approx(float(ref["energy"]), rel=1e-9)
        assert_close(got["atomic_energies"], ref["atomic_energies"], 1e-9)
        assert_close(got["forces"], ref["forces"], 1e-9)
        assert_close(got["virial"], ref["virial"], 1e-9)


def test_mlip_train_with_ewald_mp_runs_and_the_loss_decreases(tmp_path):
    """``mlip train`` on 8 LAMMPS Lennard-Jones Kr/Xe slab frames with ``model.long_range:
    ewald_mp``: the training loss falls, the filters leave zero, model.pt is long-range."""
    data = tmp_path / "slabs.h5"
    write_dataset(make_frames(8, seed=3), data)
    run = tmp_path / "run"
    args = ["train", str(data), "--epochs", "5", "--out", str(run), "--batch-size", "2",
            "--set", "model.hidden=[8]", "--set", "model.descriptors=[{type: radial_density, cutoff: 5.0}]",
            "--set", "model.long_range={name: ewald_mp, channels: 4}", "--set", "data.val_fraction=0",
            "--set", "train.stage_two_fraction=0", "--set", "train.ema_decay=0"]
    res = CliRunner().invoke(main, args, catch_exceptions=False, env={"MLIP_PROGRESS": "0"})
    assert res.exit_code == 0, res.output
    with (run / "metrics.csv").open() as fh:
        losses = [float(row["train_loss"]) for row in csv.DictReader(fh)]
    assert len(losses) == 5 and losses[-1] < 0.5 * losses[0], losses
    assert read_metadata(run / "model.pt")["long_range"] is True
    state = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    weights = [v for k, v in state.items() if k.endswith("mesh_filter.kernel.weight")]
    assert len(weights) == 1 and float(weights[0].abs().max()) > 0.0

    # --init carries the term's learned weights over (one epoch at a vanishing learning rate)
    again = tmp_path / "again"
    args = ["train", str(data), "--epochs", "1", "--out", str(again), "--init", str(run), "--set",
            "data.val_fraction=0", "--set", "train.lr=1e-12", "--set", "train.ema_decay=0"]
    res = CliRunner().invoke(main, args, catch_exceptions=False, env={"MLIP_PROGRESS": "0"})
    assert res.exit_code == 0, res.output
    started = load_checkpoint(again / "checkpoints" / "last.pt")["model"]
    key = next(k for k in state if k.endswith("mesh_filter.kernel.weight"))
    torch.testing.assert_close(started[key], state[key], rtol=1e-6, atol=1e-9)

    # separate runs cannot form a committee: each run's term would be lost but the first's
    res = CliRunner().invoke(main, ["committee", str(run), str(again), "-o", str(tmp_path / "c.pt")],
                             env={"MLIP_PROGRESS": "0"})
    assert res.exit_code == 2
    assert "has a learned long-range term (model.long_range" in res.output
