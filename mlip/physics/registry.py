"""Physics terms by name, for configs and the CLI (``--physics zbl,ewald,d3``)."""

from __future__ import annotations

import importlib
from typing import Any

from mlip.errors import UserError
from mlip.physics.base import PhysicsTerm

# name -> (module, class); each class is constructed as cls(elements, **options)
TERMS: dict[str, tuple[str, str]] = {
    "zbl": ("mlip.physics.zbl", "ZBL"),
    "ewald": ("mlip.physics.ewald", "Ewald"),
    "d3": ("mlip.physics.d3", "D3"),
}


def build_term(spec: str | dict[str, Any], elements: list[str]) -> PhysicsTerm:
    """One term from ``"zbl"`` or ``{"name": "zbl", ...options}``."""
    options = dict(spec) if isinstance(spec, dict) else {"name": spec}
    name = str(options.pop("name", "")).lower()
    if name not in TERMS:
        raise UserError(f"unknown physics term {name!r}; choose from {', '.join(TERMS)}")
    module, cls = TERMS[name]
    try:
        return getattr(importlib.import_module(module), cls)(elements, **options)
    except TypeError as exc:
        raise UserError(f"physics term {name!r}: {exc}") from exc


def build_terms(specs: list[str | dict[str, Any]], elements: list[str]) -> list[PhysicsTerm]:
    """All terms of a config's ``model.physics`` list."""
    return [build_term(s, elements) for s in specs]
