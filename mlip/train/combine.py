"""``mlip committee RUN... -o model.pt``: one committee model from independently trained runs.

The runs must share what the members share: elements, the resolved descriptor config (lattice
sums included), physics terms, repulsion, charges (none) and dtype; the first difference found is
named in one line. Their networks (each run's members, a committee run giving all of its own) may
differ in width and activation. The first run provides the shared parts: descriptor normalisation,
reference energies and energy scale; every other member is rewritten into them exactly
(:func:`mlip.model.members.refit_member`), so each member gives the energies it gave in its own
run. The training-data ranges are the union of the runs': per element pair the shortest distance
any run saw (where the repulsive core and the descriptor clamp start; below a run's own shortest
distance its member is no longer evaluated as in that run, which had no data there), and per
feature the widest range.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mlip.errors import UserError
from mlip.export import export_model, lammps_overlay_terms, model_metadata
from mlip.model import Potential
from mlip.model.members import member_networks, refit_member, set_members
from mlip.train.export_run import load_run, run_data_hash

# model config keys every member must share, as they are built into the shared parts
SHARED_KEYS = ("elements", "descriptors", "physics", "repulsion", "charges", "dtype")


def first_difference(a: Any, b: Any, where: str) -> str | None:
    """``where.path: a vs b`` at the first place two YAML-like values differ, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            found = first_difference(a.get(key), b.get(key), f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list | tuple) and isinstance(b, list | tuple) and len(a) == len(b):
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            found = first_difference(x, y, f"{where}[{k}]")
            if found:
                return found
        return None
    return None if a == b else f"{where}: {a!r} vs {b!r}"


def _check_compatible(runs: Sequence[Path], configs: Sequence[dict[str, Any]]) -> None:
    """UserError naming the first shared setting in which a run differs from the first run."""
    seen: set[Path] = set()
    for run in runs:
        if run.resolve() in seen:
            raise UserError(f"{run} is given twice: each run's members once")
        seen.add(run.resolve())
    learned = configs[0]["model"].get("long_range", "none")
    if learned not in (None, "none"):
        raise UserError(f"{runs[0]} has a learned long-range term (model.long_range {learned!r}): a "
                        "committee of separate runs keeps their networks only, so each run's term would be "
                        "dropped but the first's; train the committee in one run with --committee K")
    for run, config in zip(runs[1:], configs[1:], strict=True):
        for key in SHARED_KEYS:
            found = first_difference(configs[0]["model"][key], config["model"][key], f"model.{key}")
            if found:
                raise UserError(f"{run} cannot join {runs[0]} in a committee: {found} (members share "
                                f"descriptors, elements, physics terms, repulsion and dtype)")


@torch.no_grad()
def _union_ranges(target: Potential, models: Sequence[Potential]) -> None:
    """Set ``target``'s shortest pair distances and descriptor ranges to the union of ``models``'
    (its own normalisation; ``models`` share its elements and descriptors)."""
    seen = torch.stack([m.min_pair_seen for m in models]).any(dim=0)
    measured = torch.stack([torch.where(m.min_pair_seen, m.min_pair_distance, torch.inf) for m in models])
    r_min = torch.where(seen, measured.amin(dim=0), target.min_pair_distance)
    target.set_min_pair_distance(r_min, seen)
    mean_t, std_t = target.descriptors.mean, target.descriptors.std
    low, high = [], []
    for m in models:
        mean, std = m.descriptors.mean, m.descriptors.std
        low.append((m.feature_min * std + mean - mean_t) / std_t)
        high.append((m.feature_max * std + mean - mean_t) / std_t)
    target.set_feature_range(torch.stack(low).amin(dim=0), torch.stack(high).amax(dim=0))


def combine_runs(runs: Sequence[str | Path]) -> tuple[Potential, dict[str, Any]]:
    """(committee model, metadata) from the runs' exported weights (each run's ``train.export``
    checkpoint, as ``mlip export`` takes it). UserError for fewer than two members in all, a run
    given twice, or runs that differ in a shared setting."""
    paths = [Path(r) for r in runs]
    loaded = [load_run(p) for p in paths]
    models = [m for m, _, _ in loaded]
    configs = [c for _, c, _ in loaded]
    _check_compatible(paths, configs)
    counts = [m.committee for m in models]
    networks = [refit_member(net, m, models[0]) for m in models for net in member_networks(m)]
    if len(networks) < 2:
        raise UserError(f"a committee needs at least two members; {paths[0]} has one: give more runs")
    target = models[0]
    _union_ranges(target, models)
    set_members(target, networks)
    meta = model_metadata(target, configs[0]["model"]["descriptors"], None, lammps_overlay_terms(target))
    meta["committee_runs"] = [{"run": str(p.resolve()), "checkpoint": ckpt.name, "members": n,
                               "data_hash": run_data_hash(p)}
                              for p, (_, _, ckpt), n in zip(paths, loaded, counts, strict=True)]
    return target, meta


def write_committee(runs: Sequence[str | Path], output: str | Path) -> tuple[Path, dict[str, Any]]:
    """:func:`combine_runs`, exported to ``output`` (:func:`mlip.export.export_model`)."""
    model, meta = combine_runs(runs)
    return export_model(model, output, meta), meta
