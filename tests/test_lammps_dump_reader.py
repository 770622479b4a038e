"""The LAMMPS dump reader's own contract (parsers.lammps_dump.read_lammps_dump,
without the checks parsers.read adds to every Frame), beyond the LAMMPS-written
files of test_parsers_lammps.py: numbers bit for bit as float() reads them, on
pandas' path and on the line-by-line one; the exact line of a bad field or
field count; whitespace variants; headers that change from frame to frame; any
atom ids."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

import parsers
import parsers.lammps_dump as lammps_dump
from parsers.lammps_dump import read_lammps_dump

HEADER = ("ITEM: TIMESTEP\n{step}\nITEM: NUMBER OF ATOMS\n{n}\nITEM: BOX BOUNDS pp pp pp\n"
          "0 10\n0 10\n0 10\nITEM: ATOMS {columns}\n")
COLUMNS = "id type x y z fx fy fz c_pe"


def _dump(rows: list[str], columns: str = COLUMNS, step: int = 0) -> str:
    return HEADER.format(step=step, n=len(rows), columns=columns) + "".join(r + "\n" for r in rows)


def _write(tmp_path: Path, text: str, name: str = "t.dump") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _random_token(rng: random.Random) -> str:
    """A plain decimal of a random shape: sign, 0-25 integer digits (leading zeros
    sometimes), a point or not, 0-25 fraction digits, an exponent or not."""
    def digits(n: int) -> str:
        text = "".join(rng.choice("0123456789") for _ in range(n))
        return "0" * rng.choice([1, 3]) + text if n and rng.random() < 0.2 else text

    whole, point, fraction = "", False, ""
    while not (whole or fraction):
        whole = digits(rng.choice([0, 1, 2, 3, 8, 15, 16, 17, 19, 25]))
        point = rng.random() < 0.7
        fraction = digits(rng.choice([0, 1, 5, 9, 15, 16, 17, 18, 19, 25])) if point else ""
    token = rng.choice(["", "", "-", "+"]) + whole + ("." if point else "") + fraction
    if rng.random() < 0.4:
        token += rng.choice("eE") + str(rng.choice([rng.randint(-25, 25), rng.randint(-340, 300)]))
    return token


def _tokens(seed: int, n: int) -> list[str]:
    """``n`` finite tokens: random shapes, random doubles at %.17g / %.16e / repr, and edge cases."""
    rng = random.Random(seed)
    tokens = ["0", "-0", "+0", "-0.0", "0e5", ".5", "5.", "-.5e1", "1E5", "1e+05", "9007199254740993",
              "1e22", "1e23", "4.9e-324", "2e-324", "2.2250738585072011e-308", "1.7976931348623157e308",
              "0." + "0" * 30 + "1" * 25, "1" * 25 + "." + "9" * 30, "12345678901234567890123456"]
    while len(tokens) < n:
        if rng.random() < 0.5:
            token = _random_token(rng)
        else:
            value = float(np.frombuffer(rng.getrandbits(64).to_bytes(8, "little"), np.float64)[0])
            token = rng.choice(["%.17g", "%.16e", "%r"]) % value
        if np.isfinite(float(token)):
            tokens.append(token)
    return tokens[:n]


def _exact_dump(tokens: list[str]) -> str:
    """Atoms in id order whose x y z fx fy fz are the tokens, six by six."""
    rows = [f"{i + 1} 1 " + " ".join(tokens[6 * i : 6 * i + 6]) + " -1.5" for i in range(len(tokens) // 6)]
    return _dump(rows)


def _assert_bits(frame: parsers.Frame, tokens: list[str]) -> None:
    got = np.hstack([frame.positions, frame.forces]).ravel()
    want = np.array([float(t) for t in tokens])
    bad = np.flatnonzero(got.view(np.int64) != want.view(np.int64))
    assert not bad.size, [(tokens[i], got[i], want[i]) for i in bad[:5]]


def _no_fallback(*args) -> None:
    raise AssertionError("the block went to the line-by-line path")


@pytest.mark.parametrize("seed", range(3))
def test_numbers_are_float_bit_for_bit(tmp_path, monkeypatch, seed):
    """Through pandas: the line-by-line path is not taken."""
    monkeypatch.setattr(lammps_dump._AtomTable, "_read_lines", _no_fallback)
    tokens = _tokens(seed, 6 * 3000)
    (frame,) = read_lammps_dump(_write(tmp_path, _exact_dump(tokens)), types={1: "Cu"})
    _assert_bits(frame, tokens)


def test_line_by_line_path_gives_the_same_frames(tmp_path, monkeypatch):
    tokens = _tokens(7, 6 * 500)
    path = _write(tmp_path, _exact_dump(tokens) + _dump(["2 1 1 2 3 4 5 6 7", "1 1 0.5 0.25 0 -1 -2 -3 8"]))
    fast = list(read_lammps_dump(path, types={1: "Cu"}, energy_column="c_pe"))
    monkeypatch.setattr(lammps_dump, "_read_block", lambda *args: None)
    slow = list(read_lammps_dump(path, types={1: "Cu"}, energy_column="c_pe"))
    _assert_bits(slow[0], tokens)
    for a, b in zip(fast, slow, strict=True):
        for key in ("numbers", "positions", "forces"):
            np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
        assert a.energy == b.energy


BAD_FIELDS = {
    "a number": ["abc", "1e", "1e+", "--1", "1.2.3", "1-2", "0x10", "e5", ".", "-", "1,5", "NA"],
    "a finite number": ["nan", "-inf", "inf", "1e999"],
    "plain decimal numbers": ["1_000", "\u0661"],
}


# frames of more atoms than BATCH_LINES are read in pieces of that many lines
SMALL_BATCHES = pytest.mark.parametrize("batch_lines", [7, lammps_dump.BATCH_LINES])


@SMALL_BATCHES
@pytest.mark.parametrize("column", [3, 8], ids=["y", "unused_c_pe"])
@pytest.mark.parametrize("expected, bad", [(e, b) for e, words in BAD_FIELDS.items() for b in words])
def test_bad_field_names_its_line(tmp_path, monkeypatch, batch_lines, column, expected, bad):
    monkeypatch.setattr(lammps_dump, "BATCH_LINES", batch_lines)
    rows = [f"{i} 1 {i}.5 0.25 -{i}e-3 0 0 0 -1" for i in range(1, 41)]
    words = rows[30].split()
    words[column] = bad
    rows[30] = " ".join(words)
    path = _write(tmp_path, _dump(rows[:20], step=0) + _dump(rows, step=1), "bad.dump")
    frames = read_lammps_dump(path, types={1: "Cu"})
    assert next(frames).n_atoms == 20  # the first frame comes before the second's error
    with pytest.raises(parsers.ParseError) as info:
        next(frames)
    assert info.value.line == 29 + 9 + 31
    assert info.value.expected.startswith(expected)
    if expected != "plain decimal numbers":
        assert repr(COLUMNS.split()[column]) in info.value.expected


@SMALL_BATCHES
@pytest.mark.parametrize("line", ["1 1 0 0", "1 1 0 0 0 0 0 0 0 0", "", "   ", "1 1 0 0 0 0 0 0"])
@pytest.mark.parametrize("where", [0, 17, 39])
def test_wrong_field_count_names_its_line(tmp_path, monkeypatch, batch_lines, line, where):
    monkeypatch.setattr(lammps_dump, "BATCH_LINES", batch_lines)
    rows = [f"{i} 1 {i}.5 0.25 -{i}e-3 0 0 0 -1" for i in range(1, 41)]
    rows[where] = line
    with pytest.raises(parsers.ParseError) as info:
        list(read_lammps_dump(_write(tmp_path, _dump(rows)), types={1: "Cu"}))
    assert info.value.line == 10 + where
    assert info.value.expected.startswith("9 fields") and info.value.found == f"{len(line.split())} fields"


@SMALL_BATCHES
@pytest.mark.parametrize("keep", [16, 21, 27, 35])
def test_atom_count_errors(tmp_path, monkeypatch, batch_lines, keep):
    """A block cut short by the end of the file, or by the next frame's header."""
    monkeypatch.setattr(lammps_dump, "BATCH_LINES", batch_lines)
    rows = [f"{i} 1 {i}.5 0.25 -{i}e-3 0 0 0 -1" for i in range(1, 41)]
    cut = _dump(rows)[: -1].split("\n")[: 9 + keep]
    with pytest.raises(parsers.ParseError) as info:
        list(read_lammps_dump(_write(tmp_path, "\n".join(cut) + "\n", "cut.dump"), types={1: "Cu"}))
    assert info.value.line == 10 + keep and info.value.found == f"end of file after {keep} atom lines"
    longer = _dump(rows).replace("NUMBER OF ATOMS\n40", f"NUMBER OF ATOMS\n{40 + keep}") + _dump(rows)
    with pytest.raises(parsers.ParseError) as info:
        list(read_lammps_dump(_write(tmp_path, longer, "long.dump"), types={1: "Cu"}))
    assert info.value.line == 50 and info.value.found == "'ITEM:' after 40 atom lines"
    assert info.value.expected == f"{40 + keep} atom lines (NUMBER OF ATOMS at line 4)"


