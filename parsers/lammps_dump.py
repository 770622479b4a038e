"""LAMMPS text dumps (``dump custom``, ``dump atom``, and the RANN variant) → Frames.

Each frame is ``[ITEM: UNITS] [ITEM: TIME] ITEM: TIMESTEP, ITEM: NUMBER OF
ATOMS, ITEM: BOX BOUNDS, ITEM: ATOMS <columns>`` followed by one line per atom.
Headers are read line by line in Python; the atom blocks of consecutive
frames, about ``BATCH_LINES`` lines together, go to pandas' C reader in one
call (numbers converted exactly as ``float()`` does). When that fails, or
gives anything but the announced rows of finite numbers, each frame's block
is tried alone, and one that still fails is read line by line with
``float()``, which names the first bad line (:class:`ParseError` with file
and line). Frames come out one at a time, each block's errors after the
frames before it.

- RANN variant: ``ITEM: TIMESTEP energy, energy_weight, force_weight, nsims``
  followed by ``step E_total w_E w_F nsims`` (6, 11 or 12 fields are accepted
  too; the first five are kept). E_total (eV) becomes ``Frame.energy`` and the
  weights ``energy_weight`` / ``force_weight``.
- Columns, in any order: ``id type element mass``, positions as one of
  ``xu yu zu`` / ``x y z`` / ``xsu ysu zsu`` / ``xs ys zs`` (first found wins;
  scaled ones are converted with the box), image flags ``ix iy iz`` (added to
  wrapped positions), ``fx fy fz`` (eV/Å), ``q`` (e) and any others (``vx``,
  ``c_*``, ``v_*``, ``d_*``, ``i_*``...). Every column but ``element`` must
  hold finite plain decimal numbers.
- Atoms are sorted by ``id`` when that column exists.
- Energies: ``energy_column`` (a per-atom column, summed), or ``log`` (a LAMMPS
  log whose thermo ``PotEng`` is matched by timestep), or the RANN header, or
  none.
- Elements: ``types`` (``{1: "Cu"}``), else an ``element`` column, else a
  ``mass`` column (nearest standard mass).
- Box: orthogonal, restricted triclinic (bounds form) or general triclinic
  (``abc origin``), see :mod:`parsers.lammps_box`.
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NoReturn

import numpy as np
import pandas as pd

from parsers.elements import TypesOption, numbers_from_masses, numbers_from_symbols, parse_types
from parsers.errors import ParseError
from parsers.frame import Frame
from parsers.lammps_box import Box, box_from_dump
from parsers.lammps_log import read_thermo_energies
from parsers.textio import open_binary

_STRING_COLUMNS = ("element",)

# (column names, scaled, unwrapped), in order of preference
_POSITION_SETS = (
    (("xu", "yu", "zu"), False, True),
    (("x", "y", "z"), False, False),
    (("xsu", "ysu", "zsu"), True, True),
    (("xs", "ys", "zs"), True, False),
)

_RANN_FIELDS = (5, 6, 11, 12)

BATCH_LINES = 20_000  # atom lines read and parsed together, when frames are smaller
CHUNK_BYTES = 1 << 22  # bytes read from the file at a time

# A number as LAMMPS writes one; float() also takes '1_000', digits of other scripts and the like,
# which are refused.
_PLAIN_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)


def _pandas_version() -> tuple[int, int]:
    """(major, minor) of the pandas in use."""
    major, minor = pd.__version__.split(".")[:2]
    return int(major), int(minor)


# pandas' C reader, atom lines as they are: no header, no quotes, no NA words ("NA" is not a number).
# Before pandas 3.1 only the "round_trip" converter is exact, and it is slow (pandas 2.3: 3.3 s of
# CPU for the 200 MB dump of benchmarks/parse_speed.py, 0.86 s with 3.1, ASE 2.3 s); from 3.1 on
# every converter is exact (and the option is deprecated).
_READ_CSV = {
    "header": None,
    "engine": "c",
    "quoting": csv.QUOTE_NONE,
    "na_filter": False,
    **({"float_precision": "round_trip"} if _pandas_version() < (3, 1) else {}),
}


def read_lammps_dump(
    path: str | Path,
    types: TypesOption = None,
    energy_column: str | None = None,
    log: str | Path | None = None,
) -> Iterator[Frame]:
    """Yield the frames of a LAMMPS text dump (optionally .gz/.bz2/.xz).

    ``types`` maps LAMMPS types to elements (``{1: "Cu"}``, ``["Cu", "Ni"]`` or
    ``"1=Cu,2=Ni"``); ``energy_column`` names a per-atom energy column (eV)
    whose sum is the frame energy; ``log`` is a LAMMPS log whose thermo
    ``PotEng`` (eV) is matched to each frame's timestep. Positions Å, cell rows
    Å, forces eV/Å, charges e. Raises ParseError (file, line, expected, found)
    on malformed input."""
    if energy_column is not None and log is not None:
        raise ValueError("give energy_column or log, not both")
    type_map = parse_types(types)
    log_energies = read_thermo_energies(log) if log is not None else None
    with open_binary(path) as fh:
        lines = _Lines(fh, str(path))
        for index, table in enumerate(_tables(lines, energy_column)):
            frame = table.frame(index, type_map, energy_column)
            if log_energies is not None:
                frame.energy = _log_energy(log_energies, table.header, lines.path, log)
            yield frame


def _log_energy(energies: dict[int, float], header: DumpHeader, path: str, log: str | Path) -> float:
    if header.step not in energies:
        raise ParseError(path, header.step_line, f"a PotEng for step {header.step} in {log}", "none")
    return energies[header.step]


class _Lines:
    """The lines of an open binary file, counted: ``line`` is the 1-based
    number of the last line handed out (0 before the first).

    The file is read ahead into one buffer, reused from refill to refill (fresh
    memory costs a page fault per 4 kB, about as much time as reading it),
    ``CHUNK_BYTES`` at a time. A block of ``n`` lines is copied out of the
    buffer without splitting it into lines. It usually ends where the next
    frame's ``ITEM:`` line starts: that is searched for from 90% of the bytes
    ``n`` lines of the last block took, and taken when numpy counts ``n``
    newlines before it. Otherwise (the last frame, a blank line between frames,
    lines much shorter than before, a block cut short) the block ends at the
    ``n``-th newline, found by numpy."""

    def __init__(self, fh: IO[bytes], path: str) -> None:
        self.path = path
        self.line = 0
        self._fh = fh
        self._buf = bytearray()
        self._pos = 0  # the next unread byte of _buf
        self._end = 0  # the end of the text in _buf
        self._eof = False
        self._line_bytes = 100.0  # mean length of the lines of the last block

    def _ensure(self, size: int) -> int:
        """Read ahead until ``size`` bytes follow the position (or the file ends); returns how
        many do. A refill moves the text after the position to the front of the buffer (a
        larger one if needed) and reads the file into the rest of it."""
        while self._end - self._pos < size and not self._eof:
            kept = self._end - self._pos
            if kept + max(CHUNK_BYTES, size) > len(self._buf):
                buf = bytearray(kept + max(CHUNK_BYTES, size))
                buf[:kept] = self._buf[self._pos:self._end]
                self._buf = buf
            else:
                self._buf[:kept] = self._buf[self._pos:self._end]
            self._pos, self._end = 0, kept
            with memoryview(self._buf) as view:
                while self._end < len(self._buf):
                    got = self._fh.readinto(view[self._end:])
                    if not got:
                        self._eof = True
                        break
                    self._end += got
        return self._end - self._pos

    def readline(self) -> bytes | None:
        """The next line without its line ending, or None at end of file."""
        end = self._buf.find(b"\n", self._pos, self._end)
        while end < 0 and not self._eof:
            searched = self._end - self._pos
            self._ensure(searched + 1)
            end = self._buf.find(b"\n", self._pos + searched, self._end)
        if end < 0:
            if self._pos >= self._end:
                return None
            end = self._end
        raw = bytes(self._buf[self._pos:end])
        self._pos = end + 1
        self.line += 1
        return raw.rstrip(b"\r")

    def block(self, n: int) -> _Block:
        """The next ``n`` lines; fewer at end of file."""
        end, count = self._end_before_item(n) or self._end_of_lines(n)
        with memoryview(self._buf) as view:
            text = bytes(view[self._pos:end])
        self._pos = end
        self.line += count
        if count:
            self._line_bytes = len(text) / count
        return _Block(text, count)

    def _bytes(self, size: int) -> np.ndarray:
        """The next ``size`` bytes of the buffer (at most those it holds), as a numpy view."""
        return np.frombuffer(self._buf, np.uint8, min(size, self._end - self._pos), self._pos)

    def _end_before_item(self, n: int) -> tuple[int, int] | None:
        """(buffer offset just past the next ``n`` lines, ``n``) when an ``ITEM:`` line follows
        them, else None."""
        if n <= 0:
            return None
        window = int(n * self._line_bytes * 1.5) + 64
        self._ensure(window + 5)
        skip = max(int(n * self._line_bytes * 0.9) - 1, 0)
        # 'I' does not occur in lines of numbers, so find() skips ahead quickly
        item = self._buf.find(b"\nITEM:", self._pos + skip, min(self._pos + window + 6, self._end))
        if item < 0 or np.count_nonzero(self._bytes(item + 1 - self._pos) == 10) != n:
            return None
        return item + 1, n

    def _end_of_lines(self, n: int) -> tuple[int, int]:
        """(buffer offset just past the next ``n`` lines, ``n``), or (the end of the text, the
        lines left) if fewer remain."""
        if n <= 0:
            return self._pos, 0
        window = int(n * self._line_bytes * 1.5) + 64
        have = self._ensure(window)
        while True:
            ends = np.flatnonzero(self._bytes(window) == 10)
            if len(ends) >= n:
                return self._pos + int(ends[n - 1]) + 1, n
            if window >= have and self._eof:
                return self._end, len(ends) + (have > (int(ends[-1]) + 1 if len(ends) else 0))
            window *= 2
            have = self._ensure(window)


@dataclass(frozen=True)
class _Block:
    """Lines of a file as read, joined: ``text`` (line endings kept), ``count`` lines."""

    text: bytes
    count: int

    def lines(self) -> list[bytes]:
        """The lines, without their newlines."""
        return self.text.split(b"\n")[: self.count]


# ----------------------------------------------------------------------------- headers


def position_set(columns: list[str]) -> tuple[tuple[str, ...], bool, bool] | None:
    """The preferred entry of _POSITION_SETS whose columns are all present, or None."""
    return next((s for s in _POSITION_SETS if set(s[0]) <= set(columns)), None)


@dataclass
class DumpHeader:
    """One frame's header; ``*_line`` are 1-based line numbers in the file."""

    step: int
    step_line: int
    n_atoms: int
    natoms_line: int
    box: Box
    columns: list[str]
    atoms_line: int
    energy: float | None = None
    energy_weight: float = 1.0
    force_weight: float = 1.0


