"""n2p2 import: the published mlearn NNPs reproduce an independent evaluator's predictions, a
two-element model with every supported option matches a plain evaluation of n2p2's formulas, the
CLI writes a model.pt that runs in ASE, and unsupported settings fail clearly."""

import itertools
import json
import math
import traceback

import numpy as np
import pytest
import torch
from ase import Atoms
from click.testing import CliRunner

from mlip.batching import collate, frame_to_graph
from mlip.calculator import MLIPCalculator
from mlip.cli import main
from mlip.errors import UserError
from mlip.export import read_metadata
from mlip.interop import n2p2
from parsers.mlearn import read_mlearn_json

ELEMENTS = ["Cu", "Li", "Mo", "Si"]


def predict(model, frames, forces: bool):
    """Energies (B,) eV and, with ``forces``, forces (N, 3) eV/Å of all frames in one batch."""
    b = collate([frame_to_graph(f, model.elements, model.cutoff) for f in frames], torch.float64, "cpu")
    with torch.set_grad_enabled(forces):
        res = model.compute(b, forces, False, False)
    return res["energy"].detach().numpy(), res["forces"].detach().numpy() if forces else None


@pytest.mark.parametrize("element", ELEMENTS)
def test_reproduces_published_mlearn_nnp(shared_data, element):
    """Every test structure's energy to 1e-6 eV/atom, the first five's forces to 1e-5 eV/Å."""
    model = n2p2.load(shared_data / "n2p2_nnp" / element)
    reference = json.loads((shared_data / "n2p2_nnp" / "reference_predictions.json").read_text())[element]
    frames = list(read_mlearn_json(shared_data / "mlearn" / element / "test.json"))
    assert len(frames) == len(reference)
    energies, _ = predict(model, frames, forces=False)
    n_atoms = np.array([len(f) for f in frames])
    ref_energies = np.array([r["energy_eV"] for r in reference])
    assert np.max(np.abs(energies - ref_energies) / n_atoms) < 1e-6

    with_forces = [k for k, r in enumerate(reference) if r.get("forces_eV_per_A") is not None]
    assert with_forces == [0, 1, 2, 3, 4]
    _, forces = predict(model, [frames[k] for k in with_forces], forces=True)
    ref_forces = np.concatenate([np.array(reference[k]["forces_eV_per_A"]) for k in with_forces])
    assert forces.shape == ref_forces.shape
    assert np.abs(forces - ref_forces).max() < 1e-5


def test_cli_writes_model_that_runs_in_ase(shared_data, tmp_path):
    directory = shared_data / "n2p2_nnp" / "Cu"
    out = tmp_path / "cu_nnp.pt"
    result = CliRunner().invoke(main, ["import-n2p2", str(directory), "-o", str(out)])
    assert result.exit_code == 0, "".join(traceback.format_exception(*result.exc_info))
    meta = read_metadata(out)
    assert meta["elements"] == ["Cu"]
    assert meta["dtype"] == "float64"
    assert meta["units"] == "metal"
    assert meta["cutoff"] == pytest.approx(7.7478771 * n2p2.BOHR_ANGSTROM)
    assert meta["descriptors"][0]["type"] == "acsf"
    assert len(meta["descriptors"][0]["functions"]) == 27
    assert meta["imported_from"]["format"] == "n2p2"
    assert meta["imported_from"]["weights"] == ["weights.029.data"]

    frame = next(iter(read_mlearn_json(shared_data / "mlearn" / "Cu" / "test.json")))
    reference = json.loads((shared_data / "n2p2_nnp" / "reference_predictions.json").read_text())["Cu"][0]
    atoms = Atoms(numbers=frame.numbers, positions=frame.positions, cell=frame.cell, pbc=frame.pbc)
    atoms.calc = MLIPCalculator(out)
    assert abs(atoms.get_potential_energy() - reference["energy_eV"]) / len(atoms) < 1e-6
    assert np.abs(atoms.get_forces() - np.array(reference["forces_eV_per_A"])).max() < 1e-5