def test_blanks_tabs_and_line_endings(tmp_path, monkeypatch):
    monkeypatch.setattr(lammps_dump._AtomTable, "_read_lines", _no_fallback)
    rows = [f"{i} 1 {i}.5 0.25 -{i}e-3 0.125 0 -0 -1" for i in range(1, 6)]
    (plain,) = read_lammps_dump(_write(tmp_path, _dump(rows), "plain.dump"), types={1: "Cu"})
    variants = [
        _dump(["  " + r for r in rows]),  # leading blanks
        _dump([r.replace(" ", "\t") for r in rows]),  # tabs
        _dump([r.replace(" ", "   ") + "  " for r in rows]),  # several blanks, trailing blanks
        _dump(rows).replace("\n", "\r\n"),  # CRLF
        _dump(rows).rstrip("\n"),  # no final newline
    ]
    for k, text in enumerate(variants):
        (frame,) = read_lammps_dump(_write(tmp_path, text, f"v{k}.dump"), types={1: "Cu"})
        np.testing.assert_array_equal(frame.positions, plain.positions, err_msg=str(k))
        np.testing.assert_array_equal(frame.forces, plain.forces, err_msg=str(k))


def _frame(step: str, box: str, columns: str, atoms: list[str], before: str = "") -> str:
    return (f"{before}ITEM: TIMESTEP\n{step}\nITEM: NUMBER OF ATOMS\n{len(atoms)}\n{box}"
            f"ITEM: ATOMS {columns}\n" + "".join(a + "\n" for a in atoms))


