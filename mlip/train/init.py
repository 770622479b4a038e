"""``mlip train NEW_DATA... --init RUN``: a new run that starts from an existing run's model.

For the next round of active learning and for fine-tuning. The new run takes the old run's
model settings (descriptors, networks, physics terms, repulsion, dtype, committee size unless
given) and starts from its exported weights (EMA weights of its ``train.export`` checkpoint), its
descriptor normalisation and its reference energies and energy scale; it then trains on the new
data with the new run's training settings. Its ``config.yaml`` records ``train.init`` (the old
run) and its ``model.pt`` the metadata ``init``.

Elements: the old run's, plus any the new data brings. A new element gets fresh networks, its
reference energy fitted to the new data with the old elements' fixed, and its channels in the
element-resolved descriptors: the old networks get zero weights on those, so that they start
from exactly the old energies in environments of the old elements. Which new descriptor
feature is which old one is found by evaluating both descriptor sets on a few random clusters of
the old elements (:func:`feature_columns`). A committee starts member k from the old member
k mod K_old (one model: every member from it, diverging through their bootstrap resamples).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlip.errors import UserError
from mlip.model import Potential
from mlip.model.members import member_networks, refit_member
from mlip.model.qeq_potential import QEqPotential
from mlip.train.config import DEFAULTS, load_run_config
from mlip.train.export_run import load_run, run_data_hash

# model settings a new run may choose itself; every other one comes from the old run
FREE_MODEL_KEYS = ("elements", "committee")


@dataclass
class InitSource:
    """The run a new run starts from: its path, model (exported weights), config and checkpoint."""

    run: Path
    model: Potential
    config: dict[str, Any]
    checkpoint: Path

    @classmethod
    def load(cls, run: str | Path) -> InitSource:
        model, config, checkpoint = load_run(run)
        return cls(Path(run).resolve(), model, config, checkpoint)

    @property
    def elements(self) -> list[str]:
        return list(self.model.elements)

    def record(self) -> dict[str, Any]:
        """What the new run's ``model.pt`` metadata ``init`` says it started from."""
        return {"run": str(self.run), "checkpoint": self.checkpoint.name, "elements": self.elements,
                "committee": self.model.committee, "data_hash": run_data_hash(self.run)}