def line_text(line: bytes) -> str:
    """A line as text, decoded leniently and stripped."""
    return line.decode("utf-8", "replace").strip()


def quoted(text: str) -> str:
    """``text`` quoted for an error message, cut to 60 characters."""
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _next_line(lines: _Lines, expected: str) -> str:
    line = lines.readline()
    if line is None:
        raise ParseError(lines.path, lines.line + 1, expected, "end of file")
    return line_text(line)


def _item(lines: _Lines, name: str, text: str | None = None) -> list[str]:
    """Check that the next line (or ``text``) is ``ITEM: name ...``; return the words after it."""
    if text is None:
        text = _next_line(lines, f"ITEM: {name}")
    if not text.startswith(f"ITEM: {name}"):
        raise ParseError(lines.path, lines.line, f"ITEM: {name}", quoted(text))
    return text[len("ITEM: ") + len(name) :].split()


def _numbers(lines: _Lines, words: list[str], what: str) -> list[float]:
    try:
        values = [float(w) for w in words]
    except ValueError:
        raise ParseError(lines.path, lines.line, what, quoted(" ".join(words))) from None
    if not all(math.isfinite(v) for v in values):
        raise ParseError(lines.path, lines.line, what + " (finite)", quoted(" ".join(words)))
    return values


def _int(lines: _Lines, word: str, what: str) -> int:
    try:
        return int(word)
    except ValueError:
        raise ParseError(lines.path, lines.line, what, quoted(word)) from None


