"""parsers.read on real data sets (yttrium RANN dumps, mlearn JSON, 4G-HDNNP
input.data, VASP outputs shipped with ASE), folders, format detection, and
the Frame converters."""

from __future__ import annotations

import gzip
import json
import re
import shutil
from pathlib import Path

import ase
import ase.io
import numpy as np
import pytest

import parsers
from mlip.demo.cu_eam import write_cu_eam_dumps

BOHR = 0.529177210903
HARTREE = 27.211386245988
EV_PER_A3_PER_KBAR = 0.1 / 160.21766208

# ../shared/data/README.md
YTTRIUM_FRAMES = {
    "1NN.dump": 90, "2NN.dump": 89, "3NN.dump": 88, "FreeSurface.dump": 85, "ManualStrain.dump": 49,
    "bcc_strain.dump": 1080, "fcc_strain.dump": 1080, "hcp_strain.dump": 1089, "liquid.dump": 100,
}


def _timestep_energies(path: Path) -> list[float]:
    """E_total of every frame, read plainly: the second field after each TIMESTEP item."""
    lines = path.read_text().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("ITEM: TIMESTEP")]
    return [float(lines[i + 1].split()[1]) for i in starts]


def test_yttrium_folder(shared_data):
    folder = shared_data / "yttrium"
    frames = list(parsers.read(folder, types={1: "Y"}))
    by_file: dict[str, list] = {}
    for frame in frames:
        by_file.setdefault(Path(frame.source).name, []).append(frame)
    assert list(by_file) == sorted(YTTRIUM_FRAMES)  # folder read in name order
    for name, count in YTTRIUM_FRAMES.items():
        got = by_file[name]
        assert len(got) == count, name
        energies = _timestep_energies(folder / name)
        assert got[0].energy == energies[0] and got[-1].energy == energies[-1]
        assert all(f.forces is None and (f.numbers == 39).all() and f.pbc.all() for f in got)
    # first 1NN frame: 'xlo_b xhi_b xy / ylo_b yhi_b xz / zlo zhi yz', tilts xy=-5.796..., xz=-0.8635...,
    # yz=-1.5904...; xlo = xlo_b - min(0, xy, xz, xy+xz) = 0 and ylo = ylo_b - min(0, yz) = 0 here
    cell = by_file["1NN.dump"][0].cell
    expected = [
        [10.6426540787132993, 0.0, 0.0],
        [-5.7964044747763319, 8.9256853388485613, 0.0],
        [-0.8635023813304824, -1.5903743695984427, 16.3996700907443120],
    ]
    np.testing.assert_allclose(cell, expected, atol=1e-12, rtol=0)
    first = ase.io.read(folder / "1NN.dump", format="lammps-dump-text", index=0)
    np.testing.assert_allclose(by_file["1NN.dump"][0].positions, first.positions, atol=1e-12)
    assert {len(f) for f in by_file["liquid.dump"]} == set(range(14, 20))


def test_mlearn_cu_test_set(shared_data):
    path = shared_data / "mlearn" / "Cu" / "test.json"
    records = json.loads(path.read_text())
    frames = list(parsers.read(path))
    assert len(frames) == 31 and sum(len(f) for f in frames) == 3178
    for frame, rec in zip(frames, records, strict=True):
        out = rec["outputs"]
        assert frame.energy == out["energy"] and frame.group == rec["group"]
        np.testing.assert_array_equal(frame.forces, out["forces"])
        np.testing.assert_allclose(frame.positions, [s["xyz"] for s in rec["structure"]["sites"]], atol=1e-12)
        xx, yy, zz, xy, xz, yz = out["virial_stress"]
        # kbar, positive = compressive → ASE eV/Å³, positive = tensile (order: next test)
        np.testing.assert_allclose(frame.stress[0, 0], -xx * EV_PER_A3_PER_KBAR, rtol=1e-12)
        np.testing.assert_allclose(frame.stress[1, 2], -yz * EV_PER_A3_PER_KBAR, rtol=1e-12)
        np.testing.assert_allclose(frame.stress[0, 2], -xz * EV_PER_A3_PER_KBAR, rtol=1e-12)
        np.testing.assert_allclose(frame.stress[0, 1], -xy * EV_PER_A3_PER_KBAR, rtol=1e-12)
        np.testing.assert_array_equal(frame.stress, frame.stress.T)
        assert frame.pbc.all() and (frame.numbers == 29).all()
    assert {f.group for f in frames} == {r["group"] for r in records}