def init_config(config: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``config`` with the model settings of the run ``config["train"]["init"]``: UserError when
    one of them was set (``overrides``, dotted keys, or a value other than the default) to
    something else; ``model.committee`` given in ``overrides`` is kept, ``model.elements`` may
    add elements."""
    run = Path(config["train"]["init"])
    if not (run / "config.yaml").is_file():
        raise UserError(f"--init {run}: not a run directory (no config.yaml)")
    old = load_run_config(run / "config.yaml")["model"]
    out = copy.deepcopy(config)
    out["train"]["init"] = str(run.resolve())
    for key, value in old.items():
        given = config["model"].get(key)
        if key == "committee" and "model.committee" in overrides:
            continue
        if key == "elements":
            extra = [e for e in given or [] if e not in value]
            out["model"]["elements"] = list(value) + extra
            continue
        chosen = f"model.{key}" in overrides or given != DEFAULTS["model"].get(key)
        if chosen and given != value:
            raise UserError(f"--init {run}: model.{key} comes from that run ({value!r}) and cannot be "
                            f"changed (given: {given!r}); start a fresh run instead")
        out["model"][key] = copy.deepcopy(value)
    return out


def _probe_clusters(n_species: int, cutoff: float, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """A few random clusters (positions (n, 3) Å, species (n,)) of ``n_species`` elements, atoms
    at least 1.8 Å apart within a sphere of radius ``cutoff``: varied environments to tell
    descriptor features apart."""
    rng = np.random.default_rng(seed)
    clusters = []
    for _ in range(4):
        pos: list[np.ndarray] = []
        while len(pos) < 30:
            p = rng.uniform(-cutoff, cutoff, 3)
            if np.linalg.norm(p) < cutoff and all(np.linalg.norm(p - q) > 1.8 for q in pos):
                pos.append(p)
        clusters.append((np.array(pos), rng.integers(0, n_species, len(pos))))
    return clusters


def _raw_features(descriptors: Any, positions: np.ndarray, species: np.ndarray) -> np.ndarray:
    """Raw features (n, F) of every atom of a cluster (all pairs within the descriptors' cutoff)."""
    n = len(positions)
    i, j = np.nonzero(~np.eye(n, dtype=bool))
    vec = positions[j] - positions[i]
    keep = np.linalg.norm(vec, axis=1) < descriptors.cutoff
    edge_index = torch.as_tensor(np.stack([i[keep], j[keep]]))
    with torch.no_grad():
        raw = descriptors.double().raw(torch.as_tensor(species), edge_index,
                                       torch.as_tensor(vec[keep], dtype=torch.float64), n)
    return raw.numpy()


def feature_columns(old: Potential, new: Potential, species_map: Sequence[int]) -> torch.Tensor:
    """(F_old,) int64: for each raw descriptor feature of ``old``, the feature of ``new`` (same
    descriptor config, more elements; ``species_map[a]``: ``new``'s index of ``old``'s element a)
    that equals it in every environment of ``old``'s elements, found on random clusters.
    UserError when a feature has no such counterpart."""
    n_old = int(old.descriptors.n_features)
    if list(old.elements) == list(new.elements):
        return torch.arange(n_old)
    old_desc, new_desc = copy.deepcopy(old.descriptors), copy.deepcopy(new.descriptors)
    a_rows, b_rows = [], []
    for pos, sp in _probe_clusters(len(old.elements), float(old_desc.cutoff)):
        a_rows.append(_raw_features(old_desc, pos, sp))
        b_rows.append(_raw_features(new_desc, pos, np.asarray(species_map)[sp]))
    a, b = np.concatenate(a_rows), np.concatenate(b_rows)
    scale = np.abs(a).max(axis=0, keepdims=True) + 1e-300
    close = np.all(np.abs(a[:, :, None] - b[:, None, :]) <= 1e-9 * scale.T[None], axis=0)  # (F_old, F_new)
    columns, used = [], set()
    for f in range(n_old):
        candidates = [c for c in np.flatnonzero(close[f]) if c not in used]
        if not candidates:
            raise UserError(f"--init: descriptor feature {f} of the old run has no counterpart among the "
                            f"features for elements {', '.join(new.elements)}; train a fresh run for the new "
                            "elements")
        used.add(candidates[0])
        columns.append(candidates[0])
    return torch.as_tensor(columns, dtype=torch.int64)


def fixed_references(source: InitSource, elements: Sequence[str]) -> dict[int, float]:
    """The old run's reference energies (eV) by index in ``elements``: the new run keeps them."""
    return {elements.index(e): float(source.model.energy_shift[a]) for a, e in enumerate(source.elements)}


@dataclass
class Started:
    """What :func:`start_from` did: the notes for the run's description, and for each old raw
    descriptor feature its index in the new model (:func:`feature_columns`)."""

    notes: list[str]
    columns: torch.Tensor


@torch.no_grad()
def start_from(model: Potential, source: InitSource) -> Started:
    """Give ``model`` (built for the new run, its descriptor normalisation and shortest pair
    distances fitted to the new data) the old run's networks, normalisation, reference energies
    of the old elements and energy scale; the shortest pair distances become the shorter of
    both runs'. The new run must fit its remaining reference energies with the old ones fixed
    (:func:`fixed_references`) and keep the old scale."""
    old = source.model
    if isinstance(old, QEqPotential) or isinstance(model, QEqPotential):
        raise UserError(f"--init {source.run}: a 4G model (model.long_range qeq) cannot start from or seed "
                        "another run (its electronegativity and short-range networks do not carry over); "
                        "train a fresh run")
    elements = list(model.elements)
    species_map = [elements.index(e) for e in source.elements]
    new_elements = [e for e in elements if e not in source.elements]
    if new_elements and model.descriptors.long_range:
        raise UserError(f"--init {source.run}: new element(s) {', '.join(new_elements)} with PotNet lattice "
                        "features: their layout changes with the elements; train a fresh run")
    learned = [t for t in old.physics if t.name == "ewald_mp"]
    if learned and new_elements:
        raise UserError(f"--init {source.run}: new element(s) {', '.join(new_elements)} with a learned "
                        "long-range term (model.long_range ewald_mp): its per-element embeddings cannot be "
                        "extended; train a fresh run")
    for term in learned:  # the same elements and descriptors: the term carries over as it is
        [new_term] = [t for t in model.physics if t.name == term.name]
        new_term.load_state_dict(term.state_dict())
    columns = feature_columns(old, model, species_map)
    desc = model.descriptors
    index = torch.as_tensor(species_map)
    for a, t in enumerate(species_map):
        desc.mean[t, columns] = old.descriptors.mean[a].to(desc.mean.dtype)
        desc.std[t, columns] = old.descriptors.std[a].to(desc.std.dtype)
    model.energy_shift[index] = old.energy_shift.to(model.energy_shift.dtype)
    model.energy_scale.copy_(old.energy_scale)
    old_nets = member_networks(old)
    for k, net in enumerate(member_networks(model)):
        refit = refit_member(old_nets[k % len(old_nets)], old, model, species_map, columns)
        for a, t in enumerate(species_map):
            net.nets[t] = refit.nets[a]
    old_seen = torch.zeros_like(model.min_pair_seen)
    old_seen[index[:, None], index[None, :]] = old.min_pair_seen
    old_r = torch.full_like(model.min_pair_distance, torch.inf)
    old_r[index[:, None], index[None, :]] = torch.where(old.min_pair_seen, old.min_pair_distance, torch.inf)
    seen = model.min_pair_seen | old_seen
    measured = torch.minimum(torch.where(model.min_pair_seen, model.min_pair_distance, torch.inf), old_r)
    model.set_min_pair_distance(torch.where(seen, measured, model.min_pair_distance), seen)
    notes = [f"initialised from {source.run} ({source.checkpoint.name}, EMA weights): networks, descriptor "
             f"normalisation, reference energies and energy scale of {', '.join(source.elements)}"
             + (f"; committee member k from old member k mod {len(old_nets)}" if model.committee > 1 else "")]
    if new_elements:
        notes.append(f"new element(s) {', '.join(new_elements)}: fresh networks, reference energies fitted "
                     "to this data; the old networks start with zero weight on their descriptor channels")
    return Started(notes, columns)


def union_feature_range(model: Potential, source: InitSource, columns: torch.Tensor, low: torch.Tensor,
                        high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The union of the new data's descriptor ranges (``low``/``high`` (n_species, F), in
    ``model``'s normalisation) and the old run's (the same normalisation on the old features,
    which are ``columns`` of the new)."""
    elements = list(model.elements)
    low, high = low.clone(), high.clone()
    for a, e in enumerate(source.elements):
        t = elements.index(e)
        low[t, columns] = torch.minimum(low[t, columns], source.model.feature_min[a].to(low.dtype))
        high[t, columns] = torch.maximum(high[t, columns], source.model.feature_max[a].to(high.dtype))
    return low, high
