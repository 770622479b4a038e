"""Build a :class:`~mlip.model.Potential` from the ``model`` section of a config,
and fit its data-dependent constants (descriptor normalisation, reference energies)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fingerprints import DescriptorSet
from fingerprints.descriptor_set import default_config
from mlip.data.build import MISSING_ENERGY_HINT
from mlip.errors import UserError
from mlip.model import Potential
from mlip.model.qeq_potential import QEqPotential
from mlip.physics.base import PhysicsTerm
from mlip.physics.core import RepulsiveCore, fallback_distance
from mlip.physics.coulomb import CoulombEngine, cutoff_for_width
from mlip.physics.ewald_mp import EwaldMP
from mlip.physics.potnet import PotNetFeatures
from mlip.physics.registry import build_terms

DTYPES = {"float64": torch.float64, "float32": torch.float32}
GLOBAL_DESCRIPTORS = {"potnet": PotNetFeatures}  # descriptor types that take the batch (mlip's own)
# model.long_range: qeq, the options left out: initial hardness J (eV/e², every element), no
# screening, the Coulomb engine's accuracy and mode (mlip.physics.coulomb); widths: covalent radii
QEQ_DEFAULTS: dict[str, Any] = {"hardness": 1.0, "screening": None, "accuracy": 1e-6, "mode": "auto"}


def torch_dtype(name: str) -> torch.dtype:
    """``"float64"``/``"float32"`` → torch dtype (UserError otherwise)."""
    if name not in DTYPES:
        raise UserError(f"model.dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


def descriptor_config(model_cfg: dict[str, Any], elements: Sequence[str]) -> list[dict[str, Any]]:
    """The resolved descriptor config list (``"default"`` expanded)."""
    desc = model_cfg["descriptors"]
    if desc == "default":
        return default_config(list(elements))
    if not isinstance(desc, list):
        raise UserError("model.descriptors must be 'default' or a list of descriptor configs")
    return desc


def charge_source(setting: Any, physics: list) -> str:
    """Resolve ``model.charges`` (none/network/fixed/auto; booleans accepted)."""
    if isinstance(setting, bool) or setting is None:
        return "network" if setting else "none"
    if setting == "auto":
        return "network" if any(t.needs_charges for t in physics) else "none"
    if setting not in ("none", "network", "fixed"):
        raise UserError(f"model.charges must be none, network, fixed or auto, got {setting!r}")
    return str(setting)


def long_range_options(setting: Any) -> tuple[str, dict[str, Any]]:
    """``model.long_range`` (checked by the config schema) as (name, options): ``("none", {})``,
    or ``ewald_mp`` / ``qeq`` with the options given."""
    if setting in (None, "none"):
        return "none", {}
    options = {"name": setting} if isinstance(setting, str) else dict(setting)
    name = options.pop("name")
    if name not in ("ewald_mp", "qeq"):
        raise UserError(f"model.long_range = {setting!r}: expected none, ewald_mp or qeq")
    return name, options


def long_range_terms(setting: Any, n_species: int, n_features: int, activation: str) -> list[EwaldMP]:
    """The learned long-range term of ``model.long_range`` (``none``, ``ewald_mp`` or a mapping
    ``{name: ewald_mp, channels, k_cutoff, n_radial, mode}``): none, or an
    :class:`~mlip.physics.ewald_mp.EwaldMP` on the descriptors' ``n_features``. ``qeq`` is a model
    of its own (:func:`qeq_potential`), not a term."""
    name, options = long_range_options(setting)
    if name != "ewald_mp":
        return []
    return [EwaldMP(n_species, n_features, activation=activation, **options)]


def qeq_widths(elements: Sequence[str], given: dict[str, float]) -> torch.Tensor:
    """(n_species,) Å: the Gaussian charge widths σ of ``model.long_range: qeq``, ``given`` per
    element (Å) or else the element's covalent radius (``ase.data.covalent_radii``, Cordero et al.
    2008), as n2p2's 4G examples choose them (Carbon_chain_4G: H 0.31 Å, C 0.73 Å)."""
    from ase.data import atomic_numbers, covalent_radii

    unknown = sorted(set(given) - set(elements))
    if unknown:
        raise UserError(f"model.long_range qeq widths: element(s) {', '.join(unknown)} not among the model's "
                        f"elements {', '.join(elements)}")
    return torch.tensor([given.get(el, float(covalent_radii[atomic_numbers[el]])) for el in elements],
                        dtype=torch.float64)


def qeq_potential(model_cfg: dict[str, Any], elements: Sequence[str], descriptors: DescriptorSet,
                  options: dict[str, Any], physics: list[PhysicsTerm]) -> QEqPotential:
    """The 4G-HDNNP of ``model.long_range: qeq`` (:class:`~mlip.model.qeq_potential.QEqPotential`):
    electronegativity and short-range networks of ``model.hidden`` and ``model.activation``,
    χ in eV/e per network unit, every element's hardness J starting at ``hardness`` (eV/e²,
    learned), fixed Gaussian widths (:func:`qeq_widths`), ``screening`` [r_in, r_out] Å or none,
    and a Coulomb engine of ``accuracy`` and ``mode`` whose real-space cutoff is the descriptors'
    or the one the widest Gaussian needs (:func:`~mlip.physics.coulomb.cutoff_for_width`), the
    larger. ``physics``: the repulsive core, if any. UserError for what a 4G model cannot
    combine with: physics terms (its electrostatics are its long range), charges of another
    source, a committee."""
    if model_cfg.get("physics"):
        raise UserError(f"model.long_range qeq: model.physics must be empty (the 4G model's own "
                        f"electrostatics are its long range), got {model_cfg['physics']}")
    if model_cfg.get("charges", "auto") not in ("auto", "none", False):
        raise UserError(f"model.long_range qeq: the charges come from its charge equilibration; "
                        f"model.charges must be auto or none, got {model_cfg['charges']!r}")
    if int(model_cfg.get("committee", 1)) > 1:
        raise UserError("model.long_range qeq: a committee of 4G models is not supported (model.committee "
                        f"{model_cfg['committee']})")
    options = {**QEQ_DEFAULTS, **options}
    widths = qeq_widths(list(elements), options.get("widths", {}))
    accuracy = float(options["accuracy"])
    cutoff = max(float(descriptors.cutoff), cutoff_for_width(float(widths.max()), accuracy))
    engine = CoulombEngine(cutoff, accuracy, options["mode"])
    screening = tuple(options["screening"] or (0.0, 0.0))
    hardness = torch.full((len(elements),), float(options["hardness"]), dtype=torch.float64)
    hidden = list(model_cfg["hidden"])
    return QEqPotential(descriptors, list(elements), hidden, hidden, widths, hardness, engine, screening,
                        model_cfg["activation"], physics=physics)


