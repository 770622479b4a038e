"""Bad input is refused where it is read, with one line naming the file and
the frame: numbers that are not finite, frames without atoms, atoms at the
same place (periodic images included), empty files; ``mlip data build`` and
``mlip train`` exit with code 2. Also the extxyz label keys (``REF_*``), folders
read recursively with the skipped files listed, and the missing-energy hint."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import parsers
from mlip.cli import main
from mlip.data import Dataset, build_dataset, write_dataset
from mlip.data.build import MISSING_ENERGY_HINT
from mlip.errors import UserError
from parsers.frame import Frame, close_pair, lattice

CELL = "Lattice=\"4 0 0 0 4 0 0 0 4\" pbc=\"T T T\""
PROPS = "Properties=species:S:1:pos:R:3:forces:R:3"


def xyz_frame(positions: list[tuple[float, float, float]], info: str = "energy=-1.5",
              props: str = PROPS, cell: str = CELL) -> str:
    """One extxyz frame of Cu atoms at ``positions`` (Å) with zero forces."""
    lines = [str(len(positions)), f"{cell} {props} {info}"]
    lines += [f"Cu {x} {y} {z} 0 0 0" for x, y, z in positions]
    return "\n".join(lines) + "\n"


GOOD = [(0.0, 0.0, 0.0), (2.0, 2.0, 0.0)]


def write_xyz(path: Path, *frames: str) -> Path:
    path.write_text("".join(frames))
    return path


def parse_error(path: Path, **options) -> parsers.ParseError:
    with pytest.raises(parsers.ParseError) as info:
        list(parsers.read(path, **options))
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    return info.value


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlip", *args], capture_output=True, text=True)


# -- what every reader's frames go through (Frame.check) -----------------------------------------
@pytest.mark.parametrize(
    "frame, found",
    [
        (xyz_frame(GOOD, info="energy=nan"), "nan"),
        (xyz_frame(GOOD, info="energy=inf"), "inf"),
        (xyz_frame([(0.0, 0.0, 0.0), (2.0, np.inf, 0.0)]), "for atom 1"),
        (xyz_frame(GOOD, cell='Lattice="4 0 0 0 nan 0 0 0 4" pbc="T T T"'), "for row 1"),
        (xyz_frame(GOOD).replace("2.0 2.0 0.0 0 0 0", "2.0 2.0 0.0 0 nan 0"), "for atom 1"),
        (xyz_frame(GOOD, info='energy=-1.5 stress="0 0 0 0 inf 0 0 0 0"'), "for row 1"),
        (xyz_frame(GOOD, info="energy=abc"), "'abc'"),
        (xyz_frame([]), "0 atoms"),
        (xyz_frame([(0.0, 0.0, 0.0), (2.0, 2.0, 0.0), (0.0, 0.0, 0.0)]), "atoms 0 and 2 0 Å apart"),
        (xyz_frame([(0.01, 1.0, 1.0), (3.97, 1.0, 1.0)]), "atoms 0 and 1 0.04 Å apart across"),
        (xyz_frame(GOOD, cell='Lattice="4 0 0 8 0 0 0 0 4" pbc="T T T"'), "found a flat cell"),
        (xyz_frame(GOOD, cell='Lattice="4 0 0 0 4 0 0 0 0.15" pbc="T T T"'), "found 0.15 Å along c"),
    ],
    ids=["nan-energy", "inf-energy", "inf-position", "nan-cell", "nan-force", "inf-stress",
         "energy-abc", "no-atoms", "same-place", "periodic-image", "flat-cell", "thin-cell"],
)
def test_bad_extxyz_frame_names_file_and_frame(tmp_path, frame, found):
    path = write_xyz(tmp_path / "train.xyz", xyz_frame(GOOD), frame)
    err = parse_error(path)
    assert err.frame == 1 and str(err).startswith(f"{path} (frame 1): expected ")
    assert found in str(err)


def test_frames_at_a_distance_pass(tmp_path):
    # 0.12 Å apart is allowed, as is the periodic image of atom 0, 0.15 Å from atom 2
    path = write_xyz(tmp_path / "ok.xyz", xyz_frame([(0.0, 1.0, 1.0), (0.12, 1.0, 1.0), (3.85, 1.0, 1.0)]))
    assert len(parsers.read_frames(path)) == 1


def test_close_pair_matches_brute_force():
    """Against every pair and image in skewed, partly periodic cells, with a cutoff
    large enough for pairs to be common and for images beyond the neighbouring cells."""
    rng = np.random.default_rng(3)
    tested = found = 0
    while tested < 300:
        n = int(rng.integers(1, 20))
        cell = np.diag(rng.uniform(0.6, 3.0, 3)) + np.triu(rng.uniform(-1, 1, (3, 3)), 1)
        pbc = rng.random(3) < 0.6
        lat = lattice(cell, pbc)
        if (lat.spacing[pbc] < 0.6).any():  # Frame.check refuses cells thinner than 2 * cutoff
            continue
        positions = rng.uniform(-1.0, 4.0, (n, 3))
        ranges = [range(-8, 9) if p else range(1) for p in pbc]
        shifts = np.array(list(itertools.product(*ranges))) @ cell
        d = np.linalg.norm(positions[None, :, None] + shifts - positions[:, None, None], axis=3)
        d[np.arange(n), np.arange(n), np.flatnonzero(~shifts.any(axis=1))] = np.inf
        pair = close_pair(positions, lat, pbc, 0.3)
        assert (pair is not None) == bool((d < 0.3).any())
        if pair is not None:
            i, j, dist, _ = pair
            assert d[i, j].min() == pytest.approx(dist)
        tested += 1
        found += pair is not None
    assert 50 < found < 250, found


def test_dump_frames_are_checked(tmp_path):
    """The LAMMPS dump reader's frames go through the same check."""
    def dump_frame(step: int, second: str) -> str:
        return (f"ITEM: TIMESTEP\n{step}\nITEM: NUMBER OF ATOMS\n2\nITEM: BOX BOUNDS pp pp pp\n"
                "0 4\n0 4\n0 4\nITEM: ATOMS id type x y z\n1 1 1.0 1.0 1.0\n" f"2 1 {second}\n")

    path = tmp_path / "dump.0"
    path.write_text(dump_frame(0, "3.0 3.0 3.0") + dump_frame(10, "1.0 1.0 1.0"))
    err = parse_error(path, types={1: "Cu"})
    assert str(err).startswith(f"{path} (frame 1): expected atoms at least 0.1 Å apart, found atoms 0 and 1")


