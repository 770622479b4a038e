"""The header of a LAMMPS dump frame: its ITEM sections up to ``ITEM: ATOMS``.

:func:`read_header` parses any header, ``[ITEM: UNITS] [ITEM: TIME] ITEM:
TIMESTEP, ITEM: NUMBER OF ATOMS, ITEM: BOX BOUNDS, ITEM: ATOMS <columns>``, and
says what is wrong with a bad one. :class:`HeaderReader` also remembers the
last header that was the usual nine lines (the four ITEM lines, the timestep,
the atom count and three box rows): a next header whose four ITEM lines are
the same bytes is parsed from its five value lines alone, without going line
by line (most of the cost of a frame of a few atoms); a header that differs in
any way, or whose values do not parse, goes through :func:`read_header`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from parsers.errors import ParseError
from parsers.lammps_box import Box, BoxForm, box_form, box_from_dump
from parsers.textio import LineReader

# (column names, scaled, unwrapped), in order of preference
_POSITION_SETS = (
    (("xu", "yu", "zu"), False, True),
    (("x", "y", "z"), False, False),
    (("xsu", "ysu", "zsu"), True, True),
    (("xs", "ys", "zs"), True, False),
)


def position_set(columns: list[str]) -> tuple[tuple[str, ...], bool, bool] | None:
    """The preferred entry of _POSITION_SETS whose columns are all present, or None."""
    return next((s for s in _POSITION_SETS if set(s[0]) <= set(columns)), None)


_RANN_FIELDS = (5, 6, 11, 12)


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


def _next_line(reader: LineReader, expected: str) -> str:
    line = reader.readline()
    if line is None:
        raise ParseError(reader.path, reader.line + 1, expected, "end of file")
    return line_text(line)


def _item(reader: LineReader, name: str, text: str | None = None) -> list[str]:
    """Check that the next line (or ``text``) is ``ITEM: name ...``; return the words after it."""
    if text is None:
        text = _next_line(reader, f"ITEM: {name}")
    if not text.startswith(f"ITEM: {name}"):
        raise ParseError(reader.path, reader.line, f"ITEM: {name}", quoted(text))
    return text[len("ITEM: ") + len(name) :].split()


def _numbers(reader: LineReader, words: list[str], what: str) -> list[float]:
    try:
        values = [float(w) for w in words]
    except ValueError:
        raise ParseError(reader.path, reader.line, what, quoted(" ".join(words))) from None
    if not all(math.isfinite(v) for v in values):
        raise ParseError(reader.path, reader.line, what + " (finite)", quoted(" ".join(words)))
    return values


def _int(reader: LineReader, word: str, what: str) -> int:
    try:
        return int(word)
    except ValueError:
        raise ParseError(reader.path, reader.line, what, quoted(word)) from None


def read_header(reader: LineReader, energy_column: str | None) -> DumpHeader | None:
    """Read one frame's ITEM sections up to ``ITEM: ATOMS``; None at end of file."""
    line = reader.readline()
    while line is not None and not line.strip():
        line = reader.readline()
    if line is None:
        return None
    text = line_text(line)
    while text.startswith(("ITEM: UNITS", "ITEM: TIME")) and not text.startswith("ITEM: TIMESTEP"):
        item = text
        value = _next_line(reader, f"a value after {item}")
        if item.startswith("ITEM: UNITS") and value != "metal":
            raise ParseError(reader.path, reader.line, "metal units", quoted(value))
        text = _next_line(reader, "ITEM: TIMESTEP")

    _item(reader, "TIMESTEP", text)
    words = _next_line(reader, "a timestep").split()
    step_line = reader.line
    energy, w_e, w_f = None, 1.0, 1.0
    if len(words) in _RANN_FIELDS:
        step = _int(reader, words[0], "an integer timestep")
        energy, w_e, w_f = _numbers(reader, words[1:4], "numbers 'E_total w_E w_F' after the timestep")
    elif len(words) == 1:
        step = _int(reader, words[0], "an integer timestep")
    else:
        raise ParseError(
            reader.path,
            step_line,
            "a timestep, or 5, 6, 11 or 12 fields 'step E_total w_E w_F nsims ...'",
            f"{len(words)} fields",
        )

    _item(reader, "NUMBER OF ATOMS")
    words = _next_line(reader, "the number of atoms").split()
    n_atoms = _int(reader, words[0] if words else "", "a non-negative number of atoms")
    natoms_line = reader.line
    if n_atoms < 0:
        raise ParseError(reader.path, natoms_line, "a non-negative number of atoms", str(n_atoms))

    box_words = _item(reader, "BOX BOUNDS")
    box_line = reader.line
    rows = [_numbers(reader, _next_line(reader, "a box bounds row").split(), "box bounds numbers")
            for _ in range(3)]
    if len({len(r) for r in rows}) != 1:
        raise ParseError(reader.path, box_line, "three box rows of equal length", str([len(r) for r in rows]))
    try:
        box = box_from_dump(box_words, np.array(rows))
    except ValueError as exc:
        raise ParseError(reader.path, box_line, str(exc), quoted(" ".join(box_words))) from None

    columns = _item(reader, "ATOMS")
    atoms_line = reader.line
    if position_set(columns) is None:
        raise ParseError(
            reader.path, atoms_line, "position columns x y z, xu yu zu, xs ys zs or xsu ysu zsu",
            quoted(" ".join(columns)),
        )
    if energy_column is not None and energy_column not in columns:
        raise ParseError(
            reader.path, atoms_line, f"a column {energy_column!r} (energy_column)", quoted(" ".join(columns))
        )
    return DumpHeader(step, step_line, n_atoms, natoms_line, box, columns, atoms_line, energy, w_e, w_f)