def read_header(lines: _Lines, energy_column: str | None) -> DumpHeader | None:
    """Read one frame's ITEM sections up to ``ITEM: ATOMS``; None at end of file."""
    line = lines.readline()
    while line is not None and not line.strip():
        line = lines.readline()
    if line is None:
        return None
    text = line_text(line)
    while text.startswith(("ITEM: UNITS", "ITEM: TIME")) and not text.startswith("ITEM: TIMESTEP"):
        item = text
        value = _next_line(lines, f"a value after {item}")
        if item.startswith("ITEM: UNITS") and value != "metal":
            raise ParseError(lines.path, lines.line, "metal units", quoted(value))
        text = _next_line(lines, "ITEM: TIMESTEP")

    _item(lines, "TIMESTEP", text)
    words = _next_line(lines, "a timestep").split()
    step_line = lines.line
    energy, w_e, w_f = None, 1.0, 1.0
    if len(words) in _RANN_FIELDS:
        step = _int(lines, words[0], "an integer timestep")
        energy, w_e, w_f = _numbers(lines, words[1:4], "numbers 'E_total w_E w_F' after the timestep")
    elif len(words) == 1:
        step = _int(lines, words[0], "an integer timestep")
    else:
        raise ParseError(
            lines.path,
            step_line,
            "a timestep, or 5, 6, 11 or 12 fields 'step E_total w_E w_F nsims ...'",
            f"{len(words)} fields",
        )

    _item(lines, "NUMBER OF ATOMS")
    words = _next_line(lines, "the number of atoms").split()
    n_atoms = _int(lines, words[0] if words else "", "a non-negative number of atoms")
    natoms_line = lines.line
    if n_atoms < 0:
        raise ParseError(lines.path, natoms_line, "a non-negative number of atoms", str(n_atoms))

    box_words = _item(lines, "BOX BOUNDS")
    box_line = lines.line
    rows = [_numbers(lines, _next_line(lines, "a box bounds row").split(), "box bounds numbers")
            for _ in range(3)]
    if len({len(r) for r in rows}) != 1:
        raise ParseError(lines.path, box_line, "three box rows of equal length", str([len(r) for r in rows]))
    try:
        box = box_from_dump(box_words, np.array(rows))
    except ValueError as exc:
        raise ParseError(lines.path, box_line, str(exc), quoted(" ".join(box_words))) from None

    columns = _item(lines, "ATOMS")
    atoms_line = lines.line
    if position_set(columns) is None:
        raise ParseError(
            lines.path, atoms_line, "position columns x y z, xu yu zu, xs ys zs or xsu ysu zsu",
            quoted(" ".join(columns)),
        )
    if energy_column is not None and energy_column not in columns:
        raise ParseError(
            lines.path, atoms_line, f"a column {energy_column!r} (energy_column)", quoted(" ".join(columns))
        )
    return DumpHeader(step, step_line, n_atoms, natoms_line, box, columns, atoms_line, energy, w_e, w_f)


