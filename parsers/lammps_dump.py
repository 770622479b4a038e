"""LAMMPS text dumps (``dump custom``, ``dump atom``, and the RANN variant) → Frames.

Each frame is ``[ITEM: UNITS] [ITEM: TIME] ITEM: TIMESTEP, ITEM: NUMBER OF
ATOMS, ITEM: BOX BOUNDS, ITEM: ATOMS <columns>`` followed by one line per atom.
The atom block is parsed straight from the read buffer into a float64 array by
the compiled scanner (:mod:`parsers._dumpscan`, one call per block, numbers
converted exactly as ``float()`` does); Python looks only at the line where it
stopped, to say what is wrong there. With more than one parse thread
(``MLIP_PARSE_THREADS``, see :mod:`parsers.textio`) the scanner's workers parse
frame k+1's block while frame k is built; errors still come in file order.

- RANN variant: ``ITEM: TIMESTEP energy, energy_weight, force_weight, nsims``
  followed by ``step E_total w_E w_F nsims`` (6, 11 or 12 fields are accepted
  too; the first five are kept). E_total (eV) becomes ``Frame.energy`` and the
  weights ``energy_weight`` / ``force_weight``.
- Columns, in any order: ``id type element mass``, positions as one of
  ``xu yu zu`` / ``x y z`` / ``xsu ysu zsu`` / ``xs ys zs`` (first found wins;
  scaled ones are converted with the box), image flags ``ix iy iz`` (added to
  wrapped positions), ``fx fy fz`` (eV/Å), ``q`` (e) and any others (``vx``,
  ``c_*``, ``v_*``, ``d_*``, ``i_*``...), which are only read when asked for
  (the others are only checked to be plain decimal numbers).
- Atoms are sorted by ``id`` when that column exists.
- Energies: ``energy_column`` (a per-atom column, summed), or ``log`` (a LAMMPS
  log whose thermo ``PotEng`` is matched by timestep), or the RANN header, or
  none.
- Elements: ``types`` (``{1: "Cu"}``), else an ``element`` column, else a
  ``mass`` column (nearest standard mass).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np

from parsers._dumpscan import id_order, take_rows
from parsers.elements import TypesOption, numbers_from_masses, numbers_from_symbols, parse_types
from parsers.errors import ParseError
from parsers.frame import Frame
from parsers.lammps_dump_header import DumpHeader, HeaderReader, line_text, position_set, quoted
from parsers.lammps_log import read_thermo_energies
from parsers.textio import LineReader

_STRING_COLUMNS = ("element",)


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
    with LineReader(path) as reader:
        yield from _frames(reader, type_map, energy_column, log_energies, log)


def _frames(
    reader: LineReader,
    type_map: dict[int, int],
    energy_column: str | None,
    log_energies: dict[int, float] | None,
    log: str | Path | None,
) -> Iterator[Frame]:
    """The frames of read_lammps_dump, pipelined: while frame k is built from
    its table, frame k+1's header is read and its atom block is parsed by the
    scanner's worker threads (the reader's threads beyond this one) into the
    other of two scratch arrays. A ParseError in frame k+1 is raised only
    after frame k has been yielded, as without the pipeline; no scan is left
    running when a frame is yielded, so a caller that stops early leaves no
    work behind."""
    scratches, memory, headers = (_Scratch(), _Scratch()), _FrameMemory(), HeaderReader(energy_column)
    index = 0
    table = _start_table(reader, headers, scratches[0], type_map)
    while table is not None:
        table.finish(reader)
        try:
            following, error = _start_table(reader, headers, scratches[(index + 1) % 2], type_map), None
        except ParseError as exc:  # frame k+1's header: raised after frame k
            following, error = None, exc
        try:
            frame = table.frame(index, memory)
            if log_energies is not None:
                frame.energy = _log_energy(log_energies, table.header, reader.path, log)
        finally:
            if following is not None:
                following.wait(reader)  # also when frame k fails: the workers must not outlive the reader
        yield frame
        if error is not None:
            raise error
        table, index = following, index + 1


def _start_table(
    reader: LineReader, headers: HeaderReader, scratch: _Scratch, type_map: dict[int, int]
) -> _AtomTable | None:
    """Read the next frame's header and start parsing its atom block into
    ``scratch`` (in the background); None at end of file."""
    header = headers.read(reader)
    return None if header is None else _AtomTable(reader, header, scratch, type_map, headers.energy_column)


def _log_energy(energies: dict[int, float], header: DumpHeader, path: str, log: str | Path) -> float:
    if header.step not in energies:
        raise ParseError(path, header.step_line, f"a PotEng for step {header.step} in {log}", "none")
    return energies[header.step]


# ----------------------------------------------------------------------------- atoms


class _Scratch:
    """A float64 work array reused from frame to frame: new memory costs page
    faults (several ms per MB on virtual machines), reused memory does not."""

    def __init__(self) -> None:
        self._buffer = np.empty(0)

    def array(self, shape: tuple[int, int]) -> np.ndarray:
        """The work array with ``shape``, C-contiguous, contents undefined."""
        size = shape[0] * shape[1]
        if self._buffer.size < size:
            self._buffer = np.empty(size)
        return self._buffer[:size].reshape(shape)


class _FrameMemory:
    """Memory for the arrays the Frames keep, cut from blocks of up to ``block_bytes``.

    First writes to new memory fault once per 4 kB page (several ms per MB
    on virtual machines, half the cost of building a Frame); numpy asks the
    kernel for 2 MB huge pages for arrays of 4 MB or more, so blocks of 8 MB
    fault a few times instead of 2048. Blocks grow with what has been cut so
    far (twice as much), so that a small file gets small blocks. The price: a
    Frame's arrays are views into a block, which stays alive as long as any
    of them does, so a caller that keeps one frame in 30 still holds the
    memory of all of them (no more than keeping every frame, as a training
    set build does)."""

    SMALL = 2048

    def __init__(self, block_bytes: int = 8 << 20) -> None:
        self._block_bytes = block_bytes
        self._block = np.empty(0, dtype=np.uint8)
        self._used = 0  # bytes of the current block cut
        self._total = 0  # bytes cut from all blocks

    def array(self, shape: tuple[int, ...], dtype: type = np.float64) -> np.ndarray:
        """A new C-contiguous array (contents undefined), 64-byte aligned within
        its block; one of fewer than SMALL items is an array of its own (a few
        faults saved would cost less than cutting it here, for frames of a few
        hundred atoms)."""
        size = math.prod(shape)
        if size < self.SMALL:
            return np.empty(shape, dtype)
        dtype = np.dtype(dtype)
        nbytes = size * dtype.itemsize
        if self._used + nbytes > self._block.size:
            self._block = np.empty(max(nbytes, min(self._block_bytes, 2 * self._total)), dtype=np.uint8)
            self._used = 0
        out = np.ndarray(shape, dtype, self._block, self._used)
        step = -(-nbytes // 64) * 64
        self._used += step
        self._total += step
        return out


@dataclass(frozen=True)
class _Layout:
    """What a frame's column list implies, worked out once per distinct list."""

    index: dict[str, int]  # column name -> position
    position_set: tuple[tuple[str, ...], bool, bool]  # (position column names, scaled, unwrapped)
    kinds: bytes  # the scanner's kind of each column: 0 converted, 1 string, 2 checked only
    string_columns: tuple[str, ...]  # the kind-1 columns, in order
    # the Frame's arrays taken from the table: "xyz", and "images", "forces", "charges" when
    # their columns are there, each with its column positions
    groups: dict[str, tuple[int, ...]]


