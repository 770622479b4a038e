"""Read access to an HDF5 dataset file: :class:`Dataset`, :class:`Subset` and splits.

The per-frame table (offsets, cells, energies, provenance; a few hundred bytes
per frame) is read when the :class:`Dataset` is created and the file is closed
again. Atom arrays are read on demand through an h5py handle that is opened at
the first access and reopened in a forked child (DataLoader workers), so a
Dataset can be created before workers start and shared with them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Union

import h5py
import numpy as np

from mlip.data.store import FORMAT_NAME, FORMAT_VERSION
from mlip.errors import UserError
from parsers.frame import Frame

Index = Union[int, np.integer, slice, Sequence[int], np.ndarray]

_ITER_BLOCK_ATOMS = 1 << 16  # atoms read at once when iterating
SPLIT_BY = ("random", "group", "source")  # the ways Dataset.split chooses validation frames


class Dataset:
    """Frames stored in an HDF5 file written by :func:`mlip.data.write_dataset`.

    ``len(ds)`` frames; ``ds[i]`` is a :class:`parsers.Frame` (float64 arrays,
    metal units), ``ds[a:b]``, ``ds[[i, j]]`` or ``ds[bool_mask]`` a list of
    Frames; iterating yields every Frame in order.

    Per-frame arrays, all of length ``len(ds)``: ``n_atoms`` (atoms per frame),
    ``cell`` (n, 3, 3) Å, ``pbc`` (n, 3), ``energy`` (eV, NaN when absent),
    ``stress`` (n, 3, 3) eV/Å³ (NaN when absent), ``has_energy``, ``has_forces``,
    ``has_stress``, ``has_charges`` (the masks alone say what is present; a
    present value that is not finite, which the writer never stores, is a
    :class:`UserError` at opening or at reading the frame), ``energy_weight``, ``force_weight``,
    ``total_charge`` (e), ``group_id`` (index into ``groups``, -1 for none),
    ``source_id`` (index into ``sources``, whose SHA-256 are ``source_sha256``)
    and ``frame_index`` (frame number within its source).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such dataset file")
        self._stamp = self._file_stamp()
        try:
            h5 = h5py.File(self.path, "r")
        except OSError as exc:
            raise UserError(f"{self.path}: not an HDF5 file ({exc})") from None
        with h5:
            self._read_table(h5)
        self._h5: h5py.File | None = None
        self._pid = -1

    def _read_table(self, h5: h5py.File) -> None:
        if h5.attrs.get("format") != FORMAT_NAME:
            raise UserError(f"{self.path}: not an mlip dataset (no format='{FORMAT_NAME}' attribute)")
        version = int(h5.attrs["format_version"])
        if version > FORMAT_VERSION:
            raise UserError(
                f"{self.path}: dataset format version {version} is newer than this mlip reads "
                f"({FORMAT_VERSION}); upgrade mlip"
            )
        self.elements: list[str] = [str(e) for e in h5.attrs["elements"]]
        self.units: str = str(h5.attrs["units"])
        self.format_version = version
        fr = h5["frames"]
        self._offsets: np.ndarray = fr["offsets"][()]
        self.n_atoms: np.ndarray = np.diff(self._offsets)
        self.cell: np.ndarray = fr["cell"][()]
        self.pbc: np.ndarray = fr["pbc"][()]
        self.energy: np.ndarray = fr["energy"][()]
        self.stress: np.ndarray = fr["stress"][()]
        self.has_energy: np.ndarray = fr["has_energy"][()]
        self.has_forces: np.ndarray = fr["has_forces"][()]
        self.has_stress: np.ndarray = fr["has_stress"][()]
        self.has_charges: np.ndarray = fr["has_charges"][()]
        self.energy_weight: np.ndarray = fr["energy_weight"][()]
        self.force_weight: np.ndarray = fr["force_weight"][()]
        self.total_charge: np.ndarray = fr["total_charge"][()]
        self.source_id: np.ndarray = fr["source"][()]
        self.frame_index: np.ndarray = fr["index"][()]
        self.group_id: np.ndarray = fr["group"][()]
        self.groups: list[str] = list(h5["groups"].asstr()[()])
        self.sources: list[str] = list(h5["sources/path"].asstr()[()])
        self.source_sha256: list[str] = list(h5["sources/sha256"].asstr()[()])
        for name, values in (("energy", self.energy), ("stress", self.stress)):
            bad = getattr(self, f"has_{name}") & ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
            if bad.any():
                raise self._not_finite(name, int(np.argmax(bad)))

    def _not_finite(self, name: str, i: int) -> UserError:
        """The error for frame ``i``, marked as having ``name`` but holding a value that is not finite."""
        return UserError(
            f"{self.path}: frame {i} ({self.sources[self.source_id[i]]} frame {self.frame_index[i]}) "
            f"is marked as having {name} but its {name} is not finite; rebuild the dataset"
        )

    # -- file handle ---------------------------------------------------------
    def _file_stamp(self) -> tuple[int, int, int]:
        st = os.stat(self.path)
        return st.st_ino, st.st_size, st.st_mtime_ns

    def _file(self) -> h5py.File:
        """The open h5py file of this process (reopened after a fork). Raises
        :class:`UserError` if the file was replaced since the table was read."""
        if self._h5 is None or self._pid != os.getpid():
            if not self.path.exists() or self._file_stamp() != self._stamp:
                raise UserError(f"{self.path} changed on disk since it was opened; open it again")
            self._h5 = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._h5

    def close(self) -> None:
        """Close the file handle (it reopens on the next access)."""
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5 = None

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_h5"], state["_pid"] = None, -1
        return state

    # -- frames --------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.n_atoms)

    @property
    def total_atoms(self) -> int:
        """Number of atoms summed over all frames."""
        return int(self._offsets[-1])

    def __getitem__(self, index: Index) -> Frame | list[Frame]:
        if isinstance(index, (int, np.integer)):
            i = int(index)
            if not -len(self) <= i < len(self):
                raise IndexError(f"frame {i} out of range for a dataset of {len(self)} frames")
            return self._read_range(i % len(self), i % len(self) + 1)[0]
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step == 1:
                return self._read_range(start, max(start, stop))
            return [self[i] for i in range(start, stop, step)]
        return [self[i] for i in self._as_indices(index)]

    def _as_indices(self, index: Sequence[int] | np.ndarray) -> np.ndarray:
        arr = np.asarray(index)
        if arr.dtype == bool:
            if arr.shape != (len(self),):
                raise IndexError(f"boolean mask of shape {arr.shape} for {len(self)} frames")
            return np.flatnonzero(arr)
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise IndexError(f"frame indices must be integers, got dtype {arr.dtype}")
        return arr.astype(np.int64).ravel()

    def __iter__(self) -> Iterator[Frame]:
        start = 0
        while start < len(self):
            stop = int(np.searchsorted(self._offsets, self._offsets[start] + _ITER_BLOCK_ATOMS, "right"))
            stop = min(max(stop - 1, start + 1), len(self))
            yield from self._read_range(start, stop)
            start = stop

    def _read_range(self, start: int, stop: int) -> list[Frame]:
        """Frames ``start..stop-1``, reading each atom array once for the whole range."""
        if stop <= start:
            return []
        a0, a1 = int(self._offsets[start]), int(self._offsets[stop])
        atoms = self._file()["atoms"]
        positions = atoms["positions"][a0:a1]
        numbers = atoms["numbers"][a0:a1].astype(np.int64)
        forces = atoms["forces"][a0:a1] if self.has_forces[start:stop].any() else None
        charges = atoms["charges"][a0:a1] if self.has_charges[start:stop].any() else None
        for name, array in (("forces", forces), ("charges", charges)):
            if array is not None:
                bad_atoms = np.flatnonzero(~np.isfinite(array.reshape(len(array), -1)).all(axis=1)) + a0
                frame_of = np.searchsorted(self._offsets, bad_atoms, side="right") - 1
                marked = frame_of[getattr(self, f"has_{name}")[frame_of]]
                if marked.size:
                    raise self._not_finite(name, int(marked[0]))
        frames = []
        for i in range(start, stop):
            s = slice(self._offsets[i] - a0, self._offsets[i + 1] - a0)
            g = self.group_id[i]
            frames.append(
                Frame(
                    numbers=numbers[s],
                    positions=positions[s],
                    cell=self.cell[i].copy(),
                    pbc=self.pbc[i].copy(),
                    energy=float(self.energy[i]) if self.has_energy[i] else None,
                    forces=forces[s] if self.has_forces[i] else None,
                    stress=self.stress[i].copy() if self.has_stress[i] else None,
                    charges=charges[s] if self.has_charges[i] else None,
                    total_charge=float(self.total_charge[i]),
                    energy_weight=float(self.energy_weight[i]),
                    force_weight=float(self.force_weight[i]),
                    source=self.sources[self.source_id[i]],
                    index=int(self.frame_index[i]),
                    group=None if g < 0 else self.groups[g],
                )
            )
        return frames

    # -- views and splits ----------------------------------------------------
    def subset(self, indices: Sequence[int] | np.ndarray) -> Subset:
        """A view of the frames at ``indices`` (in that order), e.g. a split's training part."""
        return Subset(self, indices)

    def family(self, name: str) -> np.ndarray:
        """Sorted indices of the frames of one configuration family: the group labelled ``name``
        (mlearn's ``Surface``, an extxyz ``config_type``) or the source file ``name`` (its path as
        stored, its file name ``1NN.dump``, or that name without extension ``1NN``).
        Raises :class:`UserError` naming the groups and source files when nothing matches."""
        groups = [i for i, g in enumerate(self.groups) if g == name]
        sources = [i for i, s in enumerate(self.sources) if name in (s, Path(s).name, Path(s).stem)]
        indices = np.flatnonzero(np.isin(self.group_id, groups) | np.isin(self.source_id, sources))
        if not len(indices):
            raise UserError(
                f"{self.path}: no group or source file named {name!r}; groups: "
                f"{', '.join(self.groups) or 'none'}; source files: "
                f"{', '.join(Path(s).name for s in self.sources)}"
            )
        return indices

    def split(
        self, val_fraction: float = 0.1, seed: int = 0, split_by: str = "random", holdout: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Split the frames into ``(train_indices, val_indices)``, sorted int64 arrays.

        ``split_by="random"``: a seeded random ``val_fraction`` of the frames
        (at least one frame when ``val_fraction > 0``).
        ``split_by="group"``: stratified by group label: a seeded random ``round(val_fraction * n)``
        of the ``n`` frames of each group (frames without a label form one more group), never all
        of a group's frames, at least one frame in all when ``val_fraction > 0``; every group is in
        validation in the proportion it has in the data.
        ``split_by="source"``: whole source files are held out, to measure the
        error on unseen configuration families. Going through the sources in a
        seeded random order, a source is held out when that brings the held-out
        frame count closer to ``val_fraction`` of the frames (at least one
        source is held out, at least one kept).
        ``holdout``: leave-one-family-out. Every frame of that group or source
        (see :meth:`family`) is in validation and none in training; the other
        frames are split as above, ``val_fraction`` being a fraction of them.
        The same seed always gives the same split for the same file.
        """
        if not 0.0 <= val_fraction < 1.0:
            raise UserError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if split_by not in SPLIT_BY:
            raise UserError(f"split_by must be one of {', '.join(SPLIT_BY)}, got {split_by!r}")
        held = self.family(holdout) if holdout is not None else np.zeros(0, dtype=np.int64)
        rest = np.setdiff1d(np.arange(len(self), dtype=np.int64), held)
        if not len(rest):
            raise UserError(f"{self.path}: holding out {holdout!r} leaves no frames to train on")
        val = np.zeros(len(self), dtype=bool)
        val[held] = True
        if val_fraction > 0.0:
            pick = getattr(self, f"_{split_by}_val")
            val[pick(rest, val_fraction, np.random.default_rng(seed))] = True
        return np.flatnonzero(~val), np.flatnonzero(val)

    def _random_val(self, rest: np.ndarray, val_fraction: float, rng: np.random.Generator) -> np.ndarray:
        """A random ``val_fraction`` of the frames ``rest`` (at least one, never all)."""
        n = len(rest)
        if n < 2:
            raise UserError(f"{self.path}: cannot split {n} frame(s) into training and validation")
        return rest[rng.permutation(n)[: min(max(1, round(val_fraction * n)), n - 1)]]

    def _group_val(self, rest: np.ndarray, val_fraction: float, rng: np.random.Generator) -> np.ndarray:
        """``round(val_fraction * n)`` random frames of each group's ``n`` frames among ``rest``."""
        labels = self.group_id[rest]
        if (labels < 0).all():
            raise UserError(f"{self.path}: split_by='group' needs group labels (mlearn's group, extxyz "
                            "config_type) and no frame has one")
        picked = []
        for label in np.unique(labels):
            members = rest[labels == label]
            k = min(round(val_fraction * len(members)), len(members) - 1)
            picked.append(members[rng.permutation(len(members))[:k]])
        val = np.concatenate(picked)
        return val if len(val) else self._random_val(rest, val_fraction, rng)

    def _source_val(self, rest: np.ndarray, val_fraction: float, rng: np.random.Generator) -> np.ndarray:
        """Whole source files among ``rest``, together closest to ``val_fraction`` of its frames."""
        source_id = self.source_id[rest]
        present = np.unique(source_id)
        if len(present) < 2:
            raise UserError(
                f"{self.path}: split_by='source' needs at least 2 source files, found {len(present)}"
            )
        counts = np.bincount(source_id, minlength=len(self.sources))
        n = len(rest)
        target = val_fraction * n
        held: list[int] = []
        total = 0
        for s in rng.permutation(present):
            c = int(counts[s])
            if total + c < n and abs(total + c - target) < abs(total - target):
                held.append(int(s))
                total += c
        if not held:  # every source alone overshoots twice the target: take the closest
            held = [int(present[np.argmin(np.abs(counts[present] - target))])]
        return rest[np.isin(source_id, held)]


class Subset:
    """The frames of a :class:`Dataset` at given indices, with the same frame access.

    ``subset[i]`` is ``dataset[indices[i]]``; per-frame arrays such as
    ``n_atoms`` or ``energy`` are available through ``subset.dataset`` and
    ``subset.indices``.
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int] | np.ndarray) -> None:
        self.dataset = dataset
        self.indices = dataset._as_indices(indices)
        if self.indices.size and not (
            -len(dataset) <= self.indices.min() and self.indices.max() < len(dataset)
        ):
            raise IndexError(f"subset indices out of range for a dataset of {len(dataset)} frames")
        self.indices = self.indices % max(1, len(dataset))

    @property
    def elements(self) -> list[str]:
        """Element list of the whole dataset (a model trained on a subset uses the same)."""
        return self.dataset.elements

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: Index) -> Frame | list[Frame]:
        if isinstance(index, (int, np.integer)):
            return self.dataset[int(self.indices[index])]
        return self.dataset[self.indices[index]]

    def __iter__(self) -> Iterator[Frame]:
        for i in self.indices:
            yield self.dataset[int(i)]
