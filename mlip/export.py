"""Export a trained :class:`~mlip.model.Potential` to one TorchScript file, ``model.pt``.

The file follows the deployed-model contract (``docs/architecture.md``) and carries its
metadata as ``_extra_files["metadata.json"]``, so it loads with plain ``torch.jit.load``
where mlip is not installed (ASE calculator, LAMMPS plugin).

Fixed physics terms that LAMMPS has itself (D3 as ``pair_style dispersion/d3``, ZBL as
``pair_style zbl``) can be handed to LAMMPS: metadata ``lammps_overlay`` names them, the model's
LAMMPS path (``forward``) leaves them out (their ``lammps_overlay`` flag), and ``model.pt.lammps``
next to the model holds the ``pair_style hybrid/overlay mlip model.pt ...`` and ``pair_coeff``
lines that add them back. ``compute`` (ASE, ``mlip evaluate``) keeps every term.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import torch

from mlip import __version__
from mlip.errors import UserError
from mlip.fileio import atomic_write, atomic_write_text
from mlip.model import Potential
from mlip.model.qeq_potential import QEqPotential, qeq_metadata
from mlip.physics import d3, zbl
from mlip.physics.extrapolation import EXTRAPOLATION_MARGIN

METADATA_FILE = "metadata.json"
LAMMPS_SUFFIX = ".lammps"  # model.pt -> model.pt.lammps

# term name -> (term, elements) -> (hybrid sub-style with arguments, pair_coeff lines), or None
LAMMPS_STYLES: dict[str, Callable[[Any, list[str]], tuple[str, list[str]] | None]] = {
    "d3": d3.lammps_pair_style,
    "zbl": zbl.lammps_pair_style,
}


def lammps_overlay_terms(model: Potential | torch.jit.ScriptModule) -> list[str]:
    """Names of the physics terms of ``model`` that LAMMPS can compute itself, in model order."""
    elements = list(model.elements)
    names = [t.name for t in model.physics
             if t.name in LAMMPS_STYLES and LAMMPS_STYLES[t.name](t, elements) is not None]
    return [n for n in names if names.count(n) == 1]  # hybrid/overlay: each sub-style once


def lammps_coulomb(model: Potential | torch.jit.ScriptModule,
                   overlay: Sequence[str] = ()) -> dict[str, Any] | None:
    """The LAMMPS Coulomb path of a model (metadata ``lammps_coulomb``), or None.

    A charge model whose only long-range term (besides ``overlay``) is ``ewald`` runs
    domain-decomposed in LAMMPS: ``pair_style mlip`` predicts each atom's charge from its local
    environment, LAMMPS' ``coul/long`` + ``kspace_style pppm`` compute the electrostatics of those
    charges, and the potential φ_i = ∂E/∂q_i comes back to the model for the forces through the
    charges (docs/architecture.md, "The LAMMPS Coulomb path"). Returns the real-space
    ``cutoff`` (Å), ``accuracy`` (LAMMPS' relative kspace accuracy, the ewald term's) and
    ``typical_charges`` (e per element, :meth:`~mlip.model.Potential.typical_charges`: where
    ``pair_coeff`` starts an uncharged system, so that kspace can choose its parameters)."""
    if model.descriptors.long_range or not model.has_charges:
        return None
    terms = [t for t in model.physics if t.long_range and t.name not in overlay]
    if len(terms) != 1 or terms[0].name != "ewald":
        return None
    return {"cutoff": float(terms[0].cutoff), "accuracy": float(terms[0].engine.accuracy),
            "typical_charges": [round(float(q), 6) for q in model.typical_charges().detach()]}


def lammps_commands(model: Potential | torch.jit.ScriptModule, overlay: Sequence[str],
                    model_file: str, coulomb: dict[str, Any] | None = None) -> list[str]:
    """The LAMMPS ``pair_style hybrid/overlay``, ``pair_coeff`` (and, with ``coulomb``, see
    :func:`lammps_coulomb`, ``pair_modify`` and ``kspace_style``) lines that evaluate ``model``
    (file name ``model_file``) with the terms ``overlay`` computed by LAMMPS; atom types 1..n are
    the model's elements in order."""
    elements = list(model.elements)
    styles = [f"mlip {model_file}"]
    coeffs = [f"pair_coeff * * mlip {' '.join(elements)}"]
    if coulomb is not None:
        styles.append(f"coul/long {coulomb['cutoff']:g}")
        coeffs.append("pair_coeff * * coul/long")
    for term in model.physics:
        if term.name in overlay:
            style = LAMMPS_STYLES[term.name](term, elements)
            assert style is not None
            styles.append(style[0])
            coeffs.extend(style[1])
    lines = [f"pair_style hybrid/overlay {' '.join(styles)}", *coeffs]
    if coulomb is not None:  # coul/long's erfc without tables; the model's accuracy for the k-space part
        lines += ["pair_modify pair coul/long table 0", f"kspace_style pppm {coulomb['accuracy']:g}"]
    return lines


