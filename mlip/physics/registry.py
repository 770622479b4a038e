"""Physics terms by name, for configs and the CLI (``--physics zbl,ewald,d3``)."""

from __future__ import annotations

import importlib
from typing import Any

from mlip.errors import UserError
from mlip.physics.base import PhysicsTerm

DEFAULT_EWALD_CUTOFF = 5.0  # Å, Ewald's real-space range when no neighbour cutoff is given

# name -> (module, class, takes the element list, default options)
TERMS: dict[str, tuple[str, str, bool, dict[str, Any]]] = {
    "zbl": ("mlip.physics.zbl", "ZBL", True, {"inner": 1.0, "outer": 2.0}),
    "ewald": ("mlip.physics.ewald", "Ewald", False, {"accuracy": 1e-4, "mode": "auto", "cutoff": None}),
    "d3": ("mlip.physics.d3", "D3Dispersion", True, {"functional": "pbe", "cutoff": 20.0, "cn_cutoff": 12.0}),
    "d4": ("mlip.physics.d4", "D4Dispersion", True, {"functional": "pbe", "cutoff": 20.0, "atm_cutoff": 8.0,
                                                     "cn_cutoff": 10.0, "eeq_cn_cutoff": 10.0}),
}


def build_term(spec: str | dict[str, Any], elements: list[str],
               neighbour_cutoff: float | None = None) -> PhysicsTerm:
    """One term from ``"zbl"`` or ``{"name": "zbl", ...options}``. Defaults: ZBL switched off
    between 1 and 2 Å; Ewald (PME, or the explicit k sum where cheaper) to a 1e-4 relative force
    accuracy with its real-space sum over the model's edges up to ``neighbour_cutoff`` (Å, the
    descriptors'; 5 Å without one): the edges are there anyway, and the mesh an accuracy needs
    shrinks fast as that cutoff grows (about half the points from 5 to 5.7 Å, see
    :mod:`mlip.physics.coulomb`); D3(BJ) with PBE parameters and
    20 Å / 12 Å dispersion / coordination cutoffs (the reference program's 50 / 21 Å cost far
    more for a fraction of a percent of the energy); D4 with PBE parameters (ATM included),
    20 Å two-body, 8 Å ATM and 10 Å CN cutoffs (the reference program's 31.8 / 21.2 / 15.9 Å:
    the ATM term's cost grows as its cutoff⁶; its sum converges only as cutoff⁻³, so at 8 Å it
    misses ~15–20 % of the ATM energy of SiC or MgO, 1–2 % of their D4 energy)."""
    options = dict(spec) if isinstance(spec, dict) else {"name": spec}
    name = str(options.pop("name", "")).lower()
    if name not in TERMS:
        raise UserError(f"unknown physics term {name!r}; choose from {', '.join(TERMS)}")
    module, cls, takes_elements, defaults = TERMS[name]
    options = {**defaults, **options}
    if "cutoff" in options and options["cutoff"] is None:
        options["cutoff"] = neighbour_cutoff if neighbour_cutoff is not None else DEFAULT_EWALD_CUTOFF
    args = (elements,) if takes_elements else ()
    try:
        return getattr(importlib.import_module(module), cls)(*args, **options)
    except TypeError as exc:
        raise UserError(f"physics term {name!r}: {exc}") from exc


def build_terms(specs: list[str | dict[str, Any]], elements: list[str],
                neighbour_cutoff: float | None = None) -> list[PhysicsTerm]:
    """All terms of a config's ``model.physics`` list (``neighbour_cutoff``: see :func:`build_term`)."""
    return [build_term(s, elements, neighbour_cutoff) for s in specs]