# -- a synthetic two-element model, evaluated plainly ------------------------------------------------
# Elements Ni (Z=28, n2p2 index 1) and Cu (Z=29, index 2). Each centre element's SFs are listed in
# n2p2's sorted order (type, rc, eta, rs, zeta, lambda, neighbour elements); the file gets them
# shuffled. Tuples: (type, neighbours, eta 1/Bohr², rs Bohr, rc Bohr, zeta, lambda).
SF_SORTED = {
    "Ni": [(2, ["Ni"], 0.02, 0.0, 7.0, 0, 0), (2, ["Cu"], 0.02, 0.0, 7.0, 0, 0),
           (2, ["Ni"], 0.05, 3.0, 7.0, 0, 0), (3, ["Ni", "Cu"], 0.01, 0.0, 7.0, 1.0, -1.0),
           (3, ["Ni", "Cu"], 0.01, 0.0, 7.0, 2.0, 1.0), (9, ["Cu", "Cu"], 0.01, 0.5, 6.5, 1.0, 1.0)],
    "Cu": [(2, ["Cu"], 0.03, 0.0, 6.5, 0, 0), (2, ["Ni"], 0.03, 0.0, 7.0, 0, 0),
           (3, ["Ni", "Ni"], 0.02, 0.0, 7.0, 4.0, 1.0), (3, ["Ni", "Cu"], 0.02, 0.0, 7.0, 4.0, 1.0)],
}
HIDDEN = [5, 3]
ACTIVATIONS = ["t", "s", "p"]  # tanh, logistic, softplus output (not linear: exercises the output activation)
ATOM_ENERGY = {"Ni": -0.31, "Cu": -0.42}
MEAN_ENERGY, CONV_ENERGY, CONV_LENGTH = -0.05, 4.0, 1.7
SCALE_MIN, SCALE_MAX = -1.0, 1.0
LENGTH_UNIT, ENERGY_UNIT = 0.5, 20.0  # Å and eV per file unit (deliberately not Bohr/Hartree)


def cutoff_poly2(r, rc, alpha):
    """n2p2 cutoff type 6 (poly2) with inner fraction alpha."""
    if r >= rc:
        return 0.0
    x = (r - alpha * rc) / (rc - alpha * rc)
    if x <= 0.0:
        return 1.0
    return ((15.0 - 6.0 * x) * x - 10.0) * x ** 3 + 1.0


ALPHA = 0.2


def symmetry_function(sf, i, neighbors):
    """One SF of atom i by explicit loops; ``neighbors``: list of (element, vector r_ij in Bohr)."""
    kind, elems, eta, rs, rc, zeta, lam = sf
    if kind == 2:
        total = 0.0
        for el, v in neighbors:
            r = np.linalg.norm(v)
            if el == elems[0] and r < rc:
                total += math.exp(-eta * (r - rs) ** 2) * cutoff_poly2(r, rc, ALPHA)
        return total
    total = 0.0
    for (ej, vj), (ek, vk) in itertools.combinations(neighbors, 2):
        if sorted([ej, ek]) != sorted(elems):
            continue
        rij, rik, rjk = np.linalg.norm(vj), np.linalg.norm(vk), np.linalg.norm(vk - vj)
        if rij >= rc or rik >= rc:
            continue
        base = 1.0 + lam * (vj @ vk) / (rij * rik)
        if base <= 0.0:
            continue
        gauss = (rij - rs) ** 2 + (rik - rs) ** 2
        fc = cutoff_poly2(rij, rc, ALPHA) * cutoff_poly2(rik, rc, ALPHA)
        if kind == 3:
            gauss += (rjk - rs) ** 2
            fc *= cutoff_poly2(rjk, rc, ALPHA)
        total += base ** zeta * math.exp(-eta * gauss) * fc
    return 2.0 ** (1.0 - zeta) * total