ORTHO = "ITEM: BOX BOUNDS pp pp pp\n0 7.2\n0 7.5\n0 7.9\n"
ORTHO_2 = "ITEM: BOX BOUNDS pp pp pp\n-0.5 7.25\n0.1 7.5\n0 8.0\n"
TRICLINIC = "ITEM: BOX BOUNDS xy xz yz pp pp ff\n-0.5 7.7 0.5\n0 7.5 0.25\n0 7.9 -0.125\n"
ATOM_COLUMNS = "id type x y z fx fy fz"
ATOMS = ["2 1 1.5 2.5 3.5 0.1 -0.2 0.3", "1 2 0.25 0.5 0.75 -0.1 0.2 -0.3"]

FRAMES = [
    _frame("0", ORTHO, ATOM_COLUMNS, ATOMS),
    _frame("10", ORTHO_2, ATOM_COLUMNS, ATOMS[::-1]),
    _frame("20", ORTHO, ATOM_COLUMNS, ATOMS + ["3 1 5 5 5 0 0 0"]),  # another atom count
    _frame("30 -7.25 1 0.5 1", ORTHO, ATOM_COLUMNS, ATOMS),  # RANN timestep line
    _frame("40 -7.5 2 0.25 1", ORTHO, ATOM_COLUMNS, ATOMS),
    _frame("50", TRICLINIC, ATOM_COLUMNS, ATOMS),
    _frame("60", ORTHO, "id type xu yu zu fx fy fz", ATOMS),
    _frame("70", ORTHO, ATOM_COLUMNS, ATOMS, before="ITEM: UNITS\nmetal\n"),
    _frame("80", ORTHO, ATOM_COLUMNS, ATOMS, before="\n"),  # a blank line between frames
    _frame("90", ORTHO, "id element x y z fx fy fz", [a.replace(" 1 ", " Cu ", 1).replace(" 2 ", " Ni ", 1)
                                                     for a in ATOMS]),
    _frame("100", ORTHO, ATOM_COLUMNS, ATOMS),
]


