"""``mlip select``: frames of a trajectory worth labelling, chosen by a committee.

Each frame's largest per-atom force deviation of the committee (``max_force_deviation``, eV/Å,
:mod:`mlip.model.committee`) puts it below, inside or above the window [lo, hi]: below, the
members agree (the model knows such structures); above, the structure is usually unphysical
(MD that already failed) or so far out that a label would not help; inside are the candidates.
Of those, ``n`` are chosen by farthest-point sampling so that they differ from each other:
each frame is described by the mean raw descriptor vector of its atoms of each element
(elements side by side, zeros for an element the frame lacks), every column standardised over
the candidates; starting from the candidate with the largest deviation, the next frame is the
one farthest (Euclidean) from those chosen, or with ``weighting="deviation"`` the one with the
largest distance × max force deviation.

Trajectories: anything :func:`parsers.read` reads (LAMMPS dumps, extxyz, ...) and ASE ``.traj``
files. The chosen frames are written as extxyz without labels, ready for a reference calculation,
with ``info`` keys ``source``, ``index`` (where the frame came from), ``max_force_deviation``
and ``energy_deviation`` (eV/atom).
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fingerprints import DescriptorSet
from mlip import keys
from mlip.batching import frame_to_graph
from mlip.errors import UserError
from mlip.fileio import atomic_write_text
from mlip.inference import committee_size, load_model, predict_frames
from parsers import Frame
from parsers.errors import ParseError

WEIGHTINGS = ("descriptors", "deviation")


@dataclass
class Selection:
    """What :func:`select_frames` found: counts per part of the window, the candidates (frames
    inside it, in reading order, with their max force deviation in eV/Å) and which were chosen
    (indices into ``candidates``, in the order of choice)."""

    below: int = 0
    above: int = 0
    candidates: list[Frame] = field(default_factory=list)
    deviation: list[float] = field(default_factory=list)
    energy_deviation: list[float] = field(default_factory=list)
    chosen: list[int] = field(default_factory=list)

    @property
    def inside(self) -> int:
        return len(self.candidates)


def read_trajectory(path: str | Path, read_options: dict[str, Any]) -> Iterator[Frame]:
    """Frames of one trajectory file or folder: ASE ``.traj`` through ASE (each frame checked as
    :func:`parsers.read` checks them), anything else through :func:`parsers.read`."""
    path = Path(path)
    if path.suffix != ".traj":
        import parsers

        yield from parsers.read(path, **read_options)
        return
    import ase.io

    if not path.is_file():
        raise UserError(f"trajectory not found: {path}")
    try:
        images = ase.io.read(str(path), index=":", format="traj")
    except Exception as exc:  # ASE raises many types for bad files
        found = f"{type(exc).__name__}: {exc}"
        raise ParseError(str(path), None, "a readable ASE trajectory", found) from None
    for index, atoms in enumerate(images):
        frame = Frame.from_ase(atoms, source=str(path), index=index)
        frame.source, frame.index = str(path), index
        frame.check()
        yield frame


def frame_fingerprints(frames: Sequence[Frame], meta: dict[str, Any]) -> np.ndarray:
    """(n_frames, n_elements · n_features): per frame, the mean raw descriptor vector of its atoms
    of each element (zeros where it has none), from the model's descriptor config."""
    config = [d for d in meta.get("descriptors") or [] if d.get("type") != "potnet"]
    if not config:
        raise UserError("this model file records no descriptor config (metadata descriptors), which "
                        "the spread of the chosen frames is measured with")
    elements = list(meta["elements"])
    descriptors = DescriptorSet.from_config(config, elements).double()
    out = np.zeros((len(frames), len(elements) * descriptors.n_features))
    with torch.no_grad():
        for row, frame in enumerate(frames):
            g = frame_to_graph(frame, elements, descriptors.cutoff)
            pos = torch.as_tensor(g["positions"], dtype=torch.float64)
            src, dst = g["edge_index"]
            edge_vec = pos[dst] - pos[src] + torch.as_tensor(g["edge_shift"], dtype=torch.float64)
            species = torch.as_tensor(g["species"])
            raw = descriptors.raw(species, torch.as_tensor(g["edge_index"]), edge_vec, len(frame)).numpy()
            for s in np.unique(g["species"]):
                width = descriptors.n_features
                out[row, s * width:(s + 1) * width] = raw[g["species"] == s].mean(axis=0)
    return out