@dataclass
class _Template:
    """What the nine lines of a usual header share with the next one's."""

    items: tuple[bytes, bytes, bytes, bytes]  # lines 1, 3, 5 and 9: the ITEM lines, as bytes
    step_fields: int  # words on the timestep line (1, or the RANN variant's 5, 6, 11 or 12)
    box_form: BoxForm  # what the words after ITEM: BOX BOUNDS say
    columns: list[str]


class HeaderReader:
    """Reads the headers of one dump (see the module docstring)."""

    LINES = 9  # a usual header: 4 ITEM lines, the timestep, the atom count, 3 box rows

    def __init__(self, energy_column: str | None) -> None:
        self.energy_column = energy_column
        self._template: _Template | None = None

    def read(self, reader: LineReader) -> DumpHeader | None:
        """The next header (None at end of file), or ParseError."""
        lines = reader.peek_lines(self.LINES)
        if lines is not None and self._template is not None:
            header = self._from_template(lines, reader.line)
            if header is not None:
                reader.skip_peeked()
                return header
        first = reader.line
        header = read_header(reader, self.energy_column)
        if header is not None and lines is not None and reader.line - first == self.LINES:
            # nine lines read: no blank lines nor UNITS / TIME items, so these were the usual ones
            form = box_form(line_text(lines[4])[len("ITEM: BOX BOUNDS") :].split())
            items = (lines[0], lines[2], lines[4], lines[8])
            self._template = _Template(items, len(lines[1].split()), form, header.columns)
        return header

    def _from_template(self, lines: list[bytes], before: int) -> DumpHeader | None:
        """The header in ``lines`` (after line ``before``) if its ITEM lines are
        the template's and its values parse as read_header would take them;
        else None."""
        template = self._template
        if (lines[0], lines[2], lines[4], lines[8]) != template.items:
            return None
        words = lines[1].split()
        if len(words) != template.step_fields:
            return None
        try:
            step, n_atoms = int(words[0]), int(lines[3])
            energy, w_e, w_f = (float(w) for w in words[1:4]) if len(words) > 1 else (None, 1.0, 1.0)
            rows = [[float(w) for w in line.split()] for line in lines[5:8]]
            box = template.box_form.box(rows)
        except ValueError:
            return None
        # NaN or infinity anywhere makes the sum so (a sum that overflows only sends
        # the header to read_header, which accepts it)
        total = sum(v for row in rows for v in row) + (energy or 0.0) + w_e + w_f
        if n_atoms < 0 or not math.isfinite(total):
            return None
        return DumpHeader(
            step, before + 2, n_atoms, before + 4, box, template.columns, before + 9, energy, w_e, w_f
        )
