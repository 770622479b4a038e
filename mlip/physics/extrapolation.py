"""Warnings when a model leaves its training data (issue 23), for the ASE calculator.

Two cheap checks, from what the model file records (:func:`mlip.export.model_metadata`):

- a close pair: two atoms nearer than ``min_pair_distance`` of their element pair (the training
  data's shortest distance, or the fallback of :mod:`mlip.physics.core`); there the model's
  energy is the repulsive core's, not fitted;
- an atom whose descriptors lie outside its element's training range by more than
  :data:`EXTRAPOLATION_MARGIN` of the range's width (``extrapolation`` output of the model,
  ``feature_range`` true in the metadata).

Each atom pair and each atom is reported once, at most :data:`MAX_WARNINGS` warnings of each
kind per calculator, the last one saying that further ones are suppressed. ASE reports through
Python's :mod:`warnings` (category :class:`ExtrapolationWarning`); ``pair_style mlip`` does the
same checks in LAMMPS (``error->warning`` on rank 0, the ranks' findings gathered there).
Model files without these metadata (older mlip) are not checked.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

EXTRAPOLATION_MARGIN = 0.25  # × the training range's width of a feature, beyond which an atom is reported
MAX_WARNINGS = 10  # of each kind, per calculator (per pair_style in LAMMPS)


class ExtrapolationWarning(UserWarning):
    """A structure leaves the model's training data (close pair, descriptors out of range)."""


def pair_table(metadata: dict[str, Any]) -> np.ndarray | None:
    """(n, n) Å ``min_pair_distance`` of the model's element pairs from its metadata (0 where
    unknown), or None when the metadata has none."""
    recorded = metadata.get("min_pair_distance") or {}
    if not recorded:
        return None
    elements = list(metadata["elements"])
    table = np.zeros((len(elements), len(elements)))
    for name, r in recorded.items():
        a, b = (elements.index(s) for s in name.split("-"))
        table[a, b] = table[b, a] = float(r)
    return table


class ExtrapolationMonitor:
    """The checks of one calculator: which pairs and atoms were reported, how many warnings left."""

    def __init__(self, metadata: dict[str, Any]) -> None:
        self.elements = list(metadata["elements"])
        self.r_min = pair_table(metadata)
        self.margin = float(metadata.get("extrapolation_margin", EXTRAPOLATION_MARGIN)) \
            if metadata.get("feature_range") else None
        self.pairs: set[tuple[int, int]] = set()
        self.atoms: set[int] = set()
        self.left = {"pair": MAX_WARNINGS, "atom": MAX_WARNINGS}

    def check_pairs(self, species: np.ndarray, edge_index: np.ndarray, distance: np.ndarray) -> None:
        """Warn about pairs (i < j, atom indices) nearer than their r_min; ``species`` (n,),
        ``edge_index`` (2, E), ``distance`` (E,) Å."""
        if self.r_min is None or not self.left["pair"]:
            return
        i, j = edge_index
        limit = self.r_min[species[i], species[j]]
        close = np.flatnonzero((distance < limit) & (i < j))
        new = [e for e in close if (int(i[e]), int(j[e])) not in self.pairs]
        if not new:
            return
        self.pairs.update((int(i[e]), int(j[e])) for e in new)
        e = min(new, key=lambda k: distance[k] / limit[k])
        pair = f"{self.elements[species[i[e]]]}-{self.elements[species[j[e]]]}"
        self._warn("pair", f"{len(new)} atom pair(s) closer than the training data's shortest distance; "
                           f"closest: atoms {i[e]} and {j[e]} ({pair}) at {distance[e]:.3f} Å, "
                           f"shortest in training {limit[e]:.3f} Å: the energy there is the repulsive "
                           f"core's, not fitted")

    def check_features(self, extrapolation: np.ndarray) -> None:
        """Warn about atoms whose descriptors lie beyond the training range by more than the
        margin; ``extrapolation`` (n,) in units of the range's width."""
        if self.margin is None or not self.left["atom"]:
            return
        new = [int(a) for a in np.flatnonzero(extrapolation > self.margin) if int(a) not in self.atoms]
        if not new:
            return
        self.atoms.update(new)
        worst = max(new, key=lambda a: extrapolation[a])
        self._warn("atom", f"{len(new)} atom(s) with descriptors outside the training range by more than "
                           f"{self.margin:g} of its width; worst: atom {worst}, "
                           f"{extrapolation[worst]:.2f} widths outside")

    def _warn(self, kind: str, message: str) -> None:
        self.left[kind] -= 1
        if not self.left[kind]:
            message += f" (the last such warning: {MAX_WARNINGS} given)"
        warnings.warn(message, ExtrapolationWarning, stacklevel=4)
