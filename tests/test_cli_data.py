"""``mlip data build`` / ``mlip data info`` and the shared data options."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from mlip.cli import main
from mlip.cli.options import data_options, parse_types
from mlip.data import write_dataset
from parsers.frame import Frame


def run(*args: str):
    return CliRunner().invoke(main, list(args))


# -- --types and data_options ------------------------------------------------
def test_parse_types():
    assert parse_types("1=Y") == {1: "Y"}
    assert parse_types("1=Cu, 2=Ni") == {1: "Cu", 2: "Ni"}
    assert parse_types(("1=Cu", "2=Ni,3=O", "1=Cu")) == {1: "Cu", 2: "Ni", 3: "O"}
    assert parse_types(()) == {}
    for bad, message in [
        ("1:Cu", "TYPE=ELEMENT"),
        ("a=Cu", "must be an integer"),
        ("0=Cu", "start at 1"),
        ("1=Qq", "unknown element"),
        (("1=Cu", "1=Ni"), "both Cu and Ni"),
    ]:
        with pytest.raises(click.BadParameter, match=message):
            parse_types(bad)


@click.command()
@data_options
def _echo_options(read_options):
    click.echo(json.dumps(read_options, sort_keys=True))


def test_data_options_decorator(tmp_path):
    log = tmp_path / "log.lammps"
    log.write_text("Step PotEng\n")
    runner = CliRunner()
    result = runner.invoke(_echo_options, [])
    assert result.exit_code == 0 and json.loads(result.output) == {}
    result = runner.invoke(
        _echo_options,
        [
            "--types",
            "1=Cu",
            "--types",
            "2=Ni",
            "--energy-column",
            "c_pe",
            "--log",
            str(log),
            "--format",
            "lammps-dump-text",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "energy_column": "c_pe",
        "format": "lammps-dump",
        "log": str(log),
        "types": {"1": "Cu", "2": "Ni"},
    }
    keys = ["--energy-key", "REF_energy", "--forces-key", "REF_forces", "--stress-key", "REF_stress"]
    result = runner.invoke(_echo_options, keys)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "energy_key": "REF_energy",
        "forces_key": "REF_forces",
        "stress_key": "REF_stress",
    }
    result = runner.invoke(_echo_options, ["--types", "1=Zz"])
    assert result.exit_code == 2 and "unknown element" in result.output
    result = runner.invoke(_echo_options, ["--log", str(tmp_path / "missing.log")])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = runner.invoke(_echo_options, ["--format", "pdb"])
    assert result.exit_code == 2 and "unknown format 'pdb'" in result.output


# -- info ----------------------------------------------------------------------
@pytest.fixture
def small_dataset(tmp_path):
    """Two sources; energies known, forces on three of five frames."""
    src = tmp_path / "a.xyz"
    src.write_text("stand-in source\n")
    frames = []
    for i, n in enumerate([2, 4, 3, 5, 1]):
        frames.append(
            Frame(
                numbers=[29] * (n - 1) + [8],
                positions=np.arange(3 * n, dtype=float).reshape(n, 3),
                cell=np.eye(3) * 10,
                pbc=[True] * 3,
                energy=None if i == 4 else -3.5 * n + 0.1 * i,
                forces=np.ones((n, 3)) if i < 3 else None,
                source=str(src) if i < 3 else "other.dump",
                index=i,
            )
        )
    path = tmp_path / "data.h5"
    write_dataset(frames, path)
    return path, frames, src


def test_info_text_and_json(small_dataset):
    path, frames, src = small_dataset
    result = run("data", "info", str(path))
    assert result.exit_code == 0, result.output
    out = result.output
    assert "frames          5" in out
    assert "atoms           15 (1-5 per frame)" in out
    assert "elements        O Cu" in out
    assert "energy 4/5, forces 3/5, stress 0/5, charges 0/5" in out
    per_atom = np.array([f.energy / len(f) for f in frames if f.energy is not None])
    assert f"mean {per_atom.mean():.6f}" in out and f"std {per_atom.std():.6f}" in out
    assert "(4 frames)" in out
    assert "groups          none" in out

    result = run("data", "info", str(path), "--json")
    assert result.exit_code == 0
    s = json.loads(result.output)
    assert s["frames"] == 5 and s["atoms"] == 15 and s["elements"] == ["O", "Cu"]
    assert s["groups"] == {}
    e = s["energy_per_atom"]
    assert e["frames"] == 4
    assert e["min"] == per_atom.min() and e["max"] == per_atom.max()
    assert e["mean"] == pytest.approx(per_atom.mean(), abs=1e-14)
    assert [(x["path"], x["frames"]) for x in s["sources"]] == [(str(src), 3), ("other.dump", 2)]
    assert s["sources"][1]["sha256"] == ""  # not a file: no hash
    assert len(s["sources"][0]["sha256"]) == 64


def test_info_errors(tmp_path):
    result = run("data", "info", str(tmp_path / "missing.h5"))
    assert result.exit_code == 2
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    result = run("data", "info", str(bad))
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "not an HDF5 file" in result.stderr


# -- build -------------------------------------------------------------------
@pytest.fixture(scope="module")
def cu_dumps(tmp_path_factory):
    """Two LAMMPS Cu EAM runs (orthogonal and triclinic box) dumped into one folder,
    with LAMMPS' own positions, forces, energies and cells recorded at each dump."""
    from mlip.demo.cu_eam import write_cu_eam_dumps

    root = tmp_path_factory.mktemp("cu")
    reference: dict[str, list[dict]] = {}

    def recorder(name):
        def on_frame(lmp, step):
            n = lmp.extract_global("nlocal")
            order = np.argsort(lmp.numpy.extract_atom("id")[:n])
            lo, hi, xy, yz, xz, _, _ = lmp.extract_box()
            lx, ly, lz = np.subtract(hi, lo)
            reference.setdefault(name, []).append(
                {
                    "positions": lmp.numpy.extract_atom("x")[:n][order].copy(),
                    "forces": lmp.numpy.extract_atom("f")[:n][order].copy(),
                    "energy": lmp.get_thermo("pe"),
                    "cell": np.array([[lx, 0, 0], [xy, ly, 0], [xz, yz, lz]]),
                }
            )

        return on_frame

    ortho = write_cu_eam_dumps(root / "dumps", n_frames=3, every=5, size=2, on_frame=recorder("cu.dump"))
    tri = write_cu_eam_dumps(
        root / "tri",
        n_frames=4,
        every=5,
        size=2,
        triclinic=True,
        dump_name="tri.dump",
        on_frame=recorder("tri.dump"),
    )
    tri.dump = tri.dump.rename(root / "dumps" / "tri.dump")
    return root, ortho, tri, reference