# ----------------------------------------------------------------------------- atoms


@dataclass(frozen=True)
class _Layout:
    """What a frame's column list implies, worked out once per distinct list."""

    index: dict[str, int]  # numeric column name -> its position in _AtomTable.values
    numeric: list[int]  # file positions of the numeric columns, in order
    strings: dict[str, int]  # string column name -> its file position
    dtypes: type | dict[int, type]  # pandas dtype of every column, or by file position
    position_set: tuple[tuple[str, ...], bool, bool]  # (position column names, scaled, unwrapped)
    # the Frame's arrays taken from the table: "xyz", and "images", "forces", "charges" when
    # their columns are there, each with its positions in _AtomTable.values (a slice when they
    # are consecutive)
    groups: dict[str, slice | list[int]]


@functools.lru_cache(maxsize=64)
def _layout(columns: tuple[str, ...]) -> _Layout:
    """The layout of ``columns`` (a header that has passed read_header's checks)."""
    numeric = [j for j, c in enumerate(columns) if c not in _STRING_COLUMNS]
    index = {columns[j]: k for k, j in enumerate(numeric)}
    strings = {c: j for j, c in enumerate(columns) if c in _STRING_COLUMNS}
    # one dtype for all columns makes a pandas call cheaper (0.3 ms less)
    dtypes = {j: object if c in _STRING_COLUMNS else np.float64 for j, c in enumerate(columns)} if strings \
        else np.float64
    positions = position_set(list(columns))
    names, _, unwrapped = positions
    groups = {"xyz": names, "images": ("ix", "iy", "iz"), "forces": ("fx", "fy", "fz"), "charges": ("q",)}
    if unwrapped:
        del groups["images"]
    groups = {key: _columns([index[c] for c in cols])
              for key, cols in groups.items() if set(cols) <= set(index)}
    return _Layout(index, numeric, strings, dtypes, positions, groups)