def build_potential(model_cfg: dict[str, Any], elements: Sequence[str]) -> Potential:
    """A fresh, untrained potential in the config's dtype. A descriptor entry
    ``{"type": "potnet", "alpha": 3.0}`` adds PotNet lattice-sum channels (a global descriptor of
    the descriptor set, :mod:`mlip.physics.potnet`; the model becomes long-range). ``model.repulsion:
    auto`` adds the repulsive core (:mod:`mlip.physics.core`; its r_min, ``min_pair_distance``,
    starts at the fallback distances, the trainer sets the data's), ``none`` leaves it out.
    ``model.long_range: ewald_mp`` adds Ewald message passing (:func:`long_range_terms`; the model
    becomes long-range); ``model.long_range: qeq`` builds a 4G-HDNNP instead (:func:`qeq_potential`).
    ``model.committee`` K >= 2 builds K members' networks on the shared descriptors, each
    initialised in turn from torch's random state (:mod:`mlip.model.committee`)."""
    config = descriptor_config(model_cfg, elements)
    if sum(c.get("type") in GLOBAL_DESCRIPTORS for c in config) > 1:
        raise UserError("model.descriptors: give 'potnet' at most once")
    # the global descriptor's features after the local ones' (the networks' input layout of every
    # PotNet model, also of the runs saved when PotNet was a separate path of the model)
    ordered = [c for c in config if c.get("type") not in GLOBAL_DESCRIPTORS] \
        + [c for c in config if c.get("type") in GLOBAL_DESCRIPTORS]
    descriptors = DescriptorSet.from_config(ordered, list(elements), types=GLOBAL_DESCRIPTORS)
    physics = build_terms(model_cfg.get("physics") or [], list(elements), float(descriptors.cutoff))
    physics += long_range_terms(model_cfg.get("long_range", "none"), len(elements),
                                int(descriptors.n_features), model_cfg["activation"])
    core = model_cfg.get("repulsion", "auto") == "auto"
    if core:
        physics.append(RepulsiveCore(list(elements)))
    name, options = long_range_options(model_cfg.get("long_range", "none"))
    if name == "qeq":
        model: Potential = qeq_potential(model_cfg, elements, descriptors, options, physics)
    else:
        charges = charge_source(model_cfg.get("charges", "auto"), physics)
        committee = int(model_cfg.get("committee", 1))
        if committee > 1 and charges != "none":
            raise UserError(f"model.committee = {committee}: committee members cannot have charges "
                            f"(model.charges is {charges} here); train a committee without charge-dependent "
                            "physics terms")
        model = Potential(descriptors, list(elements), hidden=list(model_cfg["hidden"]),
                          activation=model_cfg["activation"], physics=physics, charges=charges,
                          committee=committee)
    if core:
        n = len(elements)
        model.set_min_pair_distance(fallback_distance(list(elements)), torch.zeros(n, n, dtype=torch.bool))
    return model.to(torch_dtype(model_cfg["dtype"]))


def fit_energy_reference(species: Sequence[np.ndarray], energies: np.ndarray, n_species: int,
                         forces: Sequence[np.ndarray],
                         fixed: dict[int, float] | None = None) -> tuple[np.ndarray, float]:
    """Per-element reference energies by least squares, E ≈ Σ_s n_s·e_s, and an energy scale.

    species: per-frame (n,) element indices; energies: (F,) eV (NaN = absent);
    forces: per-frame (n,3) eV/Å (NaN = absent); ``fixed``: reference energies (eV) of some
    elements, by index, kept as given (the others are fitted to what they leave). The scale (eV)
    is the RMS force when forces are present, else the RMS per-atom residual energy, so network
    outputs are O(1).
    """
    counts = np.stack([np.bincount(s, minlength=n_species) for s in species]).astype(float)
    ok = np.isfinite(energies)
    if not ok.any():
        raise UserError(f"no training frame has an energy: training needs energies; {MISSING_ENERGY_HINT}")
    fixed = fixed or {}
    shift = np.zeros(n_species)
    shift[list(fixed)] = list(fixed.values())
    free = [s for s in range(n_species) if s not in fixed]
    if free:
        shift[free], *_ = np.linalg.lstsq(counts[ok][:, free], energies[ok] - counts[ok] @ shift, rcond=None)
    resid = (energies[ok] - counts[ok] @ shift) / counts[ok].sum(axis=1)
    f = np.concatenate([np.asarray(x).reshape(-1) for x in forces]) if len(forces) else np.array([])
    f = f[np.isfinite(f)]
    scale = float(np.sqrt(np.mean(f**2))) if f.size else float(np.sqrt(np.mean(resid**2)))
    return shift, max(scale, 1e-3)