def plain_energy(symbols, positions_bohr, cell_bohr, params, stats):
    """n2p2's total energy (file units) of a periodic structure, by loops over images."""
    n = len(symbols)
    images = [np.array(s) @ cell_bohr for s in itertools.product(range(-3, 4), repeat=3)]
    activation = {"t": np.tanh, "s": lambda x: 1.0 / (1.0 + np.exp(-x)), "p": lambda x: np.log1p(np.exp(x))}
    energy = 0.0
    for i in range(n):
        neighbors = [(symbols[j], positions_bohr[j] - positions_bohr[i] + shift)
                     for j in range(n) for shift in images
                     if 1e-9 < np.linalg.norm(positions_bohr[j] - positions_bohr[i] + shift) < 7.0]
        el = symbols[i]
        g = np.array([symmetry_function(sf, i, neighbors) for sf in SF_SORTED[el]])
        gmin, gmax, gmean = stats[el][:, 0], stats[el][:, 1], stats[el][:, 2]
        x = SCALE_MIN + (SCALE_MAX - SCALE_MIN) * (g - gmean) / (gmax - gmin)  # scale + center
        for k, (w, b) in enumerate(params[el]):
            x = activation[ACTIVATIONS[k]](w @ x + b)
        energy += x[0] / CONV_ENERGY + MEAN_ENERGY + ATOM_ENERGY[el]
    return energy


def write_model(directory, rng):
    """input.nn, scaling.data and weights.028/029.data of the synthetic model; returns (params, stats)."""
    lines = ["number_of_elements 2", "elements Cu Ni", "cutoff_type 6 0.2", "scale_symmetry_functions",
             "center_symmetry_functions", f"scale_min_short {SCALE_MIN}", f"scale_max_short {SCALE_MAX}",
             "normalize", f"mean_energy {MEAN_ENERGY}", f"conv_energy {CONV_ENERGY}",
             f"conv_length {CONV_LENGTH}", f"global_hidden_layers_short {len(HIDDEN)}",
             "global_nodes_short " + " ".join(map(str, HIDDEN)),
             "global_activation_short " + " ".join(ACTIVATIONS), "epochs 10  # training keywords are ignored",
             "use_short_forces"]
    lines += [f"atom_energy {el} {e}" for el, e in ATOM_ENERGY.items()]
    sf_lines = []
    for el, sfs in SF_SORTED.items():
        for kind, elems, eta, rs, rc, zeta, lam in sfs:
            if kind == 2:
                sf_lines.append(f"symfunction_short {el} 2 {elems[0]} {eta} {rs} {rc}")
            else:  # neighbour elements in the file's order need not be sorted
                sf_lines.append(f"symfunction_short {el} {kind} {elems[1]} {elems[0]} {eta} {lam} {zeta} "
                                f"{rc} {rs}")
    rng.shuffle(sf_lines)
    (directory / "input.nn").write_text("\n".join(lines + sf_lines) + "\n")

    stats, params, scaling = {}, {}, []
    for e_index, (el, z) in enumerate((("Ni", 28), ("Cu", 29)), start=1):
        n_sf = len(SF_SORTED[el])
        low = rng.uniform(0.0, 0.5, n_sf)
        stats[el] = np.stack([low, low + rng.uniform(1.0, 3.0, n_sf), low + rng.uniform(0.2, 1.0, n_sf),
                              rng.uniform(0.1, 1.0, n_sf)], axis=1)
        scaling += [f"{e_index} {s + 1} " + " ".join(f"{v:.17g}" for v in row)
                    for s, row in enumerate(stats[el])]
        sizes = [n_sf] + HIDDEN + [1]
        params[el] = [(rng.normal(0, 0.5, (sizes[k + 1], sizes[k])), rng.normal(0, 0.5, sizes[k + 1]))
                      for k in range(len(sizes) - 1)]
        rows, index = [], 0
        for k, (w, b) in enumerate(params[el]):
            for a in range(sizes[k]):
                for c in range(sizes[k + 1]):
                    index += 1
                    rows.append(f"{w[c, a]:.17g} a {index} {k} {a + 1} {k + 1} {c + 1}")
            for c in range(sizes[k + 1]):
                index += 1
                rows.append(f"{b[c]:.17g} b {index} {k + 1} {c + 1}")
        (directory / f"weights.{z:03d}.data").write_text("# n2p2 weights\n" + "\n".join(rows) + "\n")
    (directory / "scaling.data").write_text("\n".join(scaling) + "\n")
    return params, stats


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    directory = tmp_path_factory.mktemp("n2p2_synthetic")
    params, stats = write_model(directory, np.random.default_rng(7))
    return directory, params, stats