def test_nan_energy_in_lammps_log(tmp_path):
    log = tmp_path / "log.lammps"
    log.write_text("Step PotEng Press\n0 -3.5 0\n10 nan 0\nLoop time of 1\n")
    dump = tmp_path / "a.dump"
    dump.write_text("ITEM: TIMESTEP\n0\nITEM: NUMBER OF ATOMS\n1\nITEM: BOX BOUNDS pp pp pp\n0 4\n0 4\n0 4\n"
                    "ITEM: ATOMS id type x y z\n1 1 1 1 1\n")
    with pytest.raises(parsers.ParseError, match=rf"^{log}:3: expected a finite PotEng, found nan$"):
        list(parsers.read(dump, types={1: "Cu"}, log=log))


def test_empty_files_are_errors(tmp_path):
    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    assert str(parse_error(empty)) == f"{empty}: expected data, found an empty file"
    blank = tmp_path / "blank.xyz"
    blank.write_text("\n\n")
    assert "expected at least one frame (extxyz), found none" in str(parse_error(blank))
    folder = tmp_path / "run"
    folder.mkdir()
    write_xyz(folder / "a.xyz", xyz_frame(GOOD))
    (folder / "b.dump").write_text("")
    assert str(parse_error(folder)) == f"{folder / 'b.dump'}: expected data, found an empty file"


# -- the data store keeps "absent" and "not a number" apart ------------------------------------
def test_store_refuses_nan_and_absent_stays_absent(tmp_path):
    good = Frame(numbers=[29], positions=[[0.0, 0.0, 0.0]], energy=None, source="a.xyz", index=0)
    nan = Frame(numbers=[29], positions=[[0.0, 0.0, 0.0]], energy=np.nan, source="a.xyz", index=3)
    with pytest.raises(parsers.ParseError, match=r"^a\.xyz \(frame 3\): expected a finite energy, found nan"):
        write_dataset([good, nan], tmp_path / "bad.h5")
    assert not (tmp_path / "bad.h5").exists()
    write_dataset([good], tmp_path / "ok.h5")
    ds = Dataset(tmp_path / "ok.h5")
    assert not ds.has_energy[0] and ds[0].energy is None