def model_metadata(model: Potential, descriptors: Any = None, data_hash: str | None = None,
                   lammps_overlay: Sequence[str] = ()) -> dict[str, Any]:
    """The metadata dict stored in ``model.pt``.

    ``lammps_overlay``: names of physics terms LAMMPS adds itself (a subset of
    :func:`lammps_overlay_terms`); ``long_range`` then describes the LAMMPS path (what
    ``pair_style mlip`` evaluates), which leaves them out, and ``cutoff`` stays the model's
    neighbour-list cutoff (descriptors and short-range terms; D3 has its own pair search).
    ``lammps_commands`` is filled in by :func:`export_model`. ``physics`` names the configured
    terms, not the repulsive core (``repulsion``). ``min_pair_distance``: Å, the
    shortest distance of each element pair (``"Cu-O"``, lighter element first) in the training
    data, or for the pairs in ``min_pair_distance_fallback`` (absent from the data) the fallback
    of :mod:`mlip.physics.core`; empty when unknown. ``repulsion``: ``auto`` when the model has
    the repulsive core below those distances. ``feature_range``: the model knows its training
    descriptors' range and returns ``extrapolation``; ``extrapolation_margin`` (in widths of that
    range) is where the ASE calculator and ``pair_style mlip`` start to warn. ``committee``: the
    number of members K (1: a single model, without deviation outputs; :mod:`mlip.model.committee`).
    A 4G model (:class:`~mlip.model.qeq_potential.QEqPotential`) is long-range and adds ``qeq``
    (:func:`~mlip.model.qeq_potential.qeq_metadata`).
    """
    overlay = list(lammps_overlay)
    bad = sorted(set(overlay) - set(lammps_overlay_terms(model)))
    if bad:
        raise UserError(f"lammps_overlay: LAMMPS cannot compute the physics term(s) {', '.join(bad)} of this "
                        f"model; it can: {', '.join(lammps_overlay_terms(model)) or 'none'}")
    dtype = next(model.parameters()).dtype
    long_range = model.descriptors.long_range or any(
        t.long_range and t.name not in overlay for t in model.physics)
    elements = list(model.elements)
    known = model.min_pair_distance > 0
    pairs = [(i, j) for i in range(len(elements)) for j in range(i, len(elements)) if bool(known[i, j])]
    meta = {
        "elements": elements,
        "cutoff": float(model.cutoff),
        "dtype": str(dtype).replace("torch.", ""),
        "mlip_version": __version__,
        "physics": [t.name for t in model.physics if t.name != "core"],  # the core: "repulsion"
        "long_range": bool(long_range),
        "charges": bool(model.has_charges),
        "descriptors": descriptors,
        "data_hash": data_hash,
        "units": "metal",
        "lammps_overlay": overlay,
        "lammps_coulomb": lammps_coulomb(model, overlay),
        "lammps_commands": [],
        "min_pair_distance": {f"{elements[i]}-{elements[j]}": float(model.min_pair_distance[i, j])
                              for i, j in pairs},
        "min_pair_distance_fallback": [f"{elements[i]}-{elements[j]}" for i, j in pairs
                                       if not bool(model.min_pair_seen[i, j])],
        "repulsion": "auto" if model.clamp_close_pairs else "none",
        "feature_range": bool(torch.isfinite(model.feature_min).any()),
        "extrapolation_margin": EXTRAPOLATION_MARGIN,
        "committee": int(model.committee),
    }
    if isinstance(model, QEqPotential):
        meta.update(qeq_metadata(model))
    return meta


