"""Bad input gives parsers.ParseError with the right file and line number.

The files are LAMMPS-written Cu dumps, corrupted one line at a time. Frame
layout (n atoms): line 1 ITEM: TIMESTEP, 2 step, 3 ITEM: NUMBER OF ATOMS,
4 n, 5 ITEM: BOX BOUNDS, 6-8 box, 9 ITEM: ATOMS, 10 .. 9+n atoms; the second
frame starts at line 10+n.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import parsers
from mlip.demo.cu_eam import write_cu_eam_dumps


# Two sizes of atom block (32 and 256 atoms), both through the compiled scanner.
@pytest.fixture(scope="module", params=[2, 4], ids=["32atoms", "256atoms"])
def dump(request, tmp_path_factory):
    run = write_cu_eam_dumps(tmp_path_factory.mktemp("err"), n_frames=3, every=2, size=request.param)
    return run.dump.read_text().splitlines(), run.n_atoms


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "bad.dump"
    path.write_text("\n".join(lines) + "\n")
    return path


def _error(path: Path, **options) -> parsers.ParseError:
    with pytest.raises(parsers.ParseError) as info:
        list(parsers.read(path, **({"types": {1: "Cu"}} | options)))
    err = info.value
    assert err.path == str(path)
    assert str(err).startswith(f"{path}:{err.line}: expected ")
    return err


def _set_field(line: str, column: int, value: str) -> str:
    words = line.split()
    words[column] = value
    return " ".join(words)


def test_valid_file_reads(dump, tmp_path):
    lines, n = dump
    assert len(list(parsers.read(_write(tmp_path, lines), types={1: "Cu"}))) == 3


def test_truncated_atom_block(dump, tmp_path):
    lines, n = dump
    start2 = 10 + n
    keep = start2 + 8 + 5  # ITEM: ATOMS of frame 2 at start2+8, then 5 atom lines
    err = _error(_write(tmp_path, lines[:keep]))
    assert err.line == keep + 1
    assert "end of file after 5 atom lines" in err.found


def test_truncated_header(dump, tmp_path):
    lines, n = dump
    start2 = 10 + n
    err = _error(_write(tmp_path, lines[: start2 + 2]))  # ends after ITEM: NUMBER OF ATOMS
    assert err.line == start2 + 3 and err.found == "end of file"


def test_more_atoms_announced_than_present(dump, tmp_path):
    lines, n = dump
    lines = list(lines)
    lines[3] = str(n + 1)
    err = _error(_write(tmp_path, lines))
    assert err.line == 10 + n  # the next frame's ITEM: TIMESTEP
    assert "ITEM:" in err.found and f"{n + 1} atom lines" in err.expected


def test_fewer_atoms_announced_than_present(dump, tmp_path):
    lines, n = dump
    lines = list(lines)
    lines[3] = str(n - 1)
    err = _error(_write(tmp_path, lines))
    assert err.line == 9 + n  # the extra atom line where ITEM: TIMESTEP should be
    assert err.expected == "ITEM: TIMESTEP"


@pytest.mark.parametrize("value, what", [("abc", "a number"), ("nan", "a finite"), ("-inf", "a finite")])
def test_bad_number_in_atom_line(dump, tmp_path, value, what):
    lines, n = dump
    lines = list(lines)
    row = n // 2
    lines[9 + row - 1] = _set_field(lines[9 + row - 1], 3, value)  # column y
    err = _error(_write(tmp_path, lines))
    assert err.line == 9 + row
    assert err.expected.startswith(what) and "'y'" in err.expected and value in err.found


def test_wrong_number_of_fields(dump, tmp_path):
    lines, n = dump
    lines = list(lines)
    lines[9 + 3 - 1] += " 1.0"
    err = _error(_write(tmp_path, lines))
    assert err.line == 9 + 3 and "10 fields" in err.found


def test_bad_number_in_second_frame_box(dump, tmp_path):
    lines, n = dump
    lines = list(lines)
    start2 = 10 + n
    lines[start2 + 5] = "0.0 nan"  # second box row of frame 2
    err = _error(_write(tmp_path, lines))
    assert err.line == start2 + 6


def test_missing_item_section(dump, tmp_path):
    lines, n = dump
    start2 = 10 + n
    lines = lines[: start2 + 3] + lines[start2 + 7 :]  # drop BOX BOUNDS of frame 2
    err = _error(_write(tmp_path, lines))
    assert err.line == start2 + 4 and err.expected == "ITEM: BOX BOUNDS" and "ITEM: ATOMS" in err.found


def test_duplicate_ids(dump, tmp_path):
    lines, n = dump
    lines = list(lines)
    first_id = lines[9].split()[0]
    lines[9 + 6] = _set_field(lines[9 + 6], 0, first_id)  # atom row 7 repeats row 1's id
    err = _error(_write(tmp_path, lines))
    assert err.line == 9 + 7 and f"id {first_id}" in err.found


def test_unknown_energy_column(dump, tmp_path):
    lines, _ = dump
    err = _error(_write(tmp_path, lines), energy_column="c_nope")
    assert err.line == 9 and "c_nope" in err.expected and "c_pe" in err.found


def test_unknown_type_with_mapping(dump, tmp_path):
    lines, n = dump
    lines = list(lines)
    lines[9 + 4 - 1] = _set_field(lines[9 + 4 - 1], 1, "2")
    err = _error(_write(tmp_path, lines))
    assert err.line == 9 + 4 and err.found == "type 2"


@pytest.mark.parametrize("n_types", [1, 2])
def test_types_without_mapping(dump, tmp_path, n_types):
    lines, n = dump
    lines = list(lines)
    if n_types == 2:
        lines[9] = _set_field(lines[9], 1, "2")
    with pytest.raises(parsers.ParseError) as info:
        list(parsers.read(_write(tmp_path, lines)))
    assert info.value.line == 9 and "types=" in info.value.expected
    assert info.value.found == f"types {list(range(1, n_types + 1))} without a mapping"


def test_missing_log_step(dump, tmp_path):
    lines, _ = dump
    log = tmp_path / "log.lammps"
    log.write_text("Step PotEng\n0 -1.0\nLoop time of 0.1\n")
    err = _error(_write(tmp_path, lines), log=log)
    assert err.line == 10 + int(lines[3]) + 1 and "step 2" in err.expected


def test_non_metal_units(dump, tmp_path):
    lines, _ = dump
    err = _error(_write(tmp_path, ["ITEM: UNITS", "real", *lines]))
    assert err.line == 2 and err.expected == "metal units"


def test_runner_errors(tmp_path):
    path = tmp_path / "input.data"
    good = ["begin", "atom 0 0 0 H 0.1 0 0 0 0", "energy -1.0", "charge 0", "end"]
    path.write_text("\n".join(good + good[:2] + ["atom 1 x 0 H 0.1 0 0 0 0", "energy -1.0", "end"]) + "\n")
    with pytest.raises(parsers.ParseError) as info:
        list(parsers.read(path))
    assert info.value.line == 8 and "'x'" in info.value.found
    path.write_text("\n".join(good + good[:2]) + "\n")
    with pytest.raises(parsers.ParseError) as info:
        list(parsers.read(path))
    assert info.value.line == 8 and info.value.found == "end of file"


def test_bad_options(dump, tmp_path):
    lines, _ = dump
    path = _write(tmp_path, lines)
    with pytest.raises(ValueError, match="unknown format"):
        list(parsers.read(path, format="pdb"))
    with pytest.raises(ValueError, match="not both"):
        list(parsers.read(path, types={1: "Cu"}, energy_column="c_pe", log=path))
    with pytest.raises(ValueError, match="types"):
        list(parsers.read(path, types="1:Cu"))
    with pytest.raises(FileNotFoundError):  # checked at the call, before iterating
        parsers.read(tmp_path / "missing.dump")
    with pytest.raises(FileNotFoundError):
        parsers.read(path, log=tmp_path / "missing.log")
    with pytest.raises(ValueError, match="units"):
        parsers.read(path, units="bohr")


def test_number_spelling_the_scanner_refuses(dump, tmp_path):
    """float() reads '1_0', the dump scanner only plain decimals: the error names the line."""
    lines, n = dump
    lines = list(lines)
    lines[9 + 2] = _set_field(lines[9 + 2], 3, "1_0")
    err = _error(_write(tmp_path, lines))
    assert err.line == 9 + 3 and err.expected == "plain decimal numbers" and "1_0" in err.found