def test_dataset_refuses_a_present_label_that_is_not_finite(tmp_path):
    frames = [Frame(numbers=[29, 29], positions=[[0, 0, 0], [2, 0, 0]], energy=-1.0, forces=np.zeros((2, 3)),
                    source="a.xyz", index=k) for k in range(2)]
    path = tmp_path / "data.h5"
    write_dataset(frames, path)
    with h5py.File(path, "r+") as h5:  # as a file written before NaN was refused would hold it
        h5["atoms/forces"][3] = [np.nan, 0.0, 0.0]
    ds = Dataset(path)
    assert ds[0].forces is not None
    with pytest.raises(UserError, match="frame 1 .a.xyz frame 1. is marked as having forces"):
        ds[1]
    ds.close()
    with h5py.File(path, "r+") as h5:
        h5["frames/energy"][0] = np.nan
    with pytest.raises(UserError, match="frame 0 .a.xyz frame 0. is marked as having energy"):
        Dataset(path)


# -- the command line: exit code 2 and one line --------------------------------------------------
def test_build_and_train_exit_2_with_one_line(tmp_path):
    path = write_xyz(tmp_path / "train.xyz", xyz_frame(GOOD), xyz_frame(GOOD, info="energy=nan"))
    for args in (["data", "build", str(path), "-o", str(tmp_path / "d.h5")],
                 ["train", str(path), "--epochs", "1", "--out", str(tmp_path / "run")]):
        proc = cli(*args)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr == f"mlip: error: {path} (frame 1): expected a finite energy, found nan\n"
    assert not (tmp_path / "d.h5").exists()


# -- extxyz label keys and config_type ------------------------------------------------------------
REF_PROPS = "Properties=species:S:1:pos:R:3:REF_forces:R:3"


def test_ref_keys_are_detected_and_config_type_is_the_group(tmp_path):
    info = 'REF_energy=-2.5 REF_stress="1 2 3 2 4 5 3 5 6" config_type=bulk'
    path = write_xyz(tmp_path / "mace.xyz", xyz_frame(GOOD, info=info, props=REF_PROPS).replace(
        "2.0 2.0 0.0 0 0 0", "2.0 2.0 0.0 0.5 0 0"))
    notes: list[str] = []
    (frame,) = parsers.read(path, echo=notes.append)
    assert frame.energy == -2.5 and frame.forces[1, 0] == 0.5 and frame.group == "bulk"
    np.testing.assert_array_equal(frame.stress, [[1, 2, 3], [2, 4, 5], [3, 5, 6]])
    assert notes[0] == (f"{path}: energy from REF_energy, forces from REF_forces, stress from REF_stress "
                        "(no calculator values; choose keys with --energy-key/--forces-key/--stress-key)")
    assert notes[1] == f"read {path}: 1 frame (extxyz)"

    # a calculator energy wins unless a key is given
    both = write_xyz(tmp_path / "both.xyz", xyz_frame(GOOD, info="energy=-1.5 REF_energy=-2.5"))
    assert parsers.read_frames(both)[0].energy == -1.5
    assert parsers.read_frames(both, energy_key="REF_energy")[0].energy == -2.5
    err = parse_error(both, forces_key="DFT_forces")
    assert "expected forces under the arrays key 'DFT_forces' in some frame" in str(err)


def test_cli_key_options_and_missing_energy_hint(tmp_path):
    path = write_xyz(tmp_path / "dft.xyz", xyz_frame(GOOD, info="DFT_energy=-3.0 config_type=slab"))
    result = CliRunner().invoke(main, ["data", "build", str(path), "-o", str(tmp_path / "a.h5")])
    assert result.exit_code == 0, result.output
    assert f"warning: no frame has an energy, which training needs: {MISSING_ENERGY_HINT}" in result.output
    assert "--energy-key" in MISSING_ENERGY_HINT and "--energy-column" in MISSING_ENERGY_HINT
    out = tmp_path / "b.h5"
    result = CliRunner().invoke(main, ["data", "build", str(path), "-o", str(out),
                                       "--energy-key", "DFT_energy"])
    assert result.exit_code == 0 and "warning" not in result.output
    ds = Dataset(out)
    assert ds[0].energy == -3.0 and ds.groups == ["slab"]
    result = CliRunner().invoke(main, ["data", "info", str(out)])
    assert "groups          slab 1" in result.output