def test_build_lammps_dumps_end_to_end(cu_dumps, tmp_path, monkeypatch):
    import parsers
    from mlip.data import Dataset

    root, ortho, tri, reference = cu_dumps
    monkeypatch.chdir(root)
    out = tmp_path / "data.h5"
    result = run("data", "build", "dumps", "-o", str(out), "--types", "1=Cu", "--energy-column", "c_pe")
    assert result.exit_code == 0, result.output
    assert f"wrote {out}: 7 frames, 224 atoms, elements Cu, from 2 source file(s)" in result.output

    ds = Dataset(out)
    assert ds.sources == ["dumps/cu.dump", "dumps/tri.dump"]  # folder read in name order
    for source, sha in zip(ds.sources, ds.source_sha256, strict=True):
        assert sha == hashlib.sha256((root / source).read_bytes()).hexdigest()
    # against LAMMPS' own numbers
    expected = reference["cu.dump"] + reference["tri.dump"]
    assert len(ds) == len(expected) == 7
    for frame, ref in zip(ds, expected, strict=True):
        assert frame.energy == pytest.approx(ref["energy"], rel=1e-12, abs=1e-10)
        np.testing.assert_allclose(frame.positions, ref["positions"], rtol=0, atol=1e-10)
        np.testing.assert_allclose(frame.forces, ref["forces"], rtol=0, atol=1e-10)
        np.testing.assert_allclose(frame.cell, ref["cell"], rtol=0, atol=1e-10)
        assert frame.numbers.tolist() == [29] * 32 and frame.pbc.all()
    # and identical to what the parser yields
    parsed = list(parsers.read("dumps", types={1: "Cu"}, energy_column="c_pe"))
    for a, b in zip(parsed, ds, strict=True):
        for name in ("numbers", "positions", "cell", "pbc", "forces"):
            assert np.array_equal(getattr(a, name), getattr(b, name))
        assert (a.energy, a.source, a.index) == (b.energy, b.source, b.index)
    # holding out a whole dump file
    train, val = ds.split(val_fraction=0.4, seed=0, split_by="source")
    assert {ds.sources[i] for i in ds.source_id[val]} in ({"dumps/cu.dump"}, {"dumps/tri.dump"})
    assert len(train) + len(val) == 7

    result = run("data", "info", str(out))
    assert result.exit_code == 0
    assert "frames          7" in result.output and "forces 7/7" in result.output
    assert "3  " in result.output and "dumps/cu.dump" in result.output