def synthetic_structure(rng):
    cell = np.array([[5.2, 0.0, 0.0], [0.9, 4.8, 0.0], [0.4, -0.7, 5.5]])  # Å
    positions = rng.uniform(0.0, 1.0, (5, 3)) @ cell
    return ["Ni", "Cu", "Cu", "Ni", "Cu"], positions, cell


def test_two_element_model_matches_plain_evaluation(synthetic):
    """Per-element sorted SF lists of different lengths, types 2/3/9, poly2 cutoff with alpha,
    scale+center, normalize (conv_energy, mean_energy, conv_length), atom energies, activations t s p
    and non-default units: energy against n2p2's formulas by loops, forces against its finite differences."""
    directory, params, stats = synthetic
    model = n2p2.load(directory, length_unit=LENGTH_UNIT, energy_unit=ENERGY_UNIT)
    assert model.elements == ["Ni", "Cu"]
    symbols, positions, cell = synthetic_structure(np.random.default_rng(3))

    def plain(pos):
        return ENERGY_UNIT * plain_energy(symbols, pos / LENGTH_UNIT, cell / LENGTH_UNIT, params, stats)

    atoms = Atoms(symbols, positions=positions, cell=cell, pbc=True)
    atoms.calc = MLIPCalculator(model)
    energy = atoms.get_potential_energy()
    assert energy == pytest.approx(plain(positions), abs=1e-10, rel=1e-12)
    forces = atoms.get_forces()
    h = 1e-5
    for atom, axis in [(0, 0), (1, 2), (4, 1)]:
        plus, minus = positions.copy(), positions.copy()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        fd = -(plain(plus) - plain(minus)) / (2 * h)
        assert forces[atom, axis] == pytest.approx(fd, abs=1e-6)


def test_weight_files_by_epoch(tmp_path):
    for z in (28, 29):
        for epoch in (3, 12):
            (tmp_path / f"weights.{z:03d}.{epoch:06d}.out").write_text("")
    (tmp_path / "weights.028.000020.out").write_text("")  # Cu has no epoch 20
    assert n2p2.weight_files(tmp_path, ["Ni", "Cu"]) == {
        "Ni": tmp_path / "weights.028.000012.out", "Cu": tmp_path / "weights.029.000012.out"}
    assert n2p2.weight_files(tmp_path, ["Ni", "Cu"], epoch=3)["Cu"] == tmp_path / "weights.029.000003.out"
    with pytest.raises(UserError, match="epoch 20 not found: weights.029.000020.out"):
        n2p2.weight_files(tmp_path, ["Ni", "Cu"], epoch=20)
    for z in (28, 29):
        (tmp_path / f"weights.{z:03d}.data").write_text("")
    assert n2p2.weight_files(tmp_path, ["Ni", "Cu"])["Ni"] == tmp_path / "weights.028.data"


# -- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("line, message", [
    ("nnp_type 4", r"input.nn:\d+: keyword 'nnp_type' = 4 is not supported"),
    ("electrostatic_type 1", r"input.nn:\d+: keyword 'electrostatic_type' is not supported: long-range"),
    ("normalize_nodes", r"keyword 'normalize_nodes' is not supported"),
    ("global_activation_short t g l", r"global_activation_short: activation 'g' is not supported"),
    ("symfunction_short Ni 12 Ni 0.1 0.2 7.0", r"input.nn:\d+: symmetry function type 12 is not supported"),
    ("symfunction_short Ni 2 Fe 0.1 0.2 7.0", r"element 'Fe' is not one of the elements"),
    ("symfunction_short Ni 3 Cu Xx 0.1 1 1 7.0", r"input.nn:\d+: element 'Xx' is not one of the elements"),
])
def test_unsupported_settings_name_the_keyword(synthetic, tmp_path, line, message):
    directory, _, _ = synthetic
    for f in directory.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    text = (tmp_path / "input.nn").read_text()
    (tmp_path / "input.nn").write_text(text + line + "\n")
    with pytest.raises(UserError, match=message):
        n2p2.load(tmp_path)
    result = CliRunner().invoke(main, ["import-n2p2", str(tmp_path), "-o", str(tmp_path / "m.pt")])
    assert result.exit_code == 2
    assert "mlip: error:" in result.output and "input.nn" in result.output
    assert not (tmp_path / "m.pt").exists()