@functools.lru_cache(maxsize=64)
def _layout(columns: tuple[str, ...], typed: bool, energy_column: str | None) -> _Layout:
    """The layout of ``columns`` (a header that has passed read_header's checks);
    ``typed``: a types= mapping was given. Only the columns a Frame is built
    from are converted: positions, image flags for wrapped ones, forces,
    charges, ids, types, and what gives the elements and the energy."""
    positions = position_set(list(columns))
    names, _, unwrapped = positions
    needed = {*names, "id", "type", "fx", "fy", "fz", "q", *_STRING_COLUMNS}
    if not unwrapped:
        needed |= {"ix", "iy", "iz"}
    if not (typed and "type" in columns):
        needed.add("mass")
    if energy_column is not None:
        needed.add(energy_column)
    kinds = bytes(1 if c in _STRING_COLUMNS else 0 if c in needed else 2 for c in columns)
    string_columns = tuple(c for c in columns if c in _STRING_COLUMNS)
    index = {name: j for j, name in enumerate(columns)}
    groups = {"xyz": names, "images": ("ix", "iy", "iz"), "forces": ("fx", "fy", "fz"), "charges": ("q",)}
    if unwrapped:
        del groups["images"]
    groups = {key: tuple(index[c] for c in cols) for key, cols in groups.items() if set(cols) <= set(index)}
    return _Layout(index, positions, kinds, string_columns, groups)


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