def test_train_takes_the_energy_key(tmp_path):
    """``mlip train --energy-key`` reaches the reader; without it the error gives the extxyz hint."""
    frames = [xyz_frame([(0.0, 0.0, 0.0), (2.0 + 0.1 * k, 2.0, 0.0)], info=f"DFT_energy={-3.0 - 0.1 * k}")
              for k in range(4)]
    path = write_xyz(tmp_path / "dft.xyz", *frames)
    proc = cli("train", str(path), "--epochs", "1", "--out", str(tmp_path / "none"))
    assert proc.returncode == 2
    assert proc.stderr == f"mlip: error: no training frame has an energy: training needs energies; " \
                          f"{MISSING_ENERGY_HINT}\n"
    proc = cli("train", str(path), "--epochs", "1", "--energy-key", "DFT_energy",
               "--out", str(tmp_path / "run"), "--set", "model.hidden=[4]")
    assert proc.returncode == 0, proc.stderr
    assert Dataset(tmp_path / "run" / "data.h5")[3].energy == -3.3

# -- folders ----------------------------------------------------------------------------------------
def test_folders_are_read_recursively_and_skipped_files_listed(tmp_path):
    root = tmp_path / "calcs"
    for name in ("run10/dump.0", "run2/dump.lammpstrj", "run2/traj.out"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("ITEM: TIMESTEP\n0\nITEM: NUMBER OF ATOMS\n1\nITEM: BOX BOUNDS pp pp pp\n"
                                 "0 4\n0 4\n0 4\nITEM: ATOMS id type x y z c_pe\n1 1 1 1 1 -3.5\n")
    (root / "run2" / "log.lammps").write_text("Step PotEng\n")
    (root / "README.md").write_text("notes\n")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "x.dump").write_text("")  # hidden: neither read nor listed
    lines: list[str] = []
    build_dataset([root], tmp_path / "d.h5", echo=lines.append, types={1: "Cu"}, energy_column="c_pe")
    assert lines == [
        f"skipped {root / 'README.md'}: not a data file (name and content match no format)",
        f"skipped {root / 'run2/log.lammps'}: a LAMMPS log, not a data file (give it with --log)",
        f"read {root / 'run2/dump.lammpstrj'}: 1 frame (lammps-dump)",
        f"read {root / 'run2/traj.out'}: 1 frame (lammps-dump)",  # by its content
        f"read {root / 'run10/dump.0'}: 1 frame (lammps-dump)",  # natural order: run2 before run10
    ]
    sources = [Path(s).name for s in Dataset(tmp_path / "d.h5").sources]
    assert sources == ["dump.lammpstrj", "traj.out", "dump.0"]


def test_evaluate_groups_by_config_type(tmp_path, monkeypatch):
    """``mlip evaluate``'s table has a row per extxyz ``config_type`` (the model is stubbed:
    it predicts zero energy and forces)."""
    import mlip.evaluate as evaluate

    path = write_xyz(tmp_path / "test.xyz", *(xyz_frame(GOOD, info=f"energy=-1.0 config_type={c}")
                                              for c in ("bulk", "slab", "bulk")))
    monkeypatch.setattr(evaluate, "load_model", lambda model, device: (None, {}))
    monkeypatch.setattr(evaluate, "predict_frames", lambda module, meta, frames, device: [
        {"energy": 0.0, "forces": np.zeros((len(f), 3))} for f in frames])
    rows = evaluate.evaluate_model("stub.pt", [str(path)], {}, echo=lambda line: None)
    assert {name: int(row["frames"]) for name, row in rows.items()} == {
        "all": 3, "test.xyz": 3, "group:bulk": 2, "group:slab": 1}
    assert rows["group:bulk"]["energy_mae_meV_atom"] == pytest.approx(500.0)
