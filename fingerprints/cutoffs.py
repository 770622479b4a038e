"""Cutoff functions (TorchScript-able torch functions).

Every function takes distances ``r`` (any shape, Å) and returns a tensor of the
same shape and dtype, equal to 1 (or decaying from 1) inside and exactly 0 at and
beyond ``rc``. The argument is clamped before the polynomial or cosine is
evaluated, so values AND gradients are finite everywhere and exactly 0 beyond the
cutoff (no NaN from ``torch.where`` branches).

- :func:`rann_cutoff`: RANN/MEAM ``fc(x) = (1 - (1 - x)^4)^2`` with
  ``x = (rc - r) / dr`` clipped to [0, 1]; equal to 1 for ``r <= rc - dr``.
- :func:`meam_shape`: the same shape on an already normalised argument ``x``
  (1 above 1, 0 below 0); used by the MEAM screening function.
- :func:`cosine_cutoff`: Behler's ``0.5 (cos(pi r / rc) + 1)``.
- :func:`polynomial_cutoff`: ``1 - 10 x^3 + 15 x^4 - 6 x^5`` with ``x = r / rc``,
  continuous to the second derivative at ``rc``.
- :func:`cutoff_by_name`: dispatch on a name, for modules that store the choice
  as a string attribute.
"""

import math

import torch
from torch import Tensor

CUTOFF_NAMES = ("rann", "cos", "poly")


def meam_shape(x: Tensor) -> Tensor:
    """MEAM smooth step ``(1 - (1 - x)^4)^2`` with ``x`` clipped to [0, 1] (dimensionless)."""
    y = 1.0 - x.clamp(0.0, 1.0)
    y2 = y * y
    t = 1.0 - y2 * y2
    return t * t


def rann_cutoff(r: Tensor, rc: float, dr: float) -> Tensor:
    """RANN/MEAM cutoff of distances ``r`` (Å): ``meam_shape((rc - r) / dr)``.

    ``rc`` is the cutoff (Å) and ``dr`` the width (Å) of the region where it
    falls from 1 to 0; ``dr`` may exceed ``rc`` (then fc < 1 even at r = 0).
    """
    return meam_shape((rc - r) / dr)


def cosine_cutoff(r: Tensor, rc: float) -> Tensor:
    """Behler's cosine cutoff ``0.5 (cos(pi r / rc) + 1)`` for r < rc, else 0 (r, rc in Å)."""
    x = (r / rc).clamp(0.0, 1.0)
    return 0.5 * (torch.cos(math.pi * x) + 1.0)


def polynomial_cutoff(r: Tensor, rc: float) -> Tensor:
    """Quintic cutoff ``1 - 10x^3 + 15x^4 - 6x^5``, ``x = r / rc`` clipped to [0, 1].

    Value, first and second derivative vanish at ``r = rc`` (r, rc in Å).
    """
    x = (r / rc).clamp(0.0, 1.0)
    x3 = x * x * x
    return 1.0 + x3 * (-10.0 + x * (15.0 - 6.0 * x))


def cutoff_by_name(r: Tensor, name: str, rc: float, dr: float) -> Tensor:
    """Evaluate the cutoff called ``name`` (one of :data:`CUTOFF_NAMES`).

    ``dr`` (Å) is used only by ``"rann"``; ``"cos"`` and ``"poly"`` ignore it.
    """
    if name == "rann":
        return rann_cutoff(r, rc, dr)
    if name == "cos":
        return cosine_cutoff(r, rc)
    if name == "poly":
        return polynomial_cutoff(r, rc)
    raise ValueError("unknown cutoff function '" + name + "' (expected rann, cos or poly)")