@pytest.mark.parametrize("element", ["Cu", "Mo"])
def test_mlearn_shear_stress_matches_lammps_qsnap(shared_data, element):
    """The order of mlearn's shear stresses, checked against an independent reference: the stress
    that LAMMPS computes with the Zuo et al. qSNAP potential (fitted to the same DFT data) on the
    strained structures. Each parsed component follows qSNAP's (the shear ones to 0.2 GPa); with
    VASP's order (xy yz zx) xz and yz would not correlate at all."""
    from physics_reference import lammps_reference

    from mlip.lammps import potentials_dir
    from mlip.lammps.cell import lammps_cell

    pot = potentials_dir() / f"{element}_Zuo_JPCA2020.quadratic"
    style = ["pair_style snap", f"pair_coeff * * {pot}.snapcoeff {pot}.snapparam {element}"]
    frames = [f for f in parsers.read(shared_data / "mlearn" / element / "training.json")
              if f.group == "Elastic"][:8]
    parsed, qsnap = [], []
    for frame in frames:
        lower, q = lammps_cell(frame.cell)  # LAMMPS' cell (cell @ q = lower); the virial back with q
        frac = np.linalg.solve(frame.cell.T, frame.positions.T).T % 1.0
        ref = lammps_reference(lower, frac @ lower, np.ones(len(frame), dtype=int), 1, style)
        qsnap.append(-(q @ ref["virial"] @ q.T) / abs(np.linalg.det(frame.cell)))
        parsed.append(frame.stress)
    parsed_gpa, qsnap_gpa = np.array(parsed) * 160.21766208, np.array(qsnap) * 160.21766208
    for a, b in [(0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)]:
        assert np.corrcoef(parsed_gpa[:, a, b], qsnap_gpa[:, a, b])[0, 1] > 0.98, (a, b)
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        assert np.abs(parsed_gpa[:, a, b] - qsnap_gpa[:, a, b]).max() < 0.2, (a, b)
    assert np.abs(parsed_gpa[:, [0, 0, 1], [1, 2, 2]]).max() > 1.0  # the frames are sheared


def test_runner_carbon_chain(shared_data):
    path = shared_data / "longrange_4g" / "nnp-train" / "Carbon_chain_4G" / "input.data"
    frames = list(parsers.read(path))
    assert len(frames) == 128
    charges = [f.total_charge for f in frames]
    assert charges.count(0.0) == 66 and charges.count(1.0) == 62
    # first structure, read plainly from the file (Bohr, Hartree)
    lines = path.read_text().splitlines()
    atom = lines[1].split()
    first = frames[0]
    assert first.energy == pytest.approx(float(lines[13].split()[1]) * HARTREE, rel=1e-15)
    np.testing.assert_allclose(first.positions[0], np.array(atom[1:4], float) * BOHR, rtol=1e-15)
    np.testing.assert_allclose(first.forces[0], np.array(atom[7:10], float) * HARTREE / BOHR, rtol=1e-15)
    assert first.charges[0] == float(atom[5])
    assert first.numbers.tolist() == [6] * 10 + [1] * 2
    assert not first.pbc.any() and not first.cell.any()
    for frame in frames:  # Hirshfeld charges sum to the total charge
        assert frame.charges.sum() == pytest.approx(frame.total_charge, abs=1e-3)


def test_runner_periodic_slab(shared_data):
    path = shared_data / "longrange_4g" / "nnp-train" / "AlAuMgO_4G" / "input.data"
    lines = path.read_text().splitlines()
    lattice = [np.array(line.split()[1:], float) for line in lines if line.startswith("lattice")][:3]
    frames = list(parsers.read(path))
    assert len(frames) == 18 and all(f.pbc.all() for f in frames)
    np.testing.assert_allclose(frames[0].cell, np.array(lattice) * BOHR, rtol=1e-15)


def _ase_testdata() -> Path:
    folder = Path(ase.__file__).parent / "test" / "testdata" / "vasp"
    if not folder.is_dir():
        pytest.skip("ASE's test data (real VASP outputs) is not installed")
    return folder


def test_vasp_outcar():
    path = _ase_testdata() / "OUTCAR_example_1"
    text = path.read_text().splitlines()
    frames = list(parsers.read(path, format="outcar"))
    frame = frames[-1]
    e0 = [float(line.split()[-1]) for line in text if "energy(sigma->0)" in line][-1]
    assert frame.energy == e0
    i = max(k for k, line in enumerate(text) if "TOTAL-FORCE" in line)
    forces = np.array([line.split()[3:6] for line in text[i + 2 : i + 2 + len(frame)]], float)
    np.testing.assert_allclose(frame.forces, forces, atol=1e-6)
    kb = [np.array(line.split()[2:8], float) for line in text if line.strip().startswith("in kB")][-1]
    xx, yy, zz, xy, yz, zx = kb
    expected = -EV_PER_A3_PER_KBAR * np.array([[xx, xy, zx], [xy, yy, yz], [zx, yz, zz]])
    np.testing.assert_allclose(frame.stress, expected, rtol=1e-6)