def test_incomplete_weights_and_scaling_fail_clearly(synthetic, tmp_path):
    directory, _, _ = synthetic
    for f in directory.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    weights = (tmp_path / "weights.029.data").read_text().splitlines()
    (tmp_path / "weights.029.data").write_text("\n".join(weights[:-1]) + "\n")
    with pytest.raises(UserError, match="weights.029.data: weights of layer 2 -> 3 are incomplete"):
        n2p2.load(tmp_path)
    (tmp_path / "weights.029.data").write_text("\n".join(weights) + "\n")
    scaling = (tmp_path / "scaling.data").read_text().splitlines()
    (tmp_path / "scaling.data").write_text("\n".join(scaling[:-1]) + "\n")
    with pytest.raises(UserError, match=r"no statistics for element 2 \(Cu\) symmetry function\(s\) \[4\]"):
        n2p2.load(tmp_path)
    (tmp_path / "scaling.data").write_text("\n".join(scaling + ["2 9 0.0 1.0 0.5 0.1"]) + "\n")
    with pytest.raises(UserError, match=r"the settings do not define: \[\(2, 9\)\]"):
        n2p2.load(tmp_path)


def test_imported_model_runs_in_lammps(shared_data, tmp_path):
    """pair_style mlip with the imported Cu NNP on an orthogonal 107-atom test cell (ghost atoms,
    LAMMPS' own neighbour list) against the independent evaluator's energy and forces."""
    from mlip.lammps import load_lammps
    from mlip.lammps.build import ensure_built

    plugin = ensure_built()
    model = n2p2.export(shared_data / "n2p2_nnp" / "Cu", tmp_path / "cu_nnp.pt")
    frame = next(iter(read_mlearn_json(shared_data / "mlearn" / "Cu" / "test.json")))
    reference = json.loads((shared_data / "n2p2_nnp" / "reference_predictions.json").read_text())["Cu"][0]
    lengths = np.diag(frame.cell)
    assert np.array_equal(frame.cell, np.diag(lengths))
    positions = np.mod(frame.positions, lengths)
    rows = [f"{k + 1} 1 {x:.17g} {y:.17g} {z:.17g}" for k, (x, y, z) in enumerate(positions)]
    (tmp_path / "cu.data").write_text(
        f"Cu test structure 0\n\n{len(rows)} atoms\n1 atom types\n\n"
        + "".join(f"0 {v:.17g} {a}lo {a}hi\n" for v, a in zip(lengths, "xyz", strict=True))
        + "\nMasses\n\n1 63.546\n\nAtoms # atomic\n\n" + "\n".join(rows) + "\n")
    threads = torch.get_num_threads()  # the plugin sets libtorch's (shared) thread count
    lmp = load_lammps().lammps(cmdargs=["-log", "none", "-screen", "none"])
    try:
        lmp.commands_string(f"""
plugin load {plugin}
units metal
atom_style atomic
boundary p p p
read_data {tmp_path / 'cu.data'}
pair_style mlip {model}
pair_coeff * * Cu
run 0
""")
        energy = lmp.get_thermo("pe")
        forces = np.ctypeslib.as_array(lmp.gather_atoms("f", 1, 3)).reshape(-1, 3).copy()  # by atom id
    finally:
        lmp.close()
        torch.set_num_threads(threads)
    assert abs(energy - reference["energy_eV"]) / len(rows) < 1e-6
    assert np.abs(forces - np.array(reference["forces_eV_per_A"])).max() < 1e-5
