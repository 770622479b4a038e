"""mlip.interop.rann.read_input on the yttrium parameter set of ../shared/data/README.md
(file written here), checked against the double-loop reference of test_rann."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from test_rann import reference

from fingerprints.neighbors import neighbor_list
from mlip.interop.rann import read_input
from parsers.errors import ParseError

RADIAL = {"re": 3.607, "rc": 8.0, "dr": 2.393, "alpha": [4.5] * 5, "o": -1, "n": 3}
BOND = {"re": 3.607, "rc": 8.0, "dr": 4.393, "alphak": [1.0, 2.0, 6.0, 9.0], "k": 4, "m": 6}


def yttrium_text(rng, layersize0=29):
    out = ["# RANN yttrium (Dickel, Nitol, Barrett): fingerprints and a 29-15-1 network",
           "atomtypes:", "Y", "mass:Y:", "88.90584", "fingerprintsperelement:Y:", "2",
           "fingerprints:Y_Y:", "radialscreened_0", "fingerprints:Y_Y_Y:", "bondscreened_0"]
    for key, value in RADIAL.items():
        text = " ".join(f"{v:.6f}" for v in value) if isinstance(value, list) else str(value)
        out += [f"fingerprintconstants:Y_Y:radialscreened_0:{key}:", text]
    for key, value in BOND.items():
        text = " ".join(f"{v:.6f}" for v in value) if isinstance(value, list) else str(value)
        out += [f"fingerprintconstants:Y_Y_Y:bondscreened_0:{key}:", text]
    out += ["screening:Y_Y_Y:Cmin:", "0.36", "screening:Y_Y_Y:Cmax:", "2.8",
            "networklayers:Y:", "3", "layersize:Y:0:", str(layersize0), "layersize:Y:1:", "15",
            "layersize:Y:2:", "1", "weight:Y:0:"]
    w0, b0 = rng.normal(size=(15, layersize0)), rng.normal(size=15)
    w1, b1 = rng.normal(size=(1, 15)), rng.normal(size=1)
    out += ["\t".join(f"{v:.15e}" for v in row) for row in w0]
    out += ["bias:Y:0:"] + [f"{v:.15e}" for v in b0]
    out += ["weight:Y:1:", "\t".join(f"{v:.15e}" for v in w1[0]), "bias:Y:1:", f"{b1[0]:.15e}"]
    out += ["activationfunctions:Y:0:", "sigI", "activationfunctions:Y:1:", "linear",
            "calibrationparameters:algorithm:", "LMqr"]
    return "\n".join(out) + "\n", (w0, b0, w1, b1)


@pytest.fixture
def y_file(tmp_path):
    text, arrays = yttrium_text(np.random.default_rng(0))
    path = tmp_path / "y.input"
    path.write_text(text)
    return path, arrays


def test_reads_yttrium_parameters(y_file):
    path, (w0, b0, w1, b1) = y_file
    rann = read_input(path)
    assert rann.elements == ["Y"] and rann.masses == {"Y": pytest.approx(88.90584)}
    radial, bond = rann.descriptors
    assert radial["type"] == "rann_radial_screened" and bond["type"] == "rann_bond_screened"
    assert {k: radial[k] for k in RADIAL} == RADIAL and radial["neighbors"] == ["Y"]
    assert {k: bond[k] for k in BOND} == BOND and bond["pairs"] == [["Y", "Y"]]
    assert radial["Cmin"] == {"Y_Y_Y": 0.36} and bond["Cmax"] == {"Y_Y_Y": 2.8}
    assert rann.layer_sizes["Y"] == [29, 15, 1] and rann.activations["Y"] == ["sigI", "linear"]
    np.testing.assert_allclose(rann.weights["Y"][0], w0, rtol=1e-14)
    np.testing.assert_allclose(rann.biases["Y"][0], b0, rtol=1e-14)
    np.testing.assert_allclose(rann.weights["Y"][1], w1, rtol=1e-14)
    np.testing.assert_allclose(rann.biases["Y"][1], b1, rtol=1e-14)
    assert rann.descriptor_set().n_features == 29


def test_yttrium_features_match_double_loop(y_file):
    ds = read_input(y_file[0]).descriptor_set()
    atoms = bulk("Y", "hcp", a=3.65, c=5.73)
    atoms.rattle(0.15, seed=3)
    pos, cell = atoms.positions, atoms.cell.array
    species = np.zeros(len(atoms), dtype=int)
    ei, _, sh = neighbor_list(pos, cell, True, ds.cutoff)
    vec = torch.tensor(pos[ei[1]] - pos[ei[0]] + sh)
    got = ds.raw(torch.tensor(species), torch.tensor(ei), vec, len(atoms))
    cmin, cmax = np.full((1, 1, 1), 0.36), np.full((1, 1, 1), 2.8)
    radial = reference(pos, cell, species, 1, "radial", RADIAL, True, cmin, cmax).reshape(len(atoms), -1)
    bond = reference(pos, cell, species, 1, "bond", BOND, True, cmin, cmax).reshape(len(atoms), -1)
    np.testing.assert_allclose(got.numpy(), np.concatenate([radial, bond], axis=1), rtol=1e-10)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("4.500000 4.500000 4.500000 4.500000 4.500000", "4.5 4.5"), "5 alpha values"),
        (lambda t: t.replace("0.36", "zero"), "float values"),
        (lambda t: t.replace("mass:Y:", "mass:Cu:"), "an element from atomtypes"),
        (lambda t: t.replace("radialscreened_0\n", "radialspin_0\n", 1), "style"),
        (lambda t: t.replace("fingerprintconstants:Y_Y:radialscreened_0:re:\n3.607\n", ""), r"\['re'\]"),
        (lambda t: t.replace("networklayers:Y:", "layers:Y:"), "known RANN keyword"),
    ],
)
def test_bad_files_are_reported(tmp_path, edit, message):
    text, _ = yttrium_text(np.random.default_rng(1))
    path = tmp_path / "bad.input"
    path.write_text(edit(text))
    with pytest.raises(ParseError, match=message) as err:
        read_input(path)
    assert str(path) in str(err.value)


def test_layer_size_must_match_fingerprints(tmp_path):
    text, _ = yttrium_text(np.random.default_rng(2), layersize0=30)
    path = tmp_path / "y.input"
    path.write_text(text)
    with pytest.raises(ParseError, match="29 fingerprint values"):
        read_input(path)


def test_real_yttrium_frames_match_double_loop(shared_data, y_file):
    """Triclinic hcp frames of the RANN training set, read with parsers, vs the double loop."""
    from itertools import islice

    from parsers.lammps_dump import read_lammps_dump

    ds = read_input(y_file[0]).descriptor_set()
    cmin, cmax = np.full((1, 1, 1), 0.36), np.full((1, 1, 1), 2.8)
    dump = read_lammps_dump(shared_data / "yttrium" / "hcp_strain.dump", types={1: "Y"})
    frames = list(islice(dump, 0, 600, 300))
    assert len(frames) == 2 and any(abs(f.cell[1, 0]) > 0.1 for f in frames)  # tilted boxes
    for frame in frames:
        pos, cell = frame.positions, frame.cell
        species = np.zeros(len(pos), dtype=int)
        ei, _, sh = neighbor_list(pos, cell, True, ds.cutoff)
        vec = torch.tensor(pos[ei[1]] - pos[ei[0]] + sh)
        got = ds.raw(torch.tensor(species), torch.tensor(ei), vec, len(pos)).numpy()
        radial = reference(pos, cell, species, 1, "radial", RADIAL, True, cmin, cmax).reshape(len(pos), -1)
        bond = reference(pos, cell, species, 1, "bond", BOND, True, cmin, cmax).reshape(len(pos), -1)
        ref = np.concatenate([radial, bond], axis=1)
        # odd cosine powers nearly cancel in hcp: compare them on the scale of the features
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-13 * np.abs(ref).max())
