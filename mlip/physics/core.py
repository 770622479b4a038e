"""The repulsive core every trained model gets by default (``model.repulsion: auto``).

Below the shortest distance r_min(s_i, s_j) of each element pair in the training data the
network extrapolates: its energy there may fall or rise by eV per atom. Two things make the
model repulsive there instead, and leave it unchanged at and above r_min:

1. :class:`RepulsiveCore`: ZBL with the ``pair_style zbl`` switching of :class:`~mlip.physics.zbl.ZBL`,
   per element pair, switched on between ``inner_fraction``·r_min and r_min (exactly 0 at and
   above r_min). For every pair of atomic numbers 1–92 and r_min 0.6–4 Å it falls strictly
   monotonically with r below r_min (``tests/test_short_range.py``).
2. The descriptors see a close pair at r_min: :class:`~mlip.model.Potential` scales an edge
   vector shorter than r_min to length r_min before the descriptors (its ``min_pair_distance``,
   when it has a ``core`` term: ``clamp_close_pairs``), so the network's energy does not depend
   on how far below r_min a pair is. A dimer's energy below r_min is then network(r_min) +
   core(r): strictly rising as r falls, whatever the weights; so is a trimer's under uniform
   compression below its pairs' r_min (its angles stay). Fading the network out smoothly instead
   cannot guarantee that: its slope at r_min may have either sign, and a C¹ fade keeps that slope
   just below r_min. The price is a jump of the network's pair force at r_min (to 0 below; the
   core's force is 0 at r_min), where the model leaves its data. Configurations that compress a
   pair below r_min while changing angles (an atom driven into a bond) are not covered by this
   guarantee; there the network varies with the angles only, the core with the distance.

r_min comes from the training frames (:meth:`mlip.train.trainer.Trainer._fit_constants`);
element pairs that never come within the model cutoff get :func:`fallback_distance`.
"""

from typing import Sequence

import torch
from ase.data import covalent_radii
from torch import Tensor

from mlip.physics.zbl import ZBL, element_numbers

FALLBACK_SCALE = 0.75  # × (sum of covalent radii): r_min of element pairs absent from the data


def fallback_distance(elements: Sequence[str]) -> Tensor:
    """(n, n) Å: FALLBACK_SCALE × the sum of the covalent radii (ASE, Cordero et al. 2008) of
    each element pair, the r_min of pairs the training data never has."""
    radii = torch.tensor([covalent_radii[z] for z in element_numbers(elements)], dtype=torch.float64)
    return FALLBACK_SCALE * (radii.unsqueeze(1) + radii.unsqueeze(0))


class RepulsiveCore(ZBL):
    """ZBL switched on per element pair between ``inner_fraction``·r_min and r_min, eV per atom.

    Args:
        elements: chemical symbols of the model, sorted by atomic number.
        inner_fraction: where the switching starts, as a fraction of r_min (0 < f < 1).

    r_min starts at :func:`fallback_distance`; :meth:`set_min_distance` sets the data's.
    """

    def __init__(self, elements: Sequence[str], inner_fraction: float = 0.6) -> None:
        r_min = fallback_distance(elements)
        super().__init__(elements, inner_fraction * float(r_min.min()), float(r_min.max()))
        self.name = "core"
        self.inner_fraction = float(inner_fraction)
        self.set_min_distance(r_min)

    @torch.jit.unused
    def set_min_distance(self, r_min: Tensor) -> None:
        """Switch each element pair off at its r_min (n, n) Å (symmetric, > 0)."""
        r_min = r_min.to(torch.float64)
        self.set_switching(self.inner_fraction * r_min, r_min)
        self.inner = self.inner_fraction * float(r_min.min())
        self.cutoff = float(r_min.max())