def farthest_points(points: np.ndarray, n: int, first: int, weights: np.ndarray | None = None) -> list[int]:
    """Indices of ``n`` of ``points`` (m, d) (all if fewer) chosen by farthest-point sampling from
    ``first``: each next one is the point whose distance to the chosen ones, times its weight
    (``weights`` (m,), default 1), is largest."""
    m = len(points)
    w = np.ones(m) if weights is None else np.asarray(weights, dtype=float)
    chosen = [int(first)]
    distance = np.linalg.norm(points - points[first], axis=1)
    while len(chosen) < min(n, m):
        score = distance * w
        score[chosen] = -np.inf
        nxt = int(np.argmax(score))
        chosen.append(nxt)
        distance = np.minimum(distance, np.linalg.norm(points - points[nxt], axis=1))
    return chosen


def select_frames(model: str | Path, trajectories: Sequence[str | Path], lo: float, hi: float, n: int,
                  read_options: dict[str, Any] | None = None, weighting: str = "descriptors",
                  batch_size: int = 8, device: str = "cpu") -> Selection:
    """Evaluate every frame of ``trajectories`` with the committee ``model`` and choose up to
    ``n`` of those whose max force deviation (eV/Å) lies in [``lo``, ``hi``] (module docstring).
    UserError for a single model, lo > hi, n < 1 or an unknown ``weighting``."""
    if not 0 <= lo <= hi:
        raise UserError(f"--lo {lo:g} --hi {hi:g}: expected 0 <= lo <= hi (eV/Å)")
    if n < 1:
        raise UserError(f"-n {n}: expected at least 1 frame")
    if weighting not in WEIGHTINGS:
        raise UserError(f"--weighting {weighting}: expected one of {', '.join(WEIGHTINGS)}")
    module, meta = load_model(model, device)
    if committee_size(meta) < 2:
        raise UserError(f"{model} is a single model, not a committee: mlip select needs the force deviation "
                        "of several members; train one with `mlip train DATA --committee 4`, or combine "
                        "runs with `mlip committee RUN_A RUN_B RUN_C -o model.pt`")
    found = Selection()
    for path in trajectories:
        frames = read_trajectory(path, read_options or {})
        while chunk := list(itertools.islice(frames, batch_size)):
            preds = predict_frames(module, meta, chunk, batch_size, device, stress=False, deviation=True)
            for frame, pred in zip(chunk, preds, strict=True):
                value = pred[keys.MAX_FORCE_DEVIATION]
                if value < lo:
                    found.below += 1
                elif value > hi:
                    found.above += 1
                else:
                    found.candidates.append(frame)
                    found.deviation.append(value)
                    found.energy_deviation.append(pred[keys.ENERGY_DEVIATION])
    if found.candidates:
        points = frame_fingerprints(found.candidates, meta)
        spread = points.std(axis=0)
        points = (points - points.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
        weights = np.asarray(found.deviation) if weighting == "deviation" else None
        found.chosen = farthest_points(points, n, int(np.argmax(found.deviation)), weights)
    return found


def write_selection(selection: Selection, output: str | Path) -> Path:
    """Write the chosen frames (positions, cell, pbc, elements, total charge; no labels) as extxyz
    to ``output`` atomically, with ``info`` keys ``source``, ``index``, ``max_force_deviation``
    (eV/Å) and ``energy_deviation`` (eV/atom)."""
    import ase.io
    from ase import Atoms

    images = []
    for k in selection.chosen:
        frame = selection.candidates[k]
        atoms = Atoms(numbers=frame.numbers, positions=frame.positions, cell=frame.cell, pbc=frame.pbc)
        atoms.info.update({"source": frame.source, "index": frame.index,
                           "max_force_deviation": selection.deviation[k],
                           "energy_deviation": selection.energy_deviation[k]})
        if frame.total_charge:
            atoms.info["charge"] = frame.total_charge
        images.append(atoms)
    text = io.StringIO()
    ase.io.write(text, images, format="extxyz")
    atomic_write_text(output, text.getvalue())
    return Path(output)