def _columns(positions: list[int]) -> slice | list[int]:
    """``positions`` as a slice when they are consecutive and ascending (a view of the table's
    columns, gathered by row twice as fast as a list of them)."""
    if positions == list(range(positions[0], positions[0] + len(positions))):
        return slice(positions[0], positions[0] + len(positions))
    return positions


# an atom block parsed: (n, numeric columns) float64 values in file order, and each string
# column as an (n,) str array
_Table = tuple[np.ndarray, dict[str, np.ndarray]]


@functools.lru_cache(maxsize=16)
def _type_table(type_map: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Atomic number by LAMMPS type for the ``(type, Z)`` pairs; 0 where none
    is given, and one slot past the largest type (types beyond it are clipped
    to it)."""
    table = np.zeros(max(t for t, _ in type_map) + 2, dtype=np.int64)
    for atom_type, number in type_map:
        table[atom_type] = number
    table.flags.writeable = False
    return table


def _read_block(blocks: list[_Block], n: int, layout: _Layout) -> _Table | None:
    """The atom blocks ``blocks`` (of one frame each), one after the other,
    through pandas' C reader, or None unless they are ``n`` rows of the layout's columns with finite
    numbers."""
    if sum(block.count for block in blocks) != n or n == 0:
        return None
    text = b"".join(block.text for block in blocks)
    # LAMMPS puts one space between fields: that tokenizer is faster than any whitespace's
    for sep in (" ", r"\s+"):
        try:
            table = pd.read_csv(io.BytesIO(text), sep=sep, dtype=layout.dtypes, **_READ_CSV)
        except ValueError:  # pandas' ParserError, EmptyDataError, and failed conversions are ValueErrors
            continue
        if table.shape == (n, len(layout.numeric) + len(layout.strings)):
            break
    else:
        return None
    values = (table.iloc[:, layout.numeric] if layout.strings else table).to_numpy(np.float64)
    # a short line leaves NaN in the columns it lacks: in a string column, a missing word
    if not np.isfinite(values).all() or any(table[j].isna().any() for j in layout.strings.values()):
        return None
    return values, {name: table[j].to_numpy(dtype=str) for name, j in layout.strings.items()}


def _tables(lines: _Lines, energy_column: str | None) -> Iterator[_AtomTable]:
    """The atom table of each frame of ``lines``, in file order. Frames are read
    in batches of up to about BATCH_LINES atom lines, and the blocks of
    consecutive frames with the same columns are parsed in one pandas call (a
    call costs about as much as parsing a thousand lines); when that fails,
    frame by frame. A frame of more atoms is parsed alone, BATCH_LINES lines
    at a time as they are read (so that its text is never all in memory). A
    ParseError in a header is raised after the frames before it."""
    end = False
    while not end:
        batch: list[tuple[DumpHeader, _Block]] = []
        large: DumpHeader | None = None
        error: ParseError | None = None
        try:
            size = 0
            while size < BATCH_LINES:
                header = read_header(lines, energy_column)
                if header is None:
                    end = True
                    break
                if header.n_atoms > BATCH_LINES:
                    large = header
                    break
                batch.append((header, lines.block(header.n_atoms)))
                size += header.n_atoms + 1
        except ParseError as exc:
            error = exc
        for columns, frames in itertools.groupby(batch, key=lambda frame: tuple(frame[0].columns)):
            frames = list(frames)
            layout = _layout(columns)
            n = [h.n_atoms for h, _ in frames]
            both = _read_block([block for _, block in frames], sum(n), layout)
            offsets = itertools.accumulate(n, initial=0)
            for (header, block), start in zip(frames, offsets, strict=False):
                if both is not None:
                    values, strings = both
                    stop = start + header.n_atoms
                    table = values[start:stop], {c: v[start:stop] for c, v in strings.items()}
                else:
                    table = _read_block([block], header.n_atoms, layout) if len(frames) > 1 else None
                yield _AtomTable(lines.path, header, [(block, table)])
        if error is not None:
            raise error
        if large is not None:
            yield _AtomTable(lines.path, large, list(_pieces(lines, large)))


def _pieces(lines: _Lines, header: DumpHeader) -> Iterator[tuple[_Block, _Table | None]]:
    """The atom block after ``header`` read and parsed BATCH_LINES lines at a
    time: (lines, pandas' result) for each piece; the lines are left out
    (count only) where pandas succeeded."""
    layout, left = _layout(tuple(header.columns)), header.n_atoms
    while left > 0:
        block = lines.block(min(left, BATCH_LINES))
        parsed = _read_block([block], block.count, layout)
        yield (block if parsed is None else _Block(b"", block.count)), parsed
        if block.count < min(left, BATCH_LINES):  # end of file
            return
        left -= block.count


class _AtomTable:
    """The atom block of one frame, checked, from its ``pieces`` in file
    order: each its lines as read and what pandas made of them; where that is
    None (pandas failed), the lines are read one by one here."""

    def __init__(
        self,
        path: str,
        header: DumpHeader,
        pieces: list[tuple[_Block, _Table | None]],
    ) -> None:
        self.path = path
        self.header = header
        self.first_line = header.atoms_line + 1
        self.layout = _layout(tuple(header.columns))
        parts, rows = [], 0
        for block, parsed in pieces:
            parts.append(parsed if parsed is not None else self._read_lines(block.lines(), rows))
            rows += block.count
        if rows < header.n_atoms:
            self._count_error(self.first_line + rows, f"end of file after {rows} atom lines")
        #: the _Table of the frame; layout.index says which numeric column is where
        self.values, self.strings = parts[0] if len(parts) == 1 else (
            np.concatenate([values for values, _ in parts]),
            {c: np.concatenate([strings[c] for _, strings in parts]) for c in self.layout.strings},
        )

    def _count_error(self, line: int, found: str) -> NoReturn:
        h = self.header
        raise ParseError(
            self.path, line, f"{h.n_atoms} atom lines (NUMBER OF ATOMS at line {h.natoms_line})", found
        )

    def _read_lines(self, raw: list[bytes], row: int) -> _Table:
        """The atom lines ``raw`` (without newlines; the first is atom line
        ``row``, from 0) read one by one with float(); ParseError at the first
        line that is not a row of the layout's columns."""
        columns, rows, words_by_line = self.header.columns, [], []
        for k, line in enumerate(raw, start=row):
            number = self.first_line + k
            if line.startswith(b"ITEM:"):
                self._count_error(number, f"'ITEM:' after {k} atom lines")
            text = line_text(line)
            words = text.split()
            if len(words) != len(columns):
                expected = f"{len(columns)} fields ({' '.join(columns)})"
                raise ParseError(self.path, number, expected, f"{len(words)} fields")
            fields = [(c, w) for c, w in zip(columns, words, strict=True) if c not in _STRING_COLUMNS]
            rows.append([self._number(number, name, word, text) for name, word in fields])
            words_by_line.append(words)
        values = np.array(rows, dtype=np.float64).reshape(len(raw), len(self.layout.numeric))
        strings = {
            c: np.array([w[j] for w in words_by_line], dtype=str) for c, j in self.layout.strings.items()
        }
        return values, strings

    def _number(self, line: int, name: str, word: str, text: str) -> float:
        """``word`` of column ``name`` on line ``line`` (all of it: ``text``) as a
        float; ParseError unless it is a finite plain decimal."""
        try:
            value = float(word)
        except ValueError:
            raise ParseError(self.path, line, f"a number in column {name!r}", quoted(word)) from None
        if not math.isfinite(value):
            raise ParseError(self.path, line, f"a finite number in column {name!r}", quoted(word))
        if not _PLAIN_DECIMAL.fullmatch(word):
            raise ParseError(self.path, line, "plain decimal numbers", quoted(text))
        return value

    def column(self, name: str) -> np.ndarray:
        return self.values[:, self.layout.index[name]]

    def has(self, *names: str) -> bool:
        return all(name in self.layout.index for name in names)

    def _line_of(self, row: int) -> int:
        return self.first_line + int(row)

    def _order(self) -> np.ndarray | None:
        """Permutation sorting atoms by id; None without an id column (file order).
        Ids 1..n (the usual case) are placed directly, without sorting."""
        if not self.has("id"):
            return None
        ids = self.column("id").astype(np.int64)
        n = len(ids)
        if n and ids.min() == 1 and ids.max() == n:
            order = np.full(n, -1)
            order[ids - 1] = np.arange(n)
            if order.min() >= 0:  # else an id repeats
                return order
        order = np.argsort(ids, kind="stable")
        dup = np.flatnonzero(ids[order][1:] == ids[order][:-1])
        if dup.size:
            row = order[dup[0] + 1]
            raise ParseError(self.path, self._line_of(row), "unique atom ids", f"id {ids[row]} again")
        return order

    def _numbers(self, type_map: dict[int, int]) -> np.ndarray:
        """Atomic numbers in file order."""
        if type_map and self.has("type"):
            atom_types = self.column("type").astype(np.int64)
            table = _type_table(tuple(type_map.items()))
            numbers = np.take(table, atom_types, mode="clip")  # out-of-range types hit a 0
            if not numbers.all():
                row = int(np.argmin(numbers))
                raise ParseError(
                    self.path, self._line_of(row), f"a type listed in types= {sorted(type_map)}",
                    f"type {atom_types[row]}",
                )
            return numbers
        if "element" in self.strings:
            symbols = self.strings["element"]
            try:
                return numbers_from_symbols(symbols)
            except ValueError as exc:
                bad = str(exc).split(": ", 1)[-1].strip("'\"")
                row = int(np.flatnonzero(symbols == bad)[0]) if (symbols == bad).any() else 0
                raise ParseError(self.path, self._line_of(row), "an element symbol", quoted(bad)) from None
        if self.has("mass"):
            try:
                return numbers_from_masses(self.column("mass"))
            except ValueError as exc:
                raise ParseError(self.path, self.header.atoms_line, "masses of elements", str(exc)) from None
        found = "no type→element mapping"
        if self.has("type"):
            found = f"types {np.unique(self.column('type').astype(np.int64)).tolist()} without a mapping"
        raise ParseError(
            self.path,
            self.header.atoms_line,
            "an element for each atom type: pass types={1: 'Cu', 2: 'Ni'} (CLI: --types 1=Cu,2=Ni) "
            "or dump an 'element' or 'mass' column",
            found,
        )

    def _positions(self, xyz: np.ndarray, images: np.ndarray | None, scaled: bool) -> np.ndarray:
        """Cartesian positions (Å) from the position columns ``xyz``, unwrapped
        with the image flags ``images`` when given."""
        box = self.header.box
        if scaled:
            if images is not None:
                xyz = xyz + images
            return box.origin + xyz @ box.cell
        if images is not None:
            xyz = xyz + images @ box.cell
        return xyz

    def frame(self, index: int, type_map: dict[int, int], energy_column: str | None) -> Frame:
        """The Frame (number ``index`` in its file) of this table; ``type_map``
        as from parse_types, ``energy_column`` a numeric column or None."""
        h = self.header
        order = self._order()
        numbers = self._numbers(type_map)
        groups = self.layout.groups.items()
        if order is None:
            arrays = {key: self.values[:, cols].copy() for key, cols in groups}
        else:
            numbers = numbers[order]
            arrays = {key: np.take(self.values[:, cols], order, axis=0) for key, cols in groups}
        energy = h.energy
        if energy_column is not None:
            energy = float(np.sum(self.column(energy_column)))
        return Frame(
            numbers=numbers,
            positions=self._positions(arrays["xyz"], arrays.get("images"), self.layout.position_set[1]),
            cell=h.box.cell,
            pbc=h.box.pbc,
            energy=energy,
            forces=arrays.get("forces"),
            charges=arrays["charges"].reshape(-1) if "charges" in arrays else None,
            energy_weight=h.energy_weight,
            force_weight=h.force_weight,
            source=self.path,
            index=index,
        )