def test_build_energies_from_log(cu_dumps, tmp_path):
    from mlip.data import Dataset

    root, ortho, _, reference = cu_dumps
    out = tmp_path / "data.h5"
    result = run("data", "build", str(ortho.dump), "-o", str(out), "--types", "1=Cu", "--log", str(ortho.log))
    assert result.exit_code == 0, result.output
    energies = [f.energy for f in Dataset(out)]
    np.testing.assert_allclose(energies, [r["energy"] for r in reference["cu.dump"]], rtol=1e-14)


def test_build_extxyz_written_by_ase(tmp_path):
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import read, write
    from ase.stress import voigt_6_to_full_3x3_stress

    from mlip.data import Dataset

    rng = np.random.default_rng(0)
    images = []
    for n in (3, 5):
        atoms = Atoms(
            "Ni" * (n - 1) + "H", positions=rng.uniform(0, 4, (n, 3)), cell=[[4, 0, 0], [1, 4, 0], [0, 0, 5]]
        )
        atoms.pbc = True
        atoms.calc = SinglePointCalculator(
            atoms, energy=rng.normal(), forces=rng.normal(size=(n, 3)), stress=rng.normal(size=6)
        )
        images.append(atoms)
    write(tmp_path / "train.xyz", images)
    reread = read(tmp_path / "train.xyz", index=":")  # ASE's own reading of the file it wrote
    out = tmp_path / "data.h5"
    result = run("data", "build", str(tmp_path / "train.xyz"), "-o", str(out))
    assert result.exit_code == 0, result.output
    ds = Dataset(out)
    assert ds.elements == ["H", "Ni"] and len(ds) == 2
    for frame, atoms, orig in zip(ds, reread, images, strict=True):
        assert frame.numbers.tolist() == atoms.numbers.tolist()
        assert np.array_equal(frame.positions, atoms.positions)
        assert np.array_equal(frame.cell, atoms.cell[:]) and frame.pbc.all()
        assert frame.energy == atoms.get_potential_energy()
        assert np.array_equal(frame.forces, atoms.get_forces())
        assert np.array_equal(frame.stress, voigt_6_to_full_3x3_stress(atoms.get_stress()))
        np.testing.assert_allclose(frame.forces, orig.get_forces(), atol=1e-7)  # extxyz keeps 8 digits


