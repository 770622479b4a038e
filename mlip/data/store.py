"""The HDF5 dataset file: layout, writer and low-level reader.

Layout (``format_version`` 1, LAMMPS ``metal`` units)::

    /                 attrs: format="mlip-dataset", format_version, units="metal",
                             elements (symbols sorted by atomic number), mlip_version
    /atoms/positions  (n_total, 3) float64, Å      all frames concatenated
    /atoms/numbers    (n_total,)   int16
    /atoms/forces     (n_total, 3) float64, eV/Å   only if some frame has forces (NaN elsewhere)
    /atoms/charges    (n_total,)   float64, e      only if some frame has charges (NaN elsewhere)
    /frames/offsets   (n_frames + 1,) int64        atoms of frame i are offsets[i]:offsets[i+1]
    /frames/cell      (n_frames, 3, 3) float64, Å  lattice vectors as rows
    /frames/pbc       (n_frames, 3) bool
    /frames/energy    (n_frames,) float64, eV      NaN where has_energy is False (fill only)
    /frames/stress    (n_frames, 3, 3) float64, eV/Å³ (ASE sign), NaN where has_stress is False
    /frames/has_energy, has_forces, has_stress, has_charges   (n_frames,) bool
    /frames/energy_weight, force_weight, total_charge          (n_frames,) float64
    /frames/group     (n_frames,) int32, index into /groups, -1 for none
    /frames/source    (n_frames,) int32, index into /sources/path
    /frames/index     (n_frames,) int64, frame number within its source
    /groups           (n_groups,) str
    /sources/path     (n_sources,) str, as the reader gave it (``Frame.source``)
    /sources/sha256   (n_sources,) str, SHA-256 of the file's bytes ("" if it is not a file)

Absent and not-a-number are kept apart: the ``has_*`` masks alone say whether
a label is present, NaN is only the fill value of absent ones, and the writer
rejects a frame whose present values are not finite (:meth:`Frame.check_values`),
so a NaN can never be read back as "absent".

The writer streams: atom arrays are appended in blocks, so memory stays bounded
by the per-frame table plus one block.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import h5py
import numpy as np

from mlip import __version__
from mlip.errors import UserError
from mlip.fileio import OutputFile, atomic_write
from mlip.stop import raise_if_stopped
from parsers.frame import Frame

FORMAT_NAME = "mlip-dataset"
FORMAT_VERSION = 1
UNITS = "metal"

_BLOCK_ROWS = 1 << 16  # atoms buffered before a write
_STR = h5py.string_dtype()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes, or "" when ``path`` is not a file."""
    path = Path(path)
    if not path.is_file():
        return ""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _AtomColumn:
    """A per-atom array appended frame by frame into a resizable HDF5 dataset.

    Optional columns (forces, charges) are created at the first frame that has
    them; rows of frames without them read as the fill value (NaN), which HDF5
    supplies without storing anything for chunks never written.
    """

    def __init__(self, group: h5py.Group, name: str, tail: tuple[int, ...], dtype, fill) -> None:
        self.group, self.name, self.tail, self.dtype, self.fill = group, name, tail, dtype, fill
        self.rows = 0  # rows accounted for so far (written, buffered or skipped)
        self.runs: list[tuple[int, list[np.ndarray]]] = []  # (start row, contiguous blocks)
        self.run_end = -1  # row after the last buffered block
        self.buffered = 0
        self.dset: h5py.Dataset | None = None

    def append(self, block: np.ndarray | None, n_rows: int) -> None:
        """Add the rows of one frame; ``block`` None means "absent" (left as fill value)."""
        if block is not None:
            if self.run_end == self.rows:
                self.runs[-1][1].append(block)
            else:
                self.runs.append((self.rows, [block]))
            self.run_end = self.rows + n_rows
            self.buffered += n_rows
        self.rows += n_rows
        if self.buffered >= _BLOCK_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.runs and self.dset is None:
            self.dset = self.group.create_dataset(
                self.name,
                shape=(0, *self.tail),
                maxshape=(None, *self.tail),
                chunks=(max(1, _BLOCK_ROWS // max(1, int(np.prod(self.tail)))), *self.tail),
                dtype=self.dtype,
                fillvalue=self.fill,
            )
        if self.dset is not None and self.dset.shape[0] < self.rows:
            self.dset.resize(self.rows, axis=0)
        for start, blocks in self.runs:
            data = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
            self.dset[start : start + len(data)] = data
        self.runs, self.buffered, self.run_end = [], 0, -1


def _check_symbols(numbers: np.ndarray, frame: Frame) -> None:
    if len(numbers) and (numbers.min() < 1 or numbers.max() > 118):
        bad = numbers[(numbers < 1) | (numbers > 118)][0]
        raise UserError(
            f"{frame.source or '<frame>'} frame {frame.index}: atomic number {bad} is not an element"
        )


def write_dataset(frames: Iterable[Frame], path: str | os.PathLike) -> int:
    """Write ``frames`` to an HDF5 dataset file at ``path`` (layout in the module docstring).

    The file is written to a temporary file in the same folder and renamed over
    ``path`` only when every frame was written, so an error or an interruption
    (an exception from the ``frames`` iterator included) leaves no file behind.
    Source files are hashed (SHA-256) once each. Returns the number of frames.
    Raises :class:`~mlip.errors.UserError` when there are no frames or the file cannot be
    written (:func:`mlip.fileio.atomic_write`).
    """
    from ase.data import chemical_symbols

    with atomic_write(path, defer_errors=True) as out, h5py.File(out, "w") as h5:
        # HDF5 never sees a failed write (it crashes the process at exit after one): the
        # output file keeps the writes after a failure in memory, and this stops at the next frame
        n_frames, elements = _write(h5, _until_failed(frames, out))
        if n_frames == 0:
            raise UserError(f"no frames to write to {path}")
        h5.attrs["format"] = FORMAT_NAME
        h5.attrs["format_version"] = FORMAT_VERSION
        h5.attrs["units"] = UNITS
        h5.attrs["elements"] = [chemical_symbols[z] for z in elements]
        h5.attrs["mlip_version"] = __version__
    return n_frames


def _until_failed(frames: Iterable[Frame], out: OutputFile) -> Iterator[Frame]:
    """``frames``, stopping with the write error of ``out`` once one happened, or with a stop
    (SIGINT/SIGTERM) that HDF5's calls into ``out`` swallowed."""
    for frame in frames:
        raise_if_stopped()
        if out.error is not None:
            raise out.error
        yield frame


def _write(h5: h5py.File, frames: Iterable[Frame]) -> tuple[int, list[int]]:
    atoms = h5.create_group("atoms")
    columns = {
        "positions": _AtomColumn(atoms, "positions", (3,), np.float64, np.nan),
        "numbers": _AtomColumn(atoms, "numbers", (), np.int16, 0),
        "forces": _AtomColumn(atoms, "forces", (3,), np.float64, np.nan),
        "charges": _AtomColumn(atoms, "charges", (), np.float64, np.nan),
    }
    per_frame: dict[str, list] = {
        k: []
        for k in (
            "n_atoms cell pbc energy stress has_energy has_forces has_stress has_charges "
            "energy_weight force_weight total_charge group source index"
        ).split()
    }
    sources: dict[str, int] = {}
    groups: dict[str, int] = {}
    present = np.zeros(119, dtype=bool)
    nan33 = np.full((3, 3), np.nan)
    for frame in frames:
        n = frame.n_atoms
        frame.check_values()
        _check_symbols(frame.numbers, frame)
        present[frame.numbers] = True
        columns["positions"].append(frame.positions, n)
        columns["numbers"].append(frame.numbers, n)
        columns["forces"].append(frame.forces, n)
        columns["charges"].append(frame.charges, n)
        pf = per_frame
        pf["n_atoms"].append(n)
        pf["cell"].append(frame.cell)
        pf["pbc"].append(frame.pbc)
        pf["energy"].append(np.nan if frame.energy is None else frame.energy)
        pf["stress"].append(nan33 if frame.stress is None else frame.stress)
        pf["has_energy"].append(frame.energy is not None)
        pf["has_forces"].append(frame.forces is not None)
        pf["has_stress"].append(frame.stress is not None)
        pf["has_charges"].append(frame.charges is not None)
        pf["energy_weight"].append(frame.energy_weight)
        pf["force_weight"].append(frame.force_weight)
        pf["total_charge"].append(frame.total_charge)
        pf["group"].append(-1 if frame.group is None else groups.setdefault(frame.group, len(groups)))
        pf["source"].append(sources.setdefault(frame.source, len(sources)))
        pf["index"].append(frame.index)
    for column in columns.values():
        column.flush()
    n_frames = len(per_frame["n_atoms"])
    if n_frames == 0:
        return 0, []

    fr = h5.create_group("frames")
    fr["offsets"] = np.concatenate([[0], np.cumsum(per_frame.pop("n_atoms"))]).astype(np.int64)
    dtypes = {"pbc": bool, "group": np.int32, "source": np.int32, "index": np.int64}
    for key, values in per_frame.items():
        dtype = bool if key.startswith("has_") else dtypes.get(key, np.float64)
        fr[key] = np.asarray(values, dtype=dtype)
    h5.create_dataset("groups", data=list(groups), dtype=_STR)
    src = h5.create_group("sources")
    src.create_dataset("path", data=list(sources), dtype=_STR)
    src.create_dataset("sha256", data=[file_sha256(s) if s else "" for s in sources], dtype=_STR)
    return n_frames, np.flatnonzero(present).tolist()