def test_vasprun_xml():
    path = _ase_testdata() / "vasprun_pstress.xml"
    text = path.read_text()
    frames = list(parsers.read(path))
    # the energy of the last electronic step: calculation/energy would add PSTRESS's PV term
    last_scstep = text[: text.rindex("</scstep>")]
    e0 = float(re.findall(r'<i name="e_0_energy">\s*(\S+)\s*</i>', last_scstep)[-1])
    assert frames[-1].energy == pytest.approx(e0, abs=1e-8)
    assert frames[-1].stress is not None and frames[-1].forces is not None


@pytest.fixture(scope="module")
def cu_dump(tmp_path_factory):
    return write_cu_eam_dumps(tmp_path_factory.mktemp("cu"), n_frames=3, every=5, triclinic=True)


def test_extxyz_round_trip(cu_dump, tmp_path):
    frames = list(parsers.read(cu_dump.dump, types={1: "Cu"}, energy_column="c_pe"))
    rng = np.random.default_rng(0)
    images = []
    for k, frame in enumerate(frames):
        frame.stress = np.diag([0.01, -0.02, 0.03]) + k * 1e-3
        frame.charges = rng.normal(size=len(frame))
        frame.total_charge, frame.energy_weight, frame.force_weight = float(k), 2.0, 0.5
        images.append(frame.to_ase())
    path = tmp_path / "frames.extxyz"
    ase.io.write(path, images, format="extxyz")
    back = list(parsers.read(path))
    assert len(back) == len(frames)
    tol = 1e-7  # ASE writes extxyz numbers with 8 decimals
    for a, b in zip(frames, back, strict=True):
        for name in ("positions", "cell", "forces", "stress", "charges"):
            np.testing.assert_allclose(getattr(b, name), getattr(a, name), atol=tol, rtol=0, err_msg=name)
        assert b.energy == pytest.approx(a.energy, abs=tol)
        assert (b.total_charge, b.energy_weight, b.force_weight) == (a.total_charge, 2.0, 0.5)
        assert b.source == str(path)


def test_frame_converters_round_trip(shared_data):
    frame = next(parsers.read(shared_data / "mlearn" / "Cu" / "test.json"))
    frame.charges = np.linspace(-1, 1, len(frame))
    back = parsers.Frame.from_ase(frame.to_ase())
    for name in ("numbers", "positions", "cell", "pbc", "forces", "stress", "charges"):
        np.testing.assert_allclose(getattr(back, name), getattr(frame, name), atol=1e-14, err_msg=name)
    assert (back.energy, back.group, back.source) == (frame.energy, frame.group, frame.source)
    structure = frame.to_pymatgen()
    np.testing.assert_allclose(structure.lattice.matrix, frame.cell, atol=1e-12)
    np.testing.assert_allclose(structure.cart_coords, frame.positions, atol=1e-10)
    assert [s.specie.Z for s in structure] == frame.numbers.tolist()
    chain = shared_data / "longrange_4g" / "nnp-train" / "Carbon_chain_4G" / "input.data"
    cluster = next(parsers.read(chain))
    molecule = cluster.to_pymatgen()
    np.testing.assert_allclose(molecule.cart_coords, cluster.positions, atol=1e-12)
    assert molecule.charge == cluster.total_charge


def test_folder_order_detection_and_forced_format(cu_dump, tmp_path):
    text = cu_dump.dump.read_bytes()
    (tmp_path / "b.dump").write_bytes(text)
    with gzip.open(tmp_path / "a.lammpstrj.gz", "wb") as fh:
        fh.write(text)
    shutil.copy(cu_dump.log, tmp_path / "log.lammps")  # not a data file: skipped
    (tmp_path / "notes.txt").write_text("not data")
    frames = list(parsers.read(tmp_path, types={1: "Cu"}, log=tmp_path / "log.lammps"))
    assert [Path(f.source).name for f in frames] == ["a.lammpstrj.gz"] * 3 + ["b.dump"] * 3
    assert [f.index for f in frames] == [0, 1, 2] * 2
    assert all(f.energy is not None for f in frames)
    odd = tmp_path / "sub" / "frames.out"
    odd.parent.mkdir()
    odd.write_bytes(text)
    assert parsers.detect_format(odd) == "lammps-dump"  # from content
    assert len(list(parsers.read(odd, format="lammps-dump-text", types={1: "Cu"}))) == 3
    with pytest.raises(parsers.ParseError):
        list(parsers.read(tmp_path / "notes.txt"))