def test_build_truncated_dump_exits_2_and_leaves_nothing(cu_dumps, tmp_path):
    root, ortho, _, _ = cu_dumps
    text = ortho.dump.read_text().splitlines(keepends=True)
    bad = tmp_path / "src" / "bad.dump"
    bad.parent.mkdir()
    bad.write_text("".join(text[:30]))  # frame 1 header says 32 atoms; 21 atom lines follow
    outdir = tmp_path / "out"
    outdir.mkdir()
    cmd = [sys.executable, "-m", "mlip", "data", "build", str(ortho.dump), str(bad)]
    cmd += ["-o", str(outdir / "data.h5"), "--types", "1=Cu"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2
    # line 31: where the 22nd atom line was expected
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"mlip: error: {bad}:31: expected 32 atom")
    assert list(outdir.iterdir()) == []  # neither data.h5 nor a temporary file

    # a previous good dataset survives a failed rebuild unchanged
    assert (
        run("data", "build", str(ortho.dump), "-o", str(outdir / "data.h5"), "--types", "1=Cu").exit_code == 0
    )
    before = (outdir / "data.h5").read_bytes()
    result = run("data", "build", str(bad), "-o", str(outdir / "data.h5"), "--types", "1=Cu")
    assert result.exit_code == 2
    assert (outdir / "data.h5").read_bytes() == before
    assert [p.name for p in outdir.iterdir()] == ["data.h5"]


def test_build_usage_errors(cu_dumps, tmp_path):
    root, ortho, _, _ = cu_dumps
    out = tmp_path / "data.h5"
    result = run("data", "build", str(ortho.dump), "-o", str(out))  # no type map
    assert result.exit_code == 2 and "--types" in result.stderr
    result = run("data", "build", str(tmp_path / "missing.dump"), "-o", str(out), "--types", "1=Cu")
    assert result.exit_code == 2 and "does not exist" in result.output
    result = run("data", "build", str(ortho.dump), "--types", "1=Cu")
    assert result.exit_code == 2 and "-o" in result.output
    assert not out.exists()


# -- real data sets (skipped without ../shared/data) ----------------------------
YTTRIUM_FRAMES = {
    "1NN.dump": 90,
    "2NN.dump": 89,
    "3NN.dump": 88,
    "FreeSurface.dump": 85,
    "ManualStrain.dump": 49,
    "bcc_strain.dump": 1080,
    "fcc_strain.dump": 1080,
    "hcp_strain.dump": 1089,
    "liquid.dump": 100,
}


def test_build_yttrium_folder(shared_data, tmp_path):
    from mlip.data import Dataset

    folder = shared_data / "yttrium"
    if not folder.is_dir():
        pytest.skip("no yttrium data")
    out = tmp_path / "y.h5"
    result = run("data", "build", str(folder), "-o", str(out), "--types", "1=Y")
    assert result.exit_code == 0, result.output
    s = json.loads(run("data", "info", str(out), "--json").output)
    assert {Path(x["path"]).name: x["frames"] for x in s["sources"]} == YTTRIUM_FRAMES
    assert s["frames"] == 3750 and s["elements"] == ["Y"]
    assert s["present"]["energy"] == 3750 and s["present"]["forces"] == 0
    ds = Dataset(out)
    train, val = ds.split(val_fraction=0.05, seed=1, split_by="source")
    held = {Path(ds.sources[i]).name for i in np.unique(ds.source_id[val])}
    assert len(val) == sum(YTTRIUM_FRAMES[name] for name in held)  # whole families held out
    assert not held & {Path(ds.sources[i]).name for i in np.unique(ds.source_id[train])}
    assert abs(len(val) - 0.05 * 3750) < 100  # the families closest to 5 % (187 frames)


def test_build_mlearn_keeps_groups_and_stress(shared_data, tmp_path):
    import parsers
    from mlip.data import Dataset

    path = shared_data / "mlearn" / "Cu" / "test.json"
    if not path.is_file():
        pytest.skip("no mlearn Cu data")
    out = tmp_path / "cu.h5"
    assert run("data", "build", str(path), "-o", str(out)).exit_code == 0
    ds = Dataset(out)
    assert len(ds) == 31 and ds.has_stress.all() and ds.has_forces.all()
    for a, b in zip(parsers.read(path), ds, strict=True):
        assert a.group == b.group and a.group is not None
        assert a.energy == b.energy
        assert np.array_equal(a.stress, b.stress) and np.array_equal(a.forces, b.forces)
        assert np.array_equal(a.positions, b.positions) and np.array_equal(a.cell, b.cell)
