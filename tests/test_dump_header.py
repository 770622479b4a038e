"""Dump headers read from the previous header's template (parsers.lammps_dump_header).

From the second frame on, a header whose four ITEM lines are the same bytes as
the last usual (nine-line) header's is parsed from its value lines alone; any
other header goes line by line. Both must give the same frames and the same
errors, which these tests check against each frame read from a file of its own
(where there is no template).
"""

from __future__ import annotations

import numpy as np
import pytest

import parsers
from parsers.lammps_dump_header import HeaderReader, read_header
from parsers.textio import LineReader


def _frame(step: str, box: str, columns: str, atoms: list[str], before: str = "") -> str:
    return (f"{before}ITEM: TIMESTEP\n{step}\nITEM: NUMBER OF ATOMS\n{len(atoms)}\n{box}"
            f"ITEM: ATOMS {columns}\n" + "".join(a + "\n" for a in atoms))


ORTHO = "ITEM: BOX BOUNDS pp pp pp\n0 7.2\n0 7.5\n0 7.9\n"
ORTHO_2 = "ITEM: BOX BOUNDS pp pp pp\n-0.5 7.25\n0.1 7.5\n0 8.0\n"
TRICLINIC = "ITEM: BOX BOUNDS xy xz yz pp pp ff\n-0.5 7.7 0.5\n0 7.5 0.25\n0 7.9 -0.125\n"
COLUMNS = "id type x y z fx fy fz"
ATOMS = ["2 1 1.5 2.5 3.5 0.1 -0.2 0.3", "1 2 0.25 0.5 0.75 -0.1 0.2 -0.3"]

FRAMES = [
    _frame("0", ORTHO, COLUMNS, ATOMS),
    _frame("10", ORTHO_2, COLUMNS, ATOMS[::-1]),  # same ITEM lines: from the template
    _frame("20", ORTHO, COLUMNS, ATOMS + ["3 1 5 5 5 0 0 0"]),  # another atom count, same ITEM lines
    _frame("30 -7.25 1 0.5 1", ORTHO, COLUMNS, ATOMS),  # RANN timestep line: line by line
    _frame("40 -7.5 2 0.25 1", ORTHO, COLUMNS, ATOMS),  # ... then from its own template
    _frame("50", TRICLINIC, COLUMNS, ATOMS),
    _frame("60", ORTHO, "id type xu yu zu fx fy fz", ATOMS),
    _frame("70", ORTHO, COLUMNS, ATOMS, before="ITEM: UNITS\nmetal\n"),
    _frame("80", ORTHO, COLUMNS, ATOMS, before="\n"),
    _frame("90", ORTHO, COLUMNS, ATOMS),
]


def _same(a: parsers.Frame, b: parsers.Frame) -> None:
    for key in ("numbers", "positions", "cell", "pbc", "forces"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key), err_msg=key)
    assert (a.energy, a.energy_weight, a.force_weight) == (b.energy, b.energy_weight, b.force_weight)


def test_frames_equal_frames_read_alone(tmp_path):
    path = tmp_path / "mixed.dump"
    path.write_text("".join(FRAMES))
    frames = list(parsers.read(path, types={1: "Cu", 2: "Ni"}))
    assert len(frames) == len(FRAMES)
    for k, text in enumerate(FRAMES):
        alone = tmp_path / f"alone{k}.dump"
        alone.write_text(text)
        (expected,) = parsers.read(alone, types={1: "Cu", 2: "Ni"})
        _same(frames[k], expected)
    assert frames[3].energy == -7.25 and frames[4].energy_weight == 2.0
    assert frames[1].cell[0, 0] == 7.75 and frames[5].pbc.tolist() == [True, True, False]


# Line numbers in the second frame (header at lines 12-20: two atoms in frame 1).
@pytest.mark.parametrize(
    "line, value, expected",
    [
        (13, "1.5", "an integer timestep"),
        (13, "10 -7.25 1", "a timestep, or 5, 6, 11 or 12 fields"),
        (15, "two", "a non-negative number of atoms"),
        (15, "-2", "a non-negative number of atoms"),
        (17, "0 nan", "box bounds numbers (finite)"),
        (18, "0", "three box rows of equal length"),
        (19, "0 7.9 1", "three box rows of equal length"),
    ],
)
def test_bad_values_in_a_templated_header(tmp_path, line, value, expected):
    lines = "".join(FRAMES[:2]).splitlines()
    assert lines[line - 1] != value
    lines[line - 1] = value
    path = tmp_path / "bad.dump"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(parsers.ParseError) as info:
        list(parsers.read(path, types={1: "Cu", 2: "Ni"}))
    assert info.value.line in (line, 16)  # the box errors name the BOX BOUNDS line
    assert expected in info.value.expected


def test_truncated_templated_header(tmp_path):
    text = "".join(FRAMES[:2])
    path = tmp_path / "cut.dump"
    path.write_text("\n".join(text.splitlines()[:16]) + "\n")  # frame 2 ends after ITEM: BOX BOUNDS
    with pytest.raises(parsers.ParseError) as info:
        list(parsers.read(path, types={1: "Cu", 2: "Ni"}))
    assert info.value.line == 17 and info.value.found == "end of file"


def test_peek_lines_hands_out_nothing_until_skipped(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_bytes(b"one\ntwo\r\nthree\nfour")
    with LineReader(path, chunk_size=4) as reader:
        assert reader.peek_lines(3) == [b"one", b"two\r", b"three"]
        assert reader.line == 0 and reader.readline() == b"one"
        assert reader.peek_lines(3) == [b"two\r", b"three", b"four"]
        reader.skip_peeked()
        assert reader.line == 4 and reader.readline() is None
        assert reader.peek_lines(1) is None


@pytest.mark.parametrize("chunk", [4 << 20, 64])  # 64 bytes: lines peeked across buffer refills
def test_headers_equal_headers_read_line_by_line(tmp_path, chunk):
    path = tmp_path / "mixed.dump"
    path.write_text("".join(FRAMES))
    headers, first = HeaderReader(None), 0
    with LineReader(path, chunk_size=chunk) as reader:
        for k, text in enumerate(FRAMES):
            header = headers.read(reader)
            for _ in range(header.n_atoms):
                reader.readline()
            alone = tmp_path / f"alone{k}.dump"
            alone.write_text(text)
            with LineReader(alone) as one:
                expected = read_header(one, None)
            for key in ("step", "n_atoms", "columns", "energy", "energy_weight", "force_weight"):
                assert getattr(header, key) == getattr(expected, key), (k, key)
            for key in ("step_line", "natoms_line", "atoms_line"):
                assert getattr(header, key) == getattr(expected, key) + first, (k, key)
            for key in ("cell", "origin", "pbc"):
                np.testing.assert_array_equal(getattr(header.box, key), getattr(expected.box, key))
            first += text.count("\n")
        assert headers.read(reader) is None