def _same(a: parsers.Frame, b: parsers.Frame) -> None:
    for key in ("numbers", "positions", "cell", "pbc", "forces"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key), err_msg=key)
    assert (a.energy, a.energy_weight, a.force_weight) == (b.energy, b.energy_weight, b.force_weight)


@pytest.mark.parametrize("batch_lines", [1, 2, 5, lammps_dump.BATCH_LINES])  # in pieces, alone or together
def test_headers_that_change_from_frame_to_frame(tmp_path, monkeypatch, batch_lines):
    monkeypatch.setattr(lammps_dump, "BATCH_LINES", batch_lines)
    frames = list(read_lammps_dump(_write(tmp_path, "".join(FRAMES), "mixed.dump"), types={1: "Cu", 2: "Ni"}))
    assert len(frames) == len(FRAMES)
    for k, text in enumerate(FRAMES):
        (expected,) = read_lammps_dump(_write(tmp_path, text, f"alone{k}.dump"), types={1: "Cu", 2: "Ni"})
        _same(frames[k], expected)
    assert frames[3].energy == -7.25 and frames[4].energy_weight == 2.0
    assert frames[1].cell[0, 0] == 7.75 and frames[5].pbc.tolist() == [True, True, False]
    assert frames[9].numbers.tolist() == frames[0].numbers.tolist() == [28, 29]  # ids 1 (Ni), 2 (Cu)


# Line numbers in the second frame (its header at lines 12-20: two atoms in frame 1).
@pytest.mark.parametrize(
    "line, value, expected",
    [
        (13, "1.5", "an integer timestep"),
        (13, "10 -7.25 1", "a timestep, or 5, 6, 11 or 12 fields"),
        (15, "two", "a non-negative number of atoms"),
        (15, "-2", "a non-negative number of atoms"),
        (17, "0 nan", "box bounds numbers (finite)"),
        (18, "0", "three box rows of equal length"),
    ],
)
def test_bad_values_in_a_later_header(tmp_path, line, value, expected):
    lines = "".join(FRAMES[:2]).splitlines()
    lines[line - 1] = value
    frames = read_lammps_dump(_write(tmp_path, "\n".join(lines) + "\n"), types={1: "Cu", 2: "Ni"})
    assert next(frames).n_atoms == 2  # the first frame comes before the second's error
    with pytest.raises(parsers.ParseError) as info:
        next(frames)
    assert info.value.line in (line, 16)  # the box errors name the BOX BOUNDS line
    assert expected in info.value.expected


@pytest.mark.parametrize("ids", [["3", "1", "2", "4"], ["30", "10", "20"], ["7", "1", "1000000"],
                                 ["2", "3", "4"], ["4", "2.0", "3e0", "1"]])
def test_frames_sorted_by_id_whatever_the_ids(tmp_path, ids):
    """Atom i (its rank by id) sits at x = i and feels fx = -i."""
    rank = {word: i for i, word in enumerate(sorted(ids, key=float))}
    rows = [f"{word} 1 {rank[word]} 0.5 0.25 {-rank[word]} 0 0 0" for word in ids]
    (frame,) = read_lammps_dump(_write(tmp_path, _dump(rows)), types={1: "Cu"})
    n = len(ids)
    np.testing.assert_array_equal(frame.positions, np.column_stack([np.arange(n), [0.5] * n, [0.25] * n]))
    np.testing.assert_array_equal(frame.forces[:, 0], -np.arange(n))