def lammps_file(path: str | Path) -> Path:
    """Where :func:`export_model` writes the LAMMPS lines of the model file ``path``."""
    path = Path(path)
    return path.with_name(path.name + LAMMPS_SUFFIX)


def export_model(model: Potential | torch.jit.ScriptModule, path: str | Path,
                 metadata: dict[str, Any]) -> Path:
    """Script (unless ``model`` is scripted already), freeze where possible and write ``model`` to
    ``path`` atomically (:func:`mlip.fileio.atomic_write`).

    Training scripts its model when it starts and passes that module here with the best weights
    loaded, so the exported code is the code that was trained even if the sources change meanwhile.

    With terms in ``metadata["lammps_overlay"]`` (see :func:`model_metadata`), those terms are
    flagged ``lammps_overlay`` in the written model (not in ``model``), its ``long_range`` is the
    metadata's (the LAMMPS path's: ``forward`` takes the short-range path when every long-range
    term is LAMMPS'), ``lammps_commands`` gets the LAMMPS lines and :func:`lammps_file`
    (``model.pt.lammps``) is written with them; otherwise a stale ``model.pt.lammps`` is removed.
    """
    path = Path(path)
    overlay = list(metadata.get("lammps_overlay") or [])
    coulomb = metadata.get("lammps_coulomb")
    commands = lammps_commands(model, overlay, path.name, coulomb) if overlay or coulomb else []
    metadata = {**metadata, "lammps_overlay": overlay, "lammps_commands": commands}
    model = model.eval()
    flagged = [t for t in model.physics if t.name in overlay]
    long_range = bool(model.long_range)
    for term in flagged:
        term.lammps_overlay = True
    if overlay:  # forward (LAMMPS) needs whole frames only for the long-range terms left in the model
        model.long_range = bool(metadata.get("long_range", long_range))
    try:
        scripted = model if isinstance(model, torch.jit.ScriptModule) else torch.jit.script(model)
        try:
            kept = ["compute", "lammps_charges", "lammps_coulomb_forces", "typical_charges"]
            scripted = torch.jit.freeze(scripted, preserved_attrs=kept)
        except RuntimeError:  # freezing is an optimisation; an unfrozen module is still valid
            pass
        with atomic_write(path) as out:
            torch.jit.save(scripted, out, _extra_files={METADATA_FILE: json.dumps(metadata)})
    finally:
        for term in flagged:
            term.lammps_overlay = False
        model.long_range = long_range
    side = lammps_file(path)
    if commands:
        by_lammps = ([f"the fixed terms {', '.join(overlay)}"] if overlay else []) \
            + (["the electrostatics of its charges (coul/long, kspace)"] if coulomb else [])
        header = [f"# LAMMPS lines for {path.name} (written by mlip export): the network through",
                  f"# pair_style mlip, {' and '.join(by_lammps)} by LAMMPS itself. Atom types",
                  f"# 1..n are {' '.join(metadata['elements'])}; the model file name is relative to LAMMPS'",
                  "# working directory."]
        if coulomb:
            header.append("# Needs atom_style charge (or full): pair_style mlip sets the charges each step.")
        atomic_write_text(side, "\n".join(header + commands) + "\n")
    else:
        side.unlink(missing_ok=True)
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Metadata of a ``model.pt`` file (loads the file)."""
    extra = {METADATA_FILE: ""}
    torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra[METADATA_FILE])