class _AtomTable:
    """The atom block of one frame, parsed in bulk and checked; only the columns
    needed for ``type_map`` and ``energy_column`` are converted. Its array
    lives in ``scratch``: the Frame gets copies. The parse starts when the
    table is made (in the background with several threads); :meth:`wait`
    joins it and :meth:`finish` checks it, before anything else is used."""

    def __init__(
        self,
        reader: LineReader,
        header: DumpHeader,
        scratch: _Scratch,
        type_map: dict[int, int],
        energy_column: str | None,
    ) -> None:
        self.path = reader.path
        self.header = header
        self.type_map = type_map
        self.energy_column = energy_column
        self.first_line = header.atoms_line + 1
        self.columns = header.columns
        layout = _layout(tuple(self.columns), bool(type_map), energy_column)
        self.index = layout.index
        #: (position column names, scaled, unwrapped); the header has checked that there is one
        self.position_set = layout.position_set
        self.groups = layout.groups
        self.string_columns = layout.string_columns
        kinds = layout.kinds
        self._words: list[str] = []
        #: (n, n_columns) float64, file order; NaN in string columns, undefined in skipped ones
        self.numeric = scratch.array((header.n_atoms, len(self.columns)))
        self.strings: dict[str, np.ndarray] = {}
        self._got: int | None = None  # atom lines read, once the parse has ended
        reader.start_table(self.numeric, kinds, self._words)

    def wait(self, reader: LineReader) -> int:
        """Wait for the parse to end (the reader is free again afterwards);
        the number of atom lines read."""
        if self._got is None:
            self._got = reader.wait_table()
        return self._got

    def finish(self, reader: LineReader) -> None:
        """Wait for the parse, raise ParseError unless every atom line was read
        (the reader stands at the bad line), and collect the string columns."""
        n = self.header.n_atoms
        got = self.wait(reader)
        if got < n:
            self._diagnose(reader, got)
        if self.string_columns:
            table = np.array(self._words, dtype=str).reshape(n, len(self.string_columns))
            self.strings = {c: table[:, k] for k, c in enumerate(self.string_columns)}

    def _count_error(self, line: int, found: str) -> NoReturn:
        h = self.header
        raise ParseError(
            self.path, line, f"{h.n_atoms} atom lines (NUMBER OF ATOMS at line {h.natoms_line})", found
        )

    def _diagnose(self, reader: LineReader, got: int) -> NoReturn:
        """Say what is wrong with the line after the ``got`` good atom lines."""
        line = self.first_line + got
        raw = reader.readline()
        if raw is None:
            self._count_error(line, f"end of file after {got} atom lines")
        if raw.startswith(b"ITEM:"):
            self._count_error(line, f"'ITEM:' after {got} atom lines")
        text = line_text(raw)
        words = text.split()
        ncol = len(self.columns)
        if len(words) != ncol:
            expected = f"{ncol} fields ({' '.join(self.columns)})"
            raise ParseError(self.path, line, expected, f"{len(words)} fields")
        for name, word in zip(self.columns, words, strict=True):
            if name in _STRING_COLUMNS:
                continue
            try:
                value = float(word)
            except ValueError:
                raise ParseError(self.path, line, f"a number in column {name!r}", quoted(word)) from None
            if not math.isfinite(value):
                raise ParseError(self.path, line, f"a finite number in column {name!r}", quoted(word))
        # float() takes a few spellings the scanner does not (e.g. '1_000'): plain decimals only.
        raise ParseError(self.path, line, "plain decimal numbers", quoted(text))

    def column(self, name: str) -> np.ndarray:
        return self.numeric[:, self.index[name]]

    def has(self, *names: str) -> bool:
        return all(name in self.index for name in names)

    def _line_of(self, row: int) -> int:
        return self.first_line + int(row)

    def _order(self) -> np.ndarray | None:
        """Permutation sorting atoms by id; None without an id column (file order).
        Ids 1..n (the usual case) are placed directly, in one compiled pass."""
        if "id" not in self.index:
            return None
        order = np.empty(self.header.n_atoms, dtype=np.int64)
        if id_order(self.numeric, self.index["id"], order):
            return order
        ids = self.column("id").astype(np.int64)
        order = np.argsort(ids, kind="stable")
        dup = np.flatnonzero(ids[order][1:] == ids[order][:-1])
        if dup.size:
            row = order[dup[0] + 1]
            raise ParseError(self.path, self._line_of(row), "unique atom ids", f"id {ids[row]} again")
        return order

    def _numbers(self) -> np.ndarray:
        """Atomic numbers in file order."""
        type_map = self.type_map
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

    def _take(self, order: np.ndarray | None, memory: _FrameMemory) -> dict[str, np.ndarray]:
        """Each group of columns of the layout in atom order (``order`` from
        _order), as a new C-contiguous (n, len(group)) array from ``memory``."""
        arrays = {key: memory.array((self.header.n_atoms, len(cols))) for key, cols in self.groups.items()}
        take_rows(self.numeric, order, [(self.groups[key], out) for key, out in arrays.items()])
        return arrays

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

    def frame(self, index: int, memory: _FrameMemory) -> Frame:
        """The Frame (number ``index`` in its file) of this table, its arrays
        (those in atom order) from ``memory``."""
        h = self.header
        order = self._order()
        numbers = self._numbers()
        if order is not None:
            numbers = np.take(numbers, order, out=memory.array(numbers.shape, np.int64))
        arrays = self._take(order, memory)
        charges = arrays["charges"].reshape(-1) if "charges" in arrays else None
        energy = h.energy
        if self.energy_column is not None:
            energy = float(np.sum(self.column(self.energy_column)))
        return Frame(
            numbers=numbers,
            positions=self._positions(arrays["xyz"], arrays.get("images"), self.position_set[1]),
            cell=h.box.cell,
            pbc=h.box.pbc,
            energy=energy,
            forces=arrays.get("forces"),
            charges=charges,
            energy_weight=h.energy_weight,
            force_weight=h.force_weight,
            source=self.path,
            index=index,
        )
